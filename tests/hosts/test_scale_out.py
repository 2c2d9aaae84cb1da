"""Issue 16, end to end: the suites on two libvirt hosts, one xdist worker on each.

The second host is the simulated one of :mod:`hosts.second_host` (its own libvirtd in its own
namespaces, reached over ``qemu+tcp``, sharing no file with this machine).  An inner pytest
runs the repository's suites with a ``hosts`` list naming this machine and that host:

- one worker runs on each host, every selected test passes, the embedded image reaches the
  second host through the storage API once (a second run writes nothing there), and no guest
  of either run is left on either host;
- killing the second host's libvirtd while its worker's test runs fails that test with a
  message naming the lost host, and the worker carries on on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from hil.provision.domain_xml import read_owner
from hil.provision.owner import Owner

pytestmark = pytest.mark.hil_linux

REPO = Path(__file__).resolve().parents[2]
SELECTION = "smoke or agent"


def _config(tmp_path: Path, uri: str) -> Path:
    cfg = tmp_path / "hil.toml"
    cfg.write_text(f'hosts = ["qemu:///system", "{uri}"]\n')
    return cfg


def _pytest(tmp_path: Path, cfg: Path, name: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "suites"),
        "-p",
        "no:cacheprovider",
        f"--hil-config={cfg}",
        f"--junitxml={tmp_path / f'{name}.xml'}",
        f"--hil-artifacts={tmp_path / name}",
        f"--basetemp={tmp_path / f'{name}-bt'}",
        "-n",
        "2",
        "-q",
        *args,
    ]


def _results(junit: Path) -> dict[str, dict]:
    """Each test case: its outcome, its failure message, its properties (``hil_host``...)."""
    out: dict[str, dict] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        nodeid = f"{case.get('classname')}::{case.get('name')}"
        failed = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out[nodeid] = {
            "outcome": "failed" if failed is not None else "skipped" if skipped is not None else "passed",
            "message": (failed.get("message", "") + (failed.text or "")) if failed is not None else "",
            "props": props,
            "time": float(case.get("time", "0")),
        }
    return out


def _our_leftovers(conn) -> list[str]:
    """Domains of ours whose owner process is gone: what a finished run must not leave."""
    left = []
    for dom in conn.listAllDomains():
        try:
            name, owner = dom.name(), read_owner(dom.XMLDesc(0))
        except libvirt.libvirtError as exc:  # another worker's guest, destroyed since the listing
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                continue
            raise
        if owner is not None and not Owner.is_alive(owner):
            left.append(name)
    return left


def _image_volumes(conn) -> dict[str, str]:
    """The second host's uploaded files: volume name -> its modification time there."""
    pool = conn.storagePoolLookupByName("hil")
    pool.refresh(0)
    times = {}
    for vol in pool.listAllVolumes():
        if vol.name().startswith(("image-", "kernel-", "initrd-")) and not vol.name().endswith(".ok"):
            mtime = ET.fromstring(vol.XMLDesc(0)).findtext("target/timestamps/mtime")
            times[vol.name()] = mtime or ""
    return times


def _figures(artifacts: Path, remote: str) -> dict[str, str]:
    """From the workers' timelines: the upload to the remote host, the snapshot made there,
    and the median restore (the per-test reset) on each host."""
    figures: dict[str, str] = {}
    restores: dict[str, list[float]] = {"local": [], "remote": []}
    for path in artifacts.glob("timeline-gw*.json"):
        steps = json.loads(path.read_text())["steps"]
        uris = {s.get("args", {}).get("uri") for s in steps if s.get("name") == "host-image"}
        where = "remote" if remote in uris else "local"
        for s in steps:
            if s.get("name") == "restore":
                restores[where].append(float(s.get("duration", 0)))
            elif where == "remote" and s.get("name") == "host-image":
                figures["remote_upload_s"] = f"{float(s.get('duration', 0)):.2f}"
            elif where == "remote" and s.get("name") == "snapshot" and s.get("args", {}).get("cached") == "False":
                figures["remote_snapshot_s"] = f"{float(s.get('duration', 0)):.2f}"
    for where, times in restores.items():
        if times:
            figures[f"{where}_restore_median_s"] = f"{sorted(times)[len(times) // 2]:.3f}"
            figures[f"{where}_restores"] = str(len(times))
    return figures


def test_suites_run_one_worker_per_host_upload_once_and_leave_no_guest(
    second_libvirt_host, second_conn, main_conn, tmp_path, record_property
):
    cfg = _config(tmp_path, second_libvirt_host.uri)
    t0 = time.monotonic()
    first = subprocess.run(
        _pytest(tmp_path, cfg, "first", "-k", SELECTION),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    record_property("first_run_s", f"{time.monotonic() - t0:.1f}")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    results = _results(tmp_path / "first.xml")
    hosts = {r["props"].get("hil_host") for r in results.values() if r["props"].get("hil_host")}
    assert hosts == {"qemu:///system", second_libvirt_host.uri}, hosts
    on_second = [n for n, r in results.items() if r["props"].get("hil_host") == second_libvirt_host.uri]
    record_property("tests_on_second_host", str(len(on_second)))
    assert any("test_agent" in n for n in on_second) or any("smoke" in n for n in on_second)
    for key, value in _figures(tmp_path / "first", second_libvirt_host.uri).items():
        record_property(key, value)
    uploaded = _image_volumes(second_conn)
    assert len([n for n in uploaded if n.startswith("image-")]) == 1, uploaded
    assert _our_leftovers(main_conn) == [] and second_conn.listAllDomains() == []

    second = subprocess.run(
        _pytest(tmp_path, cfg, "second", "-k", "smoke"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    assert _image_volumes(second_conn) == uploaded, "the second run wrote the image to the second host again"
    for key, value in _figures(tmp_path / "second", second_libvirt_host.uri).items():
        record_property(f"second_run_{key}", value)
    assert _our_leftovers(main_conn) == [] and second_conn.listAllDomains() == []


KILL_TEST = """
import os, pathlib, time
def test_{n}(linux_guest):
    flag = pathlib.Path(os.environ["HIL_SCALE_FLAGS"]) / "{n}"
    flag.write_text(linux_guest.host_uri)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        linux_guest.run("true")
        time.sleep(1)
"""


def _libvirtd_pid(host) -> int:
    for pid in host.pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd":
                return pid
        except OSError:
            continue
    raise AssertionError("no libvirtd in the second host's namespace")


@pytest.fixture
def doomed_host(second_libvirt_host):
    """A second host of this test alone (its libvirtd gets killed), beside the session's."""
    from hosts.second_host import second_host

    with second_host() as host:
        yield host


def test_a_lost_host_fails_only_its_test_and_its_worker_goes_on_here(doomed_host, main_conn, tmp_path, record_property):
    """Four tests that each keep their guest busy for 45 s, over two workers: when the second
    host's libvirtd is killed during its worker's test, that test fails naming the lost host;
    the worker's next test runs on this machine and passes; so do the other worker's."""
    second_libvirt_host = doomed_host
    tests = tmp_path / "tests"
    tests.mkdir()
    flags = tmp_path / "flags"
    flags.mkdir()
    for n in range(4):
        (tests / f"test_busy_{n}.py").write_text(KILL_TEST.format(n=f"busy_{n}"))
    cfg = _config(tmp_path, second_libvirt_host.uri)
    cmd = _pytest(tmp_path, cfg, "kill")
    cmd[3] = str(tests)
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**os.environ, "HIL_SCALE_FLAGS": str(flags)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 900
        victim = None
        while victim is None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no test ever ran on the second host"
            for flag in flags.iterdir():
                if flag.read_text() == second_libvirt_host.uri:
                    victim = flag.name
            time.sleep(0.5)
        time.sleep(3)
        os.kill(_libvirtd_pid(second_libvirt_host), signal.SIGKILL)
        killed_at = time.monotonic()
        out, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = _results(tmp_path / "kill.xml")
    failed = {n: r for n, r in results.items() if r["outcome"] != "passed"}
    assert [n.rsplit("::", 1)[1] for n in failed] == [f"test_{victim}"], out[-6000:]
    (message,) = [r["message"] for r in failed.values()]
    assert second_libvirt_host.uri in message and "libvirt host" in message, message
    passed_after = [
        n for n, r in results.items() if r["outcome"] == "passed" and r["props"].get("hil_host") == "qemu:///system"
    ]
    assert len(passed_after) == 3, results
    record_property("kill_to_end_s", f"{time.monotonic() - killed_at:.1f}")
    assert _our_leftovers(main_conn) == []
    assert json.dumps(results)  # keep the parsed results in the failure output when it fails


def test_the_agent_suite_passes_with_its_guests_on_the_second_host(second_libvirt_host, second_conn, tmp_path):
    """The agent suite, every guest on the second host (the only host configured): records
    cross from the remote guest to this machine's collector, restarts and drops included."""
    cfg = tmp_path / "hil.toml"
    cfg.write_text(f'hosts = ["{second_libvirt_host.uri}"]\n')
    cmd = _pytest(tmp_path, cfg, "agent")
    cmd[3] = str(REPO / "suites" / "linux" / "test_agent.py")
    cmd.remove("-n")
    cmd.remove("2")
    run = subprocess.run(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    results = _results(tmp_path / "agent.xml")
    assert len(results) >= 4
    assert {r["props"].get("hil_host") for r in results.values()} == {second_libvirt_host.uri}
    assert all(r["outcome"] == "passed" for r in results.values()), results
    owners = [read_owner(d.XMLDesc(0)) or {} for d in second_conn.listAllDomains()]
    assert [o for o in owners if not Owner.is_alive(o)] == []
