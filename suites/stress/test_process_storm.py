"""Process storm: N execs in the guest end as exactly N creation records at the collector,
none lost or duplicated, in start order, each with the right size and SHA-256."""

from __future__ import annotations

import hashlib
import re

import pytest

from hil.deploy import reference
from hil.stats import percentile

pytestmark = pytest.mark.hil_linux

TARGET = "/tmp/hil-storm-target"


def test_process_storm_reports_every_exec_exactly_once(linux_guest, start_agent, collector, kmod, storm_execs, figures):
    n = storm_execs
    # the target is a static, libc-free no-op: each exec costs the kernel's exec path, not ld.so
    reference.install_storm_tools(linux_guest, TARGET)
    data = linux_guest.read_file(TARGET)
    size, sha = len(data), hashlib.sha256(data).hexdigest()

    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    linux_guest.run("echo reset > /proc/hil_agent_latency_us").check()

    res = linux_guest.run(f"/tmp/hil_storm {n} {TARGET}", timeout=max(600.0, n * 0.25)).check()
    pids = [pid for _, pid in reference.parse_pid_lines(res.stdout.decode())]
    assert len(pids) == n
    m = re.search(r"seconds=([\d.]+) rate=([\d.]+)", res.stderr.decode())
    storm_seconds, exec_rate = float(m.group(1)), float(m.group(2))

    collector.wait_for(kind="exited", pid=pids[-1], timeout=max(300.0, n * 0.05))
    collector.flush()

    created = collector.records(kind="created", image_path=TARGET)
    got = [r.pid for r in created]
    missing = set(pids) - set(got)
    assert not missing, f"{len(missing)} execs never reported, e.g. {sorted(missing)[:10]}"
    assert len(got) == len(set(got)), "duplicated creation records"
    assert got == pids, "creation records are in start order"
    assert all(r.image_size == size and r.sha256.hex() == sha for r in created)
    storm_pids = set(pids)
    exited = [r for r in collector.records(kind="exited") if r.pid in storm_pids]
    assert sorted(r.pid for r in exited) == sorted(pids), "one exit record per storm process"

    st = kmod.stats("hil_agent")
    assert st["dropped"] == 0 and collector.stats(agent).dropped_by_agent == 0

    lat_us = [int(x) for x in linux_guest.read_file("/proc/hil_agent_latency_us").decode().split() if x.isdigit()]
    monos = [r.mono for r in created if r.mono is not None]
    span = (max(monos) - min(monos)) if len(monos) > 1 else float("nan")
    figures(
        "process storm",
        execs=n,
        storm_seconds=storm_seconds,
        execs_per_second=exec_rate,
        records_per_second_at_collector=(len(created) / span) if span and span > 0 else float("nan"),
        exec_to_sent_p50_ms=percentile(lat_us, 50) / 1000,
        exec_to_sent_p99_ms=percentile(lat_us, 99) / 1000,
        records_lost=len(missing),
        hash_cache_hits=st["hash_cache_hits"],
        latencies_ms={"exec_to_sent": [us / 1000 for us in lat_us]},
    )
