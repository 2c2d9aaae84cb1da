"""The public Wine fixtures as a team's test sees them (pytester runs the team's test file)."""

from __future__ import annotations

import hashlib
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil.deploy import windows_build
from hil.wine.pytest_fixtures import wine_missing

pytestmark = [
    pytest.mark.windows,
    pytest.mark.wine,
    pytest.mark.skipif(wine_missing() is not None, reason=str(wine_missing())),
    pytest.mark.skipif(shutil.which(windows_build.CC) is None, reason="mingw-w64 is not installed"),
]


def test_wine_driver_names_what_it_deployed_and_unloads_what_the_test_left(pytester, win_build):
    pytester.makepyfile(
        test_team=r"""
        import socket

        def test_leaves_its_driver_running(win_build, wine_driver):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            drv = wine_driver(win_build["hilsocks.sys"], "hilsocks", Port=port)
            drv.guest.wait_for_log(rf"\[hilsocks\] listening on 127\.0\.0\.1:{port}", timeout=20,
                                   start=drv.log_start)
        """
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--junitxml={junit}")
    result.assert_outcomes(passed=1)
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert props["hil_deployed_hilsocks"] == str(win_build["hilsocks.sys"].resolve())
    assert props["hil_deployed_hilsocks_sha256"] == hashlib.sha256(win_build["hilsocks.sys"].read_bytes()).hexdigest()
    assert props["hil_deployed_hilsocks_origin"] == "file"
    # teardown stopped the service: DriverUnload ran and ksock released everything
    log = Path(props["wine_debug_log"]).read_text(errors="replace")
    assert "[hilsocks] unloaded" in log
    assert "[ksock] cleanup: irps=0 mdls=0 buffers=0 sockets=0" in log
