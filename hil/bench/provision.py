"""``hil bench provision``: what a test waits for its clean guest, medians over several runs.

One ``key: value`` per line, all measured side by side in one run:

- ``cold_boot_s``: domain create until the agent answers and boot-time services settled;
- ``restore_s``: a restored copy on demand (no ready pool): overlay, restore, agent, clock;
- ``destroy_s``: destroying a used guest;
- ``visible_reset_s``: on one worker, the gap between the end of one test's body and the start
  of the next one's, over ``--reset-tests`` consecutive tests using ``linux_guest`` (a real
  pytest run, so it counts everything the plugin and the lab do between two tests).  Each body
  runs guest commands for ``--body-s`` seconds (default 2: the shortest test of suites/linux
  takes 2.0 s in all here, the median 4.9 s), long enough for the next copy to be prepared
  behind it; ``reset_body_s`` is the bodies' median;
- ``visible_reset_starved_s``: the same with bodies of a single command (~0.1 s), shorter than
  preparing a copy takes on this host: what a test sees when the ready pool cannot keep up;
- ``one_test_run_s``: wall time of a fresh ``pytest <smoke file> -k boot_and_run`` process
  with the snapshot cache warm (a developer running one test);
- the ratios ``restore_over_cold`` and ``visible_reset_over_cold``.

``--flavour debug`` measures the same on the debug kernel's guest (KASAN, lockdep, kmemleak:
slower to boot, and what each test of a ``prerelease`` run pays); the default is the
configuration's flavour.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HELP = "measure cold boot, restore, destroy, the reset a test sees, and a one-test run (medians)"

RESET_TEST = textwrap.dedent("""
    import os, time
    import pytest

    @pytest.mark.parametrize("i", range(int(os.environ["HIL_BENCH_TESTS"])))
    def test_body(linux_guest, i):
        start = time.monotonic()
        with open(os.environ["HIL_BENCH_TIMES"], "a") as f:
            f.write(f"start {start}\\n")
        linux_guest.run("true").check()
        while time.monotonic() - start < float(os.environ["HIL_BENCH_BODY_S"]):
            linux_guest.run("true").check()
        with open(os.environ["HIL_BENCH_TIMES"], "a") as f:
            f.write(f"end {time.monotonic()}\\n")
""")


def add_arguments(parser: Any) -> None:
    parser.add_argument("--cold-runs", type=int, default=3, help="cold boots to time (default 3)")
    parser.add_argument("--restore-runs", type=int, default=7, help="restores to time (default 7)")
    parser.add_argument("--reset-tests", type=int, default=21, help="consecutive tests for visible_reset_s")
    parser.add_argument(
        "--body-s", type=float, default=2.0, help="how long each of those tests' bodies runs guest commands (default 2)"
    )
    parser.add_argument("--one-test-runs", type=int, default=3, help="one-test pytest runs to time")
    parser.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)
    parser.add_argument(
        "--flavour", choices=["stock", "debug"], default=None, help="the guest kernel (default: the configuration's)"
    )


def _pytest(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: pytest {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return elapsed, proc


def visible_resets(tests: int, body_s: float, work: Path, flavour: str = "stock") -> tuple[list[float], list[float]]:
    """Gaps between consecutive test bodies of one real pytest run on one worker, and the
    bodies' durations."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "test_reset_bench.py").write_text(RESET_TEST)
    times = work / "times.txt"
    env = {
        **os.environ,
        "HIL_BENCH_TESTS": str(tests),
        "HIL_BENCH_TIMES": str(times),
        "HIL_BENCH_BODY_S": str(body_s),
    }
    _pytest([f"--basetemp={work / 'bt'}", f"--hil-kernel={flavour}", "test_reset_bench.py"], work, env)
    marks = [line.split() for line in times.read_text().splitlines()]
    ends = [float(t) for kind, t in marks if kind == "end"]
    starts = [float(t) for kind, t in marks if kind == "start"]
    gaps = [s - e for e, s in zip(ends[:-1], starts[1:], strict=True)]
    return gaps, [e - s for s, e in zip(starts, ends, strict=True)]


def one_test_runs(runs: int, work: Path, flavour: str = "stock") -> list[float]:
    from hil.paths import bundled

    smoke = bundled("suites") / "linux" / "test_smoke.py"
    out = []
    for i in range(runs):
        elapsed, _ = _pytest(
            [f"--basetemp={work / f'one{i}'}", f"--hil-kernel={flavour}", str(smoke), "-k", "boot_and_run"],
            work,
            dict(os.environ),
        )
        out.append(elapsed)
    return out


def run(args: Any) -> int:
    from hil.config import choose_flavour, load_config
    from hil.lab import Lab
    from hil.steps import TIMELINE

    config = load_config()
    flavour = choose_flavour(config, args.flavour)
    config.linux.snapshot = True
    config.linux.ready_pool = 0  # restore_s: a copy restored when asked, nothing ahead
    mark = time.time()
    with Lab(config, accel=args.accel) as lab:
        lab.linux_image()  # a build is not part of the measurement
        colds: list[float] = []
        destroys: list[float] = []
        for _ in range(args.cold_runs):
            g = lab.boot_linux_guest()
            assert lab.cold_boot_s is not None  # set by the boot
            colds.append(lab.cold_boot_s)
            t0 = time.monotonic()
            g.destroy()
            destroys.append(time.monotonic() - t0)
        lab.snapshot()
        restores = []
        for _ in range(args.restore_runs):
            t0 = time.monotonic()
            g = lab.linux_guest()
            restores.append(time.monotonic() - t0)
            t0 = time.monotonic()
            g.destroy()
            destroys.append(time.monotonic() - t0)
        accel = lab.accel
    steps = TIMELINE.since(mark)
    with tempfile.TemporaryDirectory(prefix="hil-bench-") as tmp:
        resets, bodies = visible_resets(args.reset_tests, args.body_s, Path(tmp) / "reset", flavour)
        starved, _ = visible_resets(args.reset_tests, 0.0, Path(tmp) / "starved", flavour)
        ones = one_test_runs(args.one_test_runs, Path(tmp), flavour)

    def median_of(name: str) -> float:
        durations = [r.duration for r in steps if r.name == name and r.duration is not None]
        return statistics.median(durations or [float("nan")])

    cold, restore, reset = statistics.median(colds), statistics.median(restores), statistics.median(resets)
    print(f"accel: {accel}")
    print(f"flavour: {flavour}")
    print(f"cold_boot_runs: {len(colds)}")
    print(f"restore_runs: {len(restores)}")
    print(f"reset_tests: {args.reset_tests}")
    print(f"cold_boot_s: {cold:.3f}")
    print(f"restore_s: {restore:.3f}")
    print(f"destroy_s: {statistics.median(destroys):.3f}")
    print(f"visible_reset_s: {reset:.3f}")
    print(f"visible_reset_s_max: {max(resets):.3f}")
    print(f"reset_body_s: {statistics.median(bodies):.3f}")
    print(f"visible_reset_starved_s: {statistics.median(starved):.3f}")
    print(f"one_test_run_s: {statistics.median(ones):.3f}")
    print(f"restore_over_cold: {restore / cold:.3f}")
    print(f"visible_reset_over_cold: {reset / cold:.3f}")
    print(f"restore_libvirt_s: {median_of('restore'):.3f}")
    print(f"restore_agent_ready_s: {median_of('wait-ready'):.3f}")
    return 0
