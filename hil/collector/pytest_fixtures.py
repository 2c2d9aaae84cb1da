"""The ``collector`` pytest fixture. hil.pytest_plugin imports it; any conftest may too:

    from hil.collector.pytest_fixtures import collector  # noqa: F401

One collector per test on 127.0.0.1 and a free port (so each xdist worker has its own); its
per-connection capture files go to the test's temporary folder and are attached to the test's
JUnit properties as ``collector_capture``. A test passes :class:`Collector` options (a token it
requires, caps) through an indirect parameter:

    @pytest.mark.parametrize("collector", [{"token": "s3cret"}], indirect=True)
    def test_agent_with_token(collector, start_agent): ...
"""

from __future__ import annotations

import os

import pytest

from hil.collector.collector import Collector


@pytest.fixture
def collector(request, tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    capture_dir = tmp_path_factory.mktemp(f"collector-{worker}")
    options = {
        "host": _listen_address(request),
        "capture_dir": capture_dir,
        "interval": float(os.environ.get("HIL_COLLECTOR_INTERVAL", "0.5")),
        **getattr(request, "param", {}),
    }
    with Collector(**options) as c:
        request.node.user_properties.append(("collector_address", f"{c.host}:{c.port}"))
        try:
            yield c
        finally:
            for path in c.capture_files():
                request.node.user_properties.append(("collector_capture", str(path)))
            if c.protocol_errors:
                request.node.user_properties.append(("collector_protocol_errors", str(c.protocol_errors)))


def _listen_address(request) -> str:
    """Where the collector listens: 127.0.0.1, unless the test's Linux guest runs on a remote
    libvirt host; then on this machine's address as that host reaches it (hil.hosts.host)."""
    if "linux_guest" not in request.fixturenames:
        return "127.0.0.1"
    return str(request.getfixturevalue("hil_lab").listen_address)
