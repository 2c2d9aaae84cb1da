"""Soak: the agent and kserver loaded together for the profile's ``soak_s``, under a steady mix
of exec bursts in the guest and kserver requests from the host.  Nothing may be lost over time:
every exec of every round reaches the collector exactly once, every request gets its answer,
and the guest kernel reports nothing (the crash monitor watches throughout)."""

from __future__ import annotations

import time

import pytest

from hil.deploy import reference

from ..kserver_client import SERVE_DIR

pytestmark = [pytest.mark.hil_linux, pytest.mark.soak]

TARGET = "/tmp/hil-soak-target"
BURST = 200  # execs per round
REQUESTS = 20  # kserver requests per round


def test_agent_and_kserver_lose_nothing_over_the_soak(
    linux_guest, start_agent, start_kserver, collector, kmod, soak_seconds, figures
):
    if soak_seconds == 0:
        pytest.skip("soak_s is 0 for this run (HIL_SOAK_S or the profile): no soak asked for")
    reference.install_storm_tools(linux_guest, TARGET)
    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    linux_guest.run(f"mkdir -p {SERVE_DIR} && head -c 65536 /dev/urandom > {SERVE_DIR}/soak.bin").check()
    blob = linux_guest.read_file(f"{SERVE_DIR}/soak.bin")
    ks = start_kserver()

    rounds, pids, answered, wrong = 0, [], 0, []
    deadline = time.monotonic() + soak_seconds
    while rounds == 0 or time.monotonic() < deadline:
        res = linux_guest.run(f"/tmp/hil_storm {BURST} {TARGET} 400", timeout=300).check()
        burst = [pid for _, pid in reference.parse_pid_lines(res.stdout.decode())]
        assert len(burst) == BURST
        pids += burst
        with ks.client() as c:
            for i in range(REQUESTS):  # chat and file requests, alternating
                if i % 2:
                    right = c.get_file("soak.bin") == blob
                else:
                    right = c.request(f"round {rounds} #{i}".encode()) == ("OK", b"hello from kserver")
                answered += 1
                if not right:
                    wrong.append(f"round {rounds} request {i}")
        rounds += 1

    collector.wait_for(kind="exited", pid=pids[-1], timeout=300)
    collector.flush()
    reported = [r.pid for r in collector.records(kind="created", image_path=TARGET)]
    missing = set(pids) - set(reported)
    figures(
        "soak",
        soak_s=soak_seconds,
        rounds=rounds,
        execs=len(pids),
        requests=answered,
        records_lost=len(missing),
        duplicated_records=len(reported) - len(set(reported)),
        wrong_answers=len(wrong),
        agent_drops=kmod.stats("hil_agent")["dropped"],
    )
    assert not wrong, wrong[:5]
    assert not missing, f"{len(missing)} execs never reported, e.g. {sorted(missing)[:10]}"
    assert sorted(reported) == sorted(pids), "duplicated creation records"
    assert kmod.stats("hil_agent")["dropped"] == 0 and collector.stats(agent).dropped_by_agent == 0
    assert ks.stats()["active"] <= 1
