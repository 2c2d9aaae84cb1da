"""``hil bench agent``: how fast the Linux agent module reports execs, and whether it loses any.

Boots a Linux guest, loads ``hil_agent`` (drivers/linux/agent) reporting to a collector on the
host, runs a paced exec storm (``hil_storm``: fork+exec of a static, libc-free no-op, one at a time) and
prints, one ``key: value`` per line:

- ``exec_to_record_p50_ms`` / ``exec_to_record_p99_ms``: from the exec/exit tracepoint to the
  moment the record's RECORDS frame was written to the collector socket, measured by the agent
  with the guest's monotonic clock (``/proc/hil_agent_latency_us``; guest and host clocks are
  not comparable, the loopback hop after that adds well under a millisecond). The protocol is
  pull-based, so this includes waiting for the collector's next REQUEST: it scales with
  ``--interval`` (printed as ``poll_interval_s``).
- ``records_lost``: storm execs and exits that never reached the collector (expected 0);
  ``records_dropped_reported``: what the agent reported dropping (END.dropped).
- ``execs_per_second``: the storm's achieved rate in the guest.
"""

from __future__ import annotations

import hashlib
import re

HELP = "Linux agent module: exec-to-record latency (p50/p99) and records lost under an exec storm"

TARGET = "/tmp/hil-bench-target"


def add_arguments(parser) -> None:
    parser.add_argument("--execs", type=int, default=1000, help="execs in the storm (default 1000)")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="execs per second, 0 = as fast as possible (default 20)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.05, help="collector poll interval in seconds (default 0.05)"
    )
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)


def measure(guest, execs: int, rate: float, interval: float) -> dict:
    """Run the storm in an already running guest; returns the figures. Usable without a Lab."""
    from hil.collector.collector import Collector
    from hil.deploy import kmod, reference
    from hil.stats import percentile

    ko = reference.build_agent(guest.kbuild_dir)
    reference.install_storm_tools(guest, TARGET)
    data = guest.read_file(TARGET)
    size, sha = len(data), hashlib.sha256(data).digest()

    with Collector(interval=interval) as collector:
        kmod.load_module(guest, ko, port=collector.port)
        try:
            agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
            guest.run("echo reset > /proc/hil_agent_latency_us").check()
            budget = 600.0 + execs * (0.25 + (1.0 / rate if rate > 0 else 0.0))
            res = guest.run(f"/tmp/hil_storm {execs} {TARGET} {rate:g}", timeout=budget).check()
            pids = [pid for _, pid in reference.parse_pid_lines(res.stdout.decode())]
            m = re.search(r"rate=([\d.]+)", res.stderr.decode())
            if pids:
                try:
                    collector.wait_for(kind="exited", pid=pids[-1], timeout=120)
                except AssertionError:
                    pass  # counted as lost below
            collector.flush()
            lat_us = [int(x) for x in guest.read_file("/proc/hil_agent_latency_us").decode().split() if x.isdigit()]
            storm = set(pids)
            created = [r for r in collector.records(kind="created", image_path=TARGET) if r.pid in storm]
            exited = {r.pid for r in collector.records(kind="exited") if r.pid in storm}
            wrong = sum(1 for r in created if r.image_size != size or r.sha256 != sha)
            lost = (len(storm) - len({r.pid for r in created})) + (len(storm) - len(exited))
            dropped = collector.stats(agent).dropped_by_agent
        finally:
            kmod.unload_module(guest, "hil_agent", check=False)
    return {
        "execs": len(pids),
        "execs_per_second": float(m.group(1)) if m else float("nan"),
        "poll_interval_s": interval,
        "latency_samples": len(lat_us),
        "exec_to_record_p50_ms": percentile(lat_us, 50) / 1000,
        "exec_to_record_p99_ms": percentile(lat_us, 99) / 1000,
        "exec_to_record_max_ms": (max(lat_us) / 1000) if lat_us else float("nan"),
        "records_lost": lost,
        "records_dropped_reported": dropped,
        "records_with_wrong_size_or_sha": wrong,
    }


def print_figures(figures: dict) -> None:
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


def run(args) -> int:
    from hil.config import load_config
    from hil.lab import Lab

    config = load_config()
    with Lab(config, accel=args.accel) as lab:
        guest = lab.linux_guest(label="bench-agent")
        try:
            figures = measure(guest, args.execs, args.rate, args.interval)
        finally:
            lab.discard(guest)
    print(f"accel: {lab.accel}")
    print_figures(figures)
    return 0 if figures["records_lost"] == 0 and figures["records_with_wrong_size_or_sha"] == 0 else 1
