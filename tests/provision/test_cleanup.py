"""No leaks: what a dead session left is swept, a live session's guests are never touched,
and an interrupted pytest run removes its guests itself.  Real libvirt, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from hil.config import load_config  # noqa: E402
from hil.paths import runtime_dir  # noqa: E402
from hil.provision.daemons import open_connection  # noqa: E402
from hil.provision.sweep import sweep  # noqa: E402

# a guest with no disk and no kernel: QEMU starts and idles in firmware; enough to own
OWNER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from hil.config import load_config
    from hil.paths import ensure_dir, runtime_dir
    from hil.provision.daemons import open_connection
    from hil.provision.domain_xml import domain_xml
    from hil.provision.owner import Owner
    from hil.provision.spec import GuestSpec
    owner = Owner.current(worker="gwT")
    d = ensure_dir(runtime_dir() / f"{owner.session}-{owner.worker}")
    (d / "owner.json").write_text(json.dumps(owner.as_dict()))
    conn = open_connection(load_config().libvirt_uri)
    spec = GuestSpec(name=owner.prefix() + "1", disk=d / "none.qcow2", console_log=d / "c.log",
                     memory_mib=64, vcpus=1, owner=owner.as_dict())
    import subprocess
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(spec.disk), "16M"], check=True)
    conn.createXML(domain_xml(spec), 0)
    print(json.dumps({"name": spec.name, "dir": str(d)}), flush=True)
    time.sleep(600)
""")


@pytest.fixture(scope="module")
def conn():
    c = open_connection(load_config().libvirt_uri)
    yield c
    c.close()


# a Windows-kind guest made the way the windows_guest fixture makes it (Lab.windows_guest),
# from an empty "image": the domain idles in firmware, WinRM is never waited for
WINDOWS_OWNER_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from hil.config import load_config
    from hil.lab import Lab
    from hil.provision.owner import Owner
    lab = Lab(load_config(), owner=Owner.current(worker="gwW")).start()
    g = lab.windows_guest(Path(sys.argv[1]), user="hil", password="x", memory_mib=128, vcpus=1, wait=False)
    print(json.dumps({"name": g.name, "dir": str(lab.dir), "kind": g.kind.value}), flush=True)
    time.sleep(600)
""")


def start_owner(script: str = OWNER_SCRIPT, *args: str):
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"the owner process could not start its guest:\n{proc.stderr.read()}")
    return proc, json.loads(line)


def domain_names(conn):
    return {d.name() for d in conn.listAllDomains()}


def sessions_domains(conn, session: str) -> list[str]:
    """Domains whose owner record names ``session`` (restored copies are named after the
    snapshot variant they restored from, not after their session)."""
    from hil.provision.domain_xml import read_owner

    out = []
    for d in conn.listAllDomains():
        try:
            owner = read_owner(d.XMLDesc(0)) or {}
        except libvirt.libvirtError:
            continue  # gone meanwhile
        if owner.get("session") == session:
            out.append(d.name())
    return out


def test_sweep_removes_a_sigkilled_owners_guest_and_spares_a_live_one(conn):
    dead, dead_info = start_owner()
    live, live_info = start_owner()
    try:
        assert {dead_info["name"], live_info["name"]} <= domain_names(conn)
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        sweep(conn, runtime_dir())  # another session's start-up sweep may have been quicker
        assert dead_info["name"] not in domain_names(conn)
        assert not Path(dead_info["dir"]).exists()
        # the live session's guest and folder are untouched
        assert live_info["name"] in domain_names(conn)
        assert Path(live_info["dir"]).exists()
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
        sweep(conn, runtime_dir())
    assert live_info["name"] not in domain_names(conn)


@pytest.fixture
def empty_windows_image():
    """A blank qcow2 where QEMU can read it (the runtime folder), standing in for a Windows
    image: the sweep judges a domain by its owner record, not by what it boots."""
    d = runtime_dir() / f"test-images-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    image = d / "blank-windows.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    yield image
    image.unlink(missing_ok=True)
    d.rmdir()


def test_sweep_removes_a_sigkilled_sessions_windows_guest_and_spares_a_live_one(conn, empty_windows_image):
    dead, dead_info = start_owner(WINDOWS_OWNER_SCRIPT, str(empty_windows_image))
    live, live_info = start_owner(WINDOWS_OWNER_SCRIPT, str(empty_windows_image))
    try:
        assert dead_info["kind"] == live_info["kind"] == "windows"
        assert {dead_info["name"], live_info["name"]} <= domain_names(conn)
        xml = conn.lookupByName(dead_info["name"]).XMLDesc(0)
        assert "<panic model='hyperv'" in xml or '<panic model="hyperv"' in xml  # really the Windows parts
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        sweep(conn, runtime_dir())
        assert dead_info["name"] not in domain_names(conn)
        assert not Path(dead_info["dir"]).exists()  # its overlay went with its folder
        assert live_info["name"] in domain_names(conn)
        assert Path(live_info["dir"]).exists()
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
        sweep(conn, runtime_dir())
    assert live_info["name"] not in domain_names(conn)


INTERRUPTED_TEST = textwrap.dedent("""
    import os, pathlib
    def test_waits_to_be_interrupted(linux_guest):
        pathlib.Path(os.environ["HIL_TEST_READY"]).write_text(linux_guest.name + " " + linux_guest.instance)
        linux_guest.run("sleep 600", timeout=700)
""")


@pytest.mark.hil_linux
def test_sigint_during_a_guest_test_leaves_no_guest_and_no_files(conn, tmp_path):
    (tmp_path / "test_interrupted.py").write_text(INTERRUPTED_TEST)
    ready = tmp_path / "ready"
    env = {**os.environ, "HIL_TEST_READY": str(ready)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_interrupted.py")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the guest never became ready"
        time.sleep(0.2)
    name, instance = ready.read_text().split()
    assert name in domain_names(conn)
    session_worker = instance.removeprefix("hil-").rsplit("-", 1)[0]
    assert sessions_domains(conn, session_worker.split("-")[0])  # its guest and its ready copy
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # Seen once, in a CI reproduction beside a fresh-machine run and a helper's guests:
        # the first Ctrl-C had no effect and the test body ran its 600 s to the end (cause not
        # found). A person presses Ctrl-C again; what this test checks is the cleanup after it.
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"two SIGINTs did not stop the inner pytest:\n{proc.communicate()[0][-5000:]}")
        warnings.warn(f"the first SIGINT did not stop the inner pytest; the second did:\n{out[-3000:]}", stacklevel=1)
    assert "KeyboardInterrupt" in out or "Interrupted" in out, out
    assert sessions_domains(conn, session_worker.split("-")[0]) == [], out
    assert not (runtime_dir() / session_worker).exists(), out


KILLED_WORKER_TEST = textwrap.dedent("""
    import os, pathlib, signal
    def test_worker_dies_holding_a_guest(linux_guest):
        pathlib.Path(os.environ["HIL_TEST_READY"]).write_text(linux_guest.name + " " + linux_guest.instance)
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or a kill -9 would
""")


@pytest.mark.hil_linux
def test_a_killed_xdist_worker_leaves_no_guest_when_the_session_ends(conn, tmp_path):
    """libvirtd keeps a dead worker's guest running; the controller sweeps it as soon as xdist
    reports the worker down, so nothing of the session is left when it ends (not only at the
    next session's start)."""
    (tmp_path / "test_killed.py").write_text(KILLED_WORKER_TEST)
    ready = tmp_path / "ready"
    env = {**os.environ, "HIL_TEST_READY": str(ready)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "1",
            "--max-worker-restart=0",
            f"--basetemp={tmp_path / 'bt'}",
            str(tmp_path / "test_killed.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert ready.exists(), out
    name, instance = ready.read_text().split()
    assert "crashed" in out and proc.returncode != 0, out
    # the controller swept (another session's start-up sweep on this machine may have been quicker)
    assert "kernel-hil: worker gw0 died; removed its guests" in out, out
    session_worker = instance.removeprefix("hil-").rsplit("-", 1)[0]
    assert sessions_domains(conn, session_worker.split("-")[0]) == [], out
    assert not (runtime_dir() / session_worker).exists(), out
