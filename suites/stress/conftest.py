"""Stress suites: the storm sizes of the run's profile and the figures they report.

Sizes come from the qualification profile (``--hil-profile``, see :mod:`hil.qualify.profiles`:
``execs``, ``connections``, ``concurrency``, ``soak_s``); the environment variables
``HIL_STORM_EXECS``, ``HIL_STORM_CONNECTIONS``, ``HIL_STORM_CONCURRENCY`` and ``HIL_SOAK_S``
override them for one run.  Module fixtures: suites/conftest.py.
"""

from __future__ import annotations

import pytest

from hil.errors import HilError


def _size(profile, key: str) -> int:
    try:
        return profile.size(key)
    except HilError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture
def storm_execs(hil_profile) -> int:
    return _size(hil_profile, "execs")


@pytest.fixture
def storm_connections(hil_profile) -> int:
    return _size(hil_profile, "connections")


@pytest.fixture
def storm_concurrency(hil_profile) -> int:
    return _size(hil_profile, "concurrency")


@pytest.fixture
def soak_seconds(hil_profile) -> int:
    return _size(hil_profile, "soak_s")


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
        lines = [f"{title}:"] + [
            f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}" for k, v in values.items()
        ]
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
