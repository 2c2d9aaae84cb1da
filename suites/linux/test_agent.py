"""hil_agent (drivers/linux/agent): every exec and process exit in the guest reaches the host
collector once, with the right PID, image path, size and SHA-256, across collector restarts,
and a full buffer is reported, never silent. Wire protocol: drivers/protocol/PROTOCOL.md."""

from __future__ import annotations

import hashlib

import pytest

from hil.collector.collector import Collector
from hil.deploy import kmod as kmods
from hil.deploy import reference
from hil.deploy.reference import parse_pid_lines as guest_pids
from hil.waiting import wait_until

pytestmark = pytest.mark.hil_linux


def _image_facts(guest, path: str) -> tuple[int, str]:
    data = guest.read_file(path)
    return len(data), hashlib.sha256(data).hexdigest()


def _spawn(guest, paths: list[str]) -> list[tuple[str, int]]:
    """Run each path once in the guest, one after the other; returns (path, pid) in order.
    ``$p &`` makes the shell fork a child that execs $p directly, so $! is the exec'ing PID."""
    loop = "for p in " + " ".join(paths) + "; do $p >/dev/null 2>&1 & echo $p $!; wait; done"
    return guest_pids(guest.run(loop, timeout=120).check().stdout.decode())


@pytest.mark.smoke
def test_spawned_processes_appear_once_with_pid_path_size_and_sha256(linux_guest, start_agent, collector, kmod):
    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    linux_guest.run(
        "cp /bin/true /tmp/hil-a && cp /bin/ls /tmp/hil-b && "
        "printf '#!/bin/sh\\nexit 0\\n' > /tmp/hil-script && chmod +x /tmp/hil-script"
    ).check()
    spawned = _spawn(linux_guest, ["/tmp/hil-a", "/tmp/hil-b", "/tmp/hil-a", "/tmp/hil-script"])
    assert len(spawned) == 4
    facts = {p: _image_facts(linux_guest, p) for p in ("/tmp/hil-a", "/tmp/hil-b")}
    # a script's image is its interpreter (what the kernel maps), resolved through symlinks
    interp = linux_guest.run("readlink -f /bin/sh").check().stdout.decode().strip()
    facts["/tmp/hil-script"] = _image_facts(linux_guest, interp)

    for _path, pid in spawned:
        collector.wait_for(kind="exited", pid=pid, timeout=60)
    collector.flush()
    for path, pid in spawned:
        created = collector.records(kind="created", pid=pid)
        assert len(created) == 1, f"{path} pid {pid}: {created}"
        rec = created[0]
        size, sha = facts[path]
        assert rec.image_path == (interp if path == "/tmp/hil-script" else path)
        assert rec.image_size == size
        assert rec.sha256.hex() == sha
        assert rec.agent == agent
        exited = collector.records(kind="exited", pid=pid)
        assert len(exited) == 1, f"{path} pid {pid}: {exited}"
    # the two runs of /tmp/hil-a are two records, in start order
    a_pids = [pid for path, pid in spawned if path == "/tmp/hil-a"]
    assert [r.pid for r in collector.records(kind="created", image_path="/tmp/hil-a")] == a_pids
    st = collector.stats(agent)
    assert st.protocol_errors == 0 and st.dropped_by_agent == 0
    assert kmod.stats("hil_agent")["dropped"] == 0


def test_agent_reconnects_after_collector_restart_and_loses_nothing(linux_guest, start_agent, kmod, tmp_path):
    linux_guest.run("cp /bin/true /tmp/hil-before && cp /bin/true /tmp/hil-during").check()
    first = Collector(linux_guest.listen_address, interval=0.5, capture_dir=tmp_path / "first").start()
    port = first.port
    second = None
    try:
        start_agent(port, backoff_max_ms=500)
        agent = first.wait_for_agent(kind="linux-kmod", timeout=60)
        ((_, before_pid),) = _spawn(linux_guest, ["/tmp/hil-before"])
        first.wait_for(kind="created", pid=before_pid, image_path="/tmp/hil-before", timeout=60)
        first.stop()
        wait_until(
            lambda: kmod.stats("hil_agent")["connected"] == 0,
            timeout=60,
            what="the agent to notice the collector is gone",
        )

        during = _spawn(linux_guest, ["/tmp/hil-during"] * 5)
        st = kmod.stats("hil_agent")
        assert st["connected"] == 0 and st["buffered_bytes"] > 0

        second = Collector(linux_guest.listen_address, port=port, interval=0.5, capture_dir=tmp_path / "second").start()
        assert second.wait_for_agent(kind="linux-kmod", timeout=60) == agent
        second.flush()
        got = [r.pid for r in second.records(kind="created", image_path="/tmp/hil-during")]
        assert got == [pid for _, pid in during], "every record buffered while away, once, in order"
        assert second.records(kind="created", image_path="/tmp/hil-before") == [], "nothing resent"
        assert second.stats(agent).dropped_by_agent == 0
        assert kmod.stats("hil_agent")["connects"] >= 2
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_full_buffer_drops_are_counted_and_reported(linux_guest, start_agent, kmod, tmp_path):
    # a port with no collector yet: the agent buffers, then its 16 KiB buffer overflows
    probe = Collector(linux_guest.listen_address, interval=0.5).start()
    port = probe.port
    probe.stop()
    start_agent(port, buffer_kb=16, backoff_max_ms=500)
    linux_guest.run(
        "cp /bin/true /tmp/hil-x && i=0; while [ $i -lt 600 ]; do /tmp/hil-x; i=$((i+1)); done", timeout=300
    ).check()
    dropped_before = kmod.stats("hil_agent")["dropped"]
    assert dropped_before > 0

    with Collector(linux_guest.listen_address, port=port, interval=0.5, capture_dir=tmp_path / "c") as collector:
        agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
        collector.flush()
        reported = collector.stats(agent).dropped_by_agent
        agent_dropped = kmod.stats("hil_agent")["dropped"]
        assert reported >= dropped_before
        assert reported == agent_dropped, "every drop the agent counted reached the collector"
        received = len(collector.records(kind="created", image_path="/tmp/hil-x"))
        assert 0 < received < 600


def test_unload_during_an_exec_storm_with_a_connected_collector(linux_guest, start_agent, collector, kmod):
    reference.install_storm_tools(linux_guest, "/tmp/hil-t")
    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    storm_pid = int(
        linux_guest.run("/tmp/hil_storm 1000000 /tmp/hil-t >/dev/null 2>&1 & echo $!").check().stdout.decode()
    )
    try:
        collector.wait_for(kind="created", image_path="/tmp/hil-t", timeout=60)
        kmod.unload("hil_agent", timeout=120)  # raises on failure or a kernel complaint
    finally:
        linux_guest.run(f"kill {storm_pid}")
    assert not kmods.is_loaded(linux_guest, "hil_agent")
    assert kmod.console_problems() == []
    assert collector.stats(agent).protocol_errors == 0
