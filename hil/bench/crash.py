"""``hil bench crash``: how fast a guest panic becomes a named crash report.

Each run restores a clean guest, starts ``echo c > /proc/sysrq-trigger`` in the background and
times, from just before the trigger command is sent:

- ``panic_to_report_s``: until ``guest.crash`` holds the final report (title from the console);
- ``panic_to_event_s``: until libvirt's PANICKED lifecycle event arrived;
- ``event_to_report_s``: from that event to the final report (negative: the console was first).

The trigger goes through the guest agent, so every figure includes one agent round trip
(``guest-exec``); under TCG on a busy host that is most of it.  Medians over ``--runs``.
"""

from __future__ import annotations

import statistics
import time

HELP = "time guest panic -> crash report (sysrq panics, medians)"


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="sysrq panics to time (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each report")
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)


def run(args) -> int:
    from hil.config import load_config
    from hil.lab import Lab

    config = load_config()
    to_report, to_event, event_to_report, first = [], [], [], {"console": 0, "event": 0}
    with Lab(config, accel=args.accel) as lab:
        lab.linux_image()
        lab.snapshot()  # the boot is not part of the measurement
        for _ in range(args.runs):
            g = lab.linux_guest()
            mon = g.monitor
            assert mon is not None  # a running libvirt guest is watched
            t0 = time.monotonic()
            g.spawn("echo c > /proc/sysrq-trigger")
            crash = mon.wait(args.timeout)
            crash = mon.wait_settled(max(0.0, t0 + args.timeout - time.monotonic())) if crash else None
            if crash is None or not crash.final:
                print(f"error: no crash report within {args.timeout:g}s")
                lab.discard(g)
                return 1
            assert crash.final_at is not None  # crash.final
            to_report.append(crash.final_at - t0)
            first[crash.source] = first.get(crash.source, 0) + 1
            panicked = [s for s in crash.signals if s.what == "panicked"]
            if not panicked:  # the event may trail the console: give it the grace period
                deadline = time.monotonic() + mon.grace_s
                while not panicked and time.monotonic() < deadline:
                    time.sleep(0.02)
                    mon.poll()
                    panicked = [s for s in crash.signals if s.what == "panicked"]
            if panicked:
                to_event.append(panicked[0].at - t0)
                event_to_report.append(crash.final_at - panicked[0].at)
            lab.discard(g)
    print(f"accel: {lab.accel}")
    print(f"runs: {len(to_report)}")
    print(f"panic_to_report_s: {statistics.median(to_report):.3f}")
    print(f"panic_to_report_s_max: {max(to_report):.3f}")
    if to_event:
        print(f"panic_to_event_s: {statistics.median(to_event):.3f}")
        print(f"event_to_report_s: {statistics.median(event_to_report):.3f}")
    print(f"events_seen: {len(to_event)}")
    print(f"first_signal_console: {first.get('console', 0)}")
    print(f"first_signal_event: {first.get('event', 0)}")
    return 0
