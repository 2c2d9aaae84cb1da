"""``hil bench provision``: cold boot versus restore-from-snapshot, medians over several runs.

Prints ``cold_boot_s``, ``restore_s`` and ``restore_over_cold`` (one ``key: value`` per line).
Cold boot = domain create until the guest agent answers and boot-time services settled;
restore = a fresh overlay, domain restore, the guest agent answering and the clock set: the
whole wait of a test for its clean guest.  Its parts are printed too.
"""

from __future__ import annotations

import statistics
import time

HELP = "measure cold boot vs snapshot restore of the Linux guest (medians)"


def add_arguments(parser) -> None:
    parser.add_argument("--cold-runs", type=int, default=3, help="cold boots to time (default 3)")
    parser.add_argument("--restore-runs", type=int, default=7, help="restores to time (default 7)")
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)


def run(args) -> int:
    from hil.config import load_config
    from hil.lab import Lab
    from hil.steps import TIMELINE

    config = load_config()
    config.linux.snapshot = True
    with Lab(config, accel=args.accel) as lab:
        lab.linux_image()  # a build is not part of the measurement
        colds = []
        for _ in range(args.cold_runs):
            g = lab.boot_linux_guest()
            colds.append(lab.cold_boot_s)
            lab.discard(g)
        lab.snapshot()
        mark = time.time()
        restores = []
        for _ in range(args.restore_runs):
            t0 = time.monotonic()
            g = lab.linux_guest()
            restores.append(time.monotonic() - t0)
            g.run("true").check()
            lab.discard(g)
    steps = TIMELINE.since(mark)

    def median_of(name: str) -> float:
        return statistics.median([r.duration for r in steps if r.name == name] or [float("nan")])

    cold, restore = statistics.median(colds), statistics.median(restores)
    print(f"accel: {lab.accel}")
    print(f"cold_boot_runs: {len(colds)}")
    print(f"restore_runs: {len(restores)}")
    print(f"cold_boot_s: {cold:.3f}")
    print(f"restore_s: {restore:.3f}")
    print(f"restore_over_cold: {restore / cold:.3f}")
    print(f"restore_s_max: {max(restores):.3f}")
    print(f"restore_libvirt_s: {median_of('restore'):.3f}")
    print(f"restore_agent_ready_s: {median_of('wait-ready'):.3f}")
    return 0
