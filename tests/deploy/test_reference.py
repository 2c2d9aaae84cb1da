"""hil.deploy.reference: this repository's own drivers and tools build, on the host, against
the guest image's headers (else the host's), and the storm tool runs."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from hil.deploy import reference
from hil.errors import HilError


@pytest.fixture
def kbuild() -> Path:
    """The embedded guest's own headers (what the suites build against), else the host's."""
    from hil.images.linux_image import cached_image

    img = cached_image()
    if img is not None and img.kbuild_dir and img.kbuild_dir.is_dir():
        return img.kbuild_dir
    for d in sorted(glob.glob("/usr/src/linux-headers-*")):
        if Path(d, "Module.symvers").is_file():
            return Path(d)
    pytest.skip(
        "no kernel headers: build the guest image (hil image build linux) or apt-get install linux-headers-amd64"
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_kserver_builds_with_every_parameter(kbuild, cache):
    ko = reference.build_kserver(kbuild)
    assert cache in ko.parents
    # the .modinfo section lists every parameter as "parm=<name>:<description>"
    modinfo = ko.read_bytes()
    for p in ("port", "allow", "reply", "root", "max_clients", "idle_timeout", "stats"):
        assert b"parm=" + p.encode() + b":" in modinfo


def test_parse_pid_lines():
    got = reference.parse_pid_lines("0 101\n1 102\n/tmp/a b 103\njunk\n")
    assert got == [("0", 101), ("1", 102), ("/tmp/a b", 103)]


def test_storm_tool_builds_and_runs_on_the_host():
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    try:
        tool = reference.build_storm_tool()
    except HilError as exc:
        pytest.skip(f"static build not possible here: {exc}")
    assert subprocess.run([str(tool)]).returncode == 0  # no arguments: exits 0 at once
    noop = reference.build_noop_tool()
    assert noop.stat().st_size < 64 * 1024 and subprocess.run([str(noop)]).returncode == 0
    res = subprocess.run([str(tool), "3", str(noop)], capture_output=True, text=True)
    assert res.returncode == 0 and [i for i, _ in reference.parse_pid_lines(res.stdout)] == ["0", "1", "2"]
    assert "execs=3 failed=0" in res.stderr
