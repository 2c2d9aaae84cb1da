"""Stress suites: the storm sizes and the figures they report (module fixtures: suites/conftest.py).

Sizes come from environment variables (suites in subdirectories cannot add pytest options):

- ``HIL_STORM_EXECS``       execs in the process storm (default 10000)
- ``HIL_STORM_CONNECTIONS`` connections in the kserver connection storm (default 2000)
- ``HIL_STORM_CONCURRENCY`` client threads in the connection storm (default 16)
"""

from __future__ import annotations

import os

import pytest


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise pytest.UsageError(f"{name}={value!r} is not an integer") from None


@pytest.fixture
def storm_execs() -> int:
    return _env_int("HIL_STORM_EXECS", 10000)


@pytest.fixture
def storm_connections() -> int:
    return _env_int("HIL_STORM_CONNECTIONS", 2000)


@pytest.fixture
def storm_concurrency() -> int:
    return _env_int("HIL_STORM_CONCURRENCY", 16)


@pytest.fixture
def figures(request, record_property, hil_artifacts):
    """``figures(title, latencies_ms=None, **values)``: print ``key: value`` lines to the
    terminal and put them in the JUnit properties; each ``latencies_ms`` series (name -> samples
    in ms) is drawn as a histogram in the test's artifacts and on the run's ``latency.html``."""
    from hil.report import histogram

    def emit(title: str, latencies_ms: dict[str, list[float]] | None = None, **values) -> None:
        for name, samples in (latencies_ms or {}).items():
            path = histogram.write(hil_artifacts, name, samples, f"{title}: {name.replace('_', ' ')}")
            values[f"{name}_histogram"] = str(path)
        lines = [f"{title}:"] + [f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}"
                                 for k, v in values.items()]
        capman = request.config.pluginmanager.get_plugin("capturemanager")
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        if capman is not None and tr is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line("")
                for line in lines:
                    tr.write_line(line)
        else:
            print("\n".join(lines))
        for k, v in values.items():
            record_property(k, v)

    return emit
