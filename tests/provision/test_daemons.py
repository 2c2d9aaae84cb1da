"""Is a libvirt daemon there? The socket file alone does not say (a killed daemon leaves it)."""

import os
import socket

from hil.provision.daemons import ensure_daemons, socket_answers


def test_a_listening_socket_answers(tmp_path):
    path = tmp_path / "live-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(1)
        assert socket_answers(path)


def test_the_socket_file_of_a_dead_daemon_does_not_answer(tmp_path):
    path = tmp_path / "stale-sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.close()  # the daemon is gone, its socket file stays
    assert path.exists()
    assert not socket_answers(path)


def test_no_socket_file_does_not_answer(tmp_path):
    assert not socket_answers(tmp_path / "never-created")


def test_a_live_daemon_is_left_alone(tmp_path):
    """Nothing is started or unlinked when every daemon answers."""
    path = tmp_path / "live-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(1)
        ensure_daemons("qemu:///system", sockets={"libvirtd": path}, timeout=0.1)
        assert path.exists() and socket_answers(path)


def test_other_uris_are_the_users_to_run(tmp_path):
    stale = tmp_path / "stale-sock"
    ensure_daemons("qemu+ssh://lab/system", sockets={"libvirtd": stale}, timeout=0.1)
    assert not stale.exists()


def _ppid(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def test_the_subreaper_adopts_a_daemons_orphan_and_reaps_it_at_once(tmp_path):
    """What libvirtd does to QEMU (a double fork) done by sh: the orphan becomes the
    subreaper's child instead of PID 1's, is reaped as soon as it ends, and the subreaper
    exits when no child is left."""
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "daemon.pid"
    reaper = subprocess.Popen(
        [sys.executable, "-m", "hil.provision.subreaper", "sh", "-c", f"(sleep 1.5 & echo $! > {pidfile})"]
    )
    try:
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.01)
        orphan = int(pidfile.read_text())
        while _ppid(orphan) != reaper.pid and time.monotonic() < deadline:
            time.sleep(0.01)  # sh has not exited yet
        assert _ppid(orphan) == reaper.pid
        assert reaper.wait(timeout=10) == 0  # reaped the orphan, then had no child left
        assert not os.path.exists(f"/proc/{orphan}")  # no zombie left behind
    finally:
        reaper.kill()


def test_the_subreaper_splits_its_commands():
    from hil.provision.subreaper import split_commands

    assert split_commands(["virtlogd", "-d", "--", "libvirtd", "-d"]) == [["virtlogd", "-d"], ["libvirtd", "-d"]]
    assert split_commands(["--", "a"]) == [["a"]]
