from hil.collector.pytest_fixtures import collector  # noqa: F401
