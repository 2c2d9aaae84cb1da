"""The collector against a hostile, unprivileged process of a real guest, while the real agent
(hil_agent.ko) of that guest reports to it.

Any process of a guest reaches the collector at 10.0.2.2 (QEMU user networking), so the
collector must bound what a peer can make it hold (drivers/protocol/PROTOCOL.md section 5)
and, given a token, refuse peers that are not agents. ``hostile_agent.py`` runs in the guest as
user ``nobody`` and tries each attack; the collector runs in this process, so its memory is
this process's (peak RSS, reset before the attacks), and it must stay under
:data:`RSS_BOUND` while the honest agent loses no record.
"""

from __future__ import annotations

import json
import secrets
import shlex
from pathlib import Path

import pytest

from hil.collector import RecordsEvicted
from hil.deploy.reference import parse_pid_lines

pytestmark = pytest.mark.hil_linux

HOSTILE = Path(__file__).with_name("hostile_agent.py")
STORE_CAP = 32 << 20  # max_bytes: what the collector may keep of all agents' records
MAX_AGENTS = 256  # identities kept (4096 by default): 1000 new ones overflow it
OVERHEAD = 32 << 20  # connections (64 at most), identities, the errors kept, the read buffer
RSS_BOUND = STORE_CAP + OVERHEAD
TOKEN = "kh-" + secrets.token_hex(16)
HONEST_RUNS = 300


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS


def _install_hostile(guest) -> None:
    guest.put(HOSTILE, "/tmp/hostile_agent.py")
    guest.run("chmod 0644 /tmp/hostile_agent.py").check()


def _hostile(guest, port: int, *args: str, timeout: float = 300) -> dict:
    """Run one attack as user nobody; its JSON report."""
    argv = " ".join(shlex.quote(a) for a in args)
    res = guest.run(
        f"runuser -u nobody -- python3 /tmp/hostile_agent.py {guest.controller_address} {port} {argv}", timeout=timeout
    ).check()
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize(
    "collector", [{"max_bytes": STORE_CAP, "max_agents": MAX_AGENTS, "capture_budget": 64 << 20}], indirect=True
)
def test_a_hostile_guest_process_is_bounded_and_the_agent_loses_nothing(
    linux_guest, start_agent, collector, kmod, request
):
    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    _install_hostile(linux_guest)
    linux_guest.run("cp /bin/true /tmp/hil-honest && rm -f /tmp/honest.pids /tmp/honest.done").check()
    base_kib = _status_kib("VmRSS")
    _reset_peak_rss()

    # the honest workload runs all along: one exec every few ms, each PID written down
    linux_guest.spawn(
        f"for i in $(seq {HONEST_RUNS}); do /tmp/hil-honest & "
        "echo /tmp/hil-honest $! >> /tmp/honest.pids; wait; sleep 0.02; done; "
        "touch /tmp/honest.done"
    )
    retain = _hostile(linux_guest, collector.port, "retain", "128")
    flood = _hostile(linux_guest, collector.port, "flood", "1000000")
    idents = _hostile(linux_guest, collector.port, "identities", "1000")
    held = _hostile(linux_guest, collector.port, "connections", "100", "3")
    linux_guest.wait_until(
        lambda: linux_guest.run("test -e /tmp/honest.done").exit_code == 0,
        timeout=300,
        what="the honest workload to finish",
        interval=1.0,
    )
    collector.flush(timeout=60)
    peak = (_status_kib("VmHWM") - base_kib) << 10

    for name, value in (
        ("rss_bound_mib", RSS_BOUND >> 20),
        ("rss_peak_growth_mib", peak >> 20),
        ("hostile_bytes_sent", retain["bytes"] + flood["bytes"]),
        ("hostile_flood_evicted", collector.stats("hostile-flood").evicted),
    ):
        request.node.user_properties.append((name, str(value)))  # in the JUnit XML
    said = (
        f"rss: base {base_kib >> 10} MiB, peak growth {peak >> 20} MiB (bound "
        f"{RSS_BOUND >> 20} MiB); hostile: {json.dumps([retain, flood, idents, held])}; "
        f"collector errors: {collector.error_counts()}"
    )

    # the honest agent lost nothing: every exec, once, in order, nothing evicted or dropped
    spawned = parse_pid_lines(linux_guest.read_file("/tmp/honest.pids").decode())
    assert len(spawned) == HONEST_RUNS
    got = [r.pid for r in collector.records(agent=agent, kind="created", image_path="/tmp/hil-honest")]
    assert got == [pid for _, pid in spawned], said
    st = collector.stats(agent)
    assert st.evicted == 0 and st.dropped_by_agent == 0 and st.protocol_errors == 0, said
    assert kmod.stats("hil_agent")["dropped"] == 0
    collector.assert_none(agent=agent, image_path="/never/ran")  # trustworthy: nothing evicted

    # each attack was taken, and bounded
    assert retain["accepted"] and retain["groups"] == 128, said
    assert flood["accepted"] and flood["records"] > 990_000, said
    assert collector.stats("hostile-flood").evicted > 0, f"the flood fits the store cap? {said}"
    with pytest.raises(RecordsEvicted, match="hostile-flood"):
        collector.assert_none(image_path="/never/ran")  # over all agents: it cannot tell
    assert idents["accepted"] + idents["refused"] == 1000, said
    assert len(collector.agents()) <= MAX_AGENTS, said
    assert held["opened"] == 100, said
    assert held["still_open"] <= collector.max_connections_per_peer - 1, said  # the agent has one
    # over the cap: refused at once; within it but silent: closed after the HELLO deadline (a
    # busy host makes the attack outlast that deadline)
    bounded = collector.error_counts().get("ResourceLimit", 0) + collector.error_counts().get("StalledPeer", 0)
    assert bounded >= held["closed_by_collector"] > 0, said
    assert peak < RSS_BOUND, said


@pytest.mark.parametrize("collector", [{"token": TOKEN}], indirect=True)
def test_with_a_token_no_guest_process_can_pose_as_the_agent(linux_guest, start_agent, collector, kmod):
    start_agent(collector.port, token=TOKEN)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    _install_hostile(linux_guest)

    stolen = _hostile(linux_guest, collector.port, "steal")
    assert stolen["uid"] != 0 and stolen["token"] is None, stolen
    assert "token" not in stolen["params"] and "port" in stolen["params"], stolen
    claims = [
        _hostile(linux_guest, collector.port, "claim", agent.kind, agent.os, agent.host, tok)
        for tok in ("", secrets.token_hex(16))
    ]
    assert not any(c["accepted"] or c["sent_records"] for c in claims), claims

    assert collector.agents() == [agent]
    assert collector.error_counts() == {"Unauthorized": 2}
    assert all(agent.host in e.message and TOKEN not in e.message for e in collector.errors())
    st = collector.stats(agent)
    assert st.connections == 1 and st.protocol_errors == 0  # the refused HELLOs left no trace

    # the agent itself, with the token, reports as ever
    linux_guest.run("cp /bin/true /tmp/hil-tok").check()
    ((_, pid),) = parse_pid_lines(linux_guest.run("/tmp/hil-tok & echo /tmp/hil-tok $!; wait").check().stdout.decode())
    collector.wait_for(agent=agent, kind="created", pid=pid, image_path="/tmp/hil-tok", timeout=60)
    collector.assert_none(pid=666)  # the hostile's record never got in
    assert kmod.stats("hil_agent")["dropped"] == 0
