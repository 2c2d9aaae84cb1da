"""``hil qualify``: one qualification run from a profile to a verdict, a history row and a report.

    folder = <out>/<run id>/
        pytest-1.log, results-1.jsonl, junit-1.xml, artifacts/        the first attempt
        pytest-2.log, ..., artifacts/rerun-2/                           reruns of what failed
        report.html                                                     the one page to read

Steps: resolve the profile; open the history first (a bad URL fails in seconds, not after an
hour of tests); run pytest on the profile's selection with xdist workers sized to the machine;
run each failed test again on a fresh guest, up to the profile's ``reruns`` (fail-then-pass is
``flaky``, not a product failure); turn the attempts' JSON-line reports into a
:class:`~hil.qualify.model.Run`; record it; write the report; print ``report: <path>`` last.
The exit code is non-zero when the verdict (:mod:`hil.qualify.verdict`) is FAIL: a product
failure, a crash title the history has never seen (from a test that did not expect it), flaky
tests when the profile says so, or a run that could not select or run its tests.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hil.config import HilConfig
from hil.errors import HilError
from hil.qualify import model
from hil.qualify.profiles import Profile, pytest_selection
from hil.qualify.results import PhaseReport, read
from hil.qualify.verdict import Verdict, verdict


@dataclass
class Outcome:
    """What :func:`qualify` hands back: the run, its verdict and its report."""

    run: model.Run
    verdict: Verdict
    report: Path

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.passed else 1


def workers_for(profile: Profile, config: HilConfig) -> int:
    """xdist workers: the profile's; with ``hosts`` configured, the hosts' capacity (their
    weights: the plugin places the workers over the reachable ones); else one per core while
    the guests fit in memory."""
    if profile.workers:
        return profile.workers
    if config.hosts:
        return sum(h.weight for h in config.hosts)
    cores = os.cpu_count() or 1
    try:
        avail_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemAvailable:")
        )
    except (OSError, StopIteration, ValueError):
        return cores
    per_worker_mib = config.linux.memory_mib * 2 + 512  # the live guest, the next one, the worker
    return max(1, min(cores, avail_kib // 1024 // per_worker_mib))


def new_run_id() -> str:
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{platform.node() or 'host'}-{uuid.uuid4().hex[:4]}"


def pytest_command(
    profile: Profile,
    folder: Path,
    attempt: int,
    selection: list[str],
    workers: int,
    config_path: str | None,
    extra: list[str],
) -> list[str]:
    artifacts = folder / "artifacts" if attempt == 1 else folder / "artifacts" / f"rerun-{attempt}"
    basetemp = folder / ".tmp" / str(attempt)
    basetemp.parent.mkdir(parents=True, exist_ok=True)  # pytest makes the last level only
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *selection,
        "-p",
        "no:cacheprovider",
        "-rfEs",
        f"--hil-profile={profile.name}",
        f"--hil-artifacts={artifacts}",
        f"--hil-results={folder / f'results-{attempt}.jsonl'}",
        f"--junitxml={folder / f'junit-{attempt}.xml'}",
        f"--basetemp={basetemp}",
    ]
    if config_path:
        cmd.append(f"--hil-config={config_path}")
    if workers > 1:
        cmd += ["-n", str(workers)]
    return cmd + extra


def run_pytest(cmd: list[str], log: Path) -> int:
    """Run one attempt, its output both on this terminal (the progress) and in ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        stdout = proc.stdout
        assert isinstance(stdout, io.BufferedReader)  # a binary pipe, buffered (bufsize -1)
        for chunk in iter(lambda: stdout.read1(65536), b""):
            out.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return proc.wait()


# ---- from phase reports to test results -------------------------------------------------------


def canonical_name(path: str, nodeid: str) -> str:
    """A test's name in the history: the same on every host and in every venv.  kernel-hil's
    suites are ``suites/<file>::<test>``; a team's tests are relative to where the run started."""
    from hil.paths import bundled

    rest = nodeid[nodeid.index("::") :] if "::" in nodeid else ""
    p = Path(path)
    for base, prefix in ((bundled("suites"), "suites/"), (Path.cwd(), "")):
        try:
            return prefix + str(p.resolve().relative_to(base.resolve())) + rest
        except ValueError:
            continue
    return nodeid


def rerun_argument(report: PhaseReport) -> str:
    """A node id that selects the test again from any folder: the absolute file, then the rest."""
    rest = report.nodeid[report.nodeid.index("::") :] if "::" in report.nodeid else ""
    return report.path + rest


def by_test(phases: list[PhaseReport], key=lambda p: p.nodeid) -> dict[str, list[PhaseReport]]:
    """One attempt's phase reports grouped per test (by node id, or by ``key``)."""
    grouped: dict[str, list[PhaseReport]] = defaultdict(list)
    for p in phases:
        grouped[key(p)].append(p)
    return grouped


def attempt_outcome(phases: list[PhaseReport]) -> tuple[str, PhaseReport | None]:
    """The outcome of one attempt of one test from its phases, and the phase that decided it."""
    by_when = {p.when: p for p in phases}
    setup, call, teardown = by_when.get("setup"), by_when.get("call"), by_when.get("teardown")
    if setup is not None and setup.outcome == "failed":
        return model.ERROR, setup
    if call is not None and call.outcome == "failed":
        return model.FAILED, call
    if teardown is not None and teardown.outcome == "failed":
        return model.ERROR, teardown
    skipped = next((p for p in (setup, call) if p is not None and p.outcome == "skipped"), None)
    if skipped is not None:
        return model.SKIPPED, skipped
    return model.PASSED, None


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(folder.resolve()))
    except ValueError:
        return path


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if x == x and x not in (float("inf"), float("-inf")) else None  # no NaN, no inf


ARTIFACT_PROPERTIES = ("hil_console_log", "hil_agent_log", "hil_crash_txt", "wine_debug_log")


def test_results(
    attempts: list[list[PhaseReport]], folder: Path
) -> tuple[list[model.TestResult], list[model.Figure], list[model.Artifact]]:
    """Every test of the run over its attempts, the figures the tests recorded and the drivers
    they deployed."""
    per_test: dict[str, list[tuple[str, PhaseReport | None, list[PhaseReport]]]] = defaultdict(list)
    for phases in attempts:
        for name, test_phases in by_test(phases, key=lambda p: canonical_name(p.path, p.nodeid)).items():
            outcome, decisive = attempt_outcome(test_phases)
            per_test[name].append((outcome, decisive, test_phases))

    results, figures, deployed = [], [], {}
    for name, tries in per_test.items():
        outcomes = [o for o, _, _ in tries]
        final = outcomes[-1]
        if final == model.PASSED and any(o in (model.FAILED, model.ERROR) for o in outcomes[:-1]):
            final = model.FLAKY
        first_bad = next(((d, ph) for o, d, ph in tries if o in (model.FAILED, model.ERROR)), None)
        shown_phases = first_bad[1] if first_bad else tries[-1][2]
        props = dict(shown_phases[-1].properties) if shown_phases else {}
        result = model.TestResult(
            nodeid=name,
            outcome=final,
            attempts=outcomes,
            duration_s=sum(p.duration for p in tries[-1][2]),
            message=(
                first_bad[0].message
                if first_bad and first_bad[0]
                else (tries[-1][1].message if final == model.SKIPPED and tries[-1][1] else "")
            ),
            crash_title=props.get("hil_crash_title", ""),
            crash_kind=props.get("hil_crash_kind", ""),
            crash_expected=props.get("hil_crash_expected", "") == "True",
            console_excerpt=next((p.console for p in shown_phases if p.console), ""),
        )
        for key, value in props.items():
            if key in ARTIFACT_PROPERTIES or key.endswith("_histogram"):
                result.artifacts[key.removeprefix("hil_")] = _relative(value, folder)
            elif key.startswith("hil_deployed_") and not key.endswith(("_sha256", "_origin")):
                art = key.removeprefix("hil_deployed_")
                sha, origin = props.get(f"{key}_sha256", ""), props.get(f"{key}_origin", "")
                result.deployed[art] = (value, sha)
                deployed[(art, value, sha)] = model.Artifact(art, value, sha, origin)
            elif not key.startswith(("hil_", "wine_")) and (x := _number(value)) is not None:
                figures.append(model.Figure(key, x, name))
        results.append(result)
    return results, figures, list(deployed.values())


def lab_figures(artifacts: Path) -> list[model.Figure]:
    """Restore and cold-boot times from the attempt's timeline dumps (medians)."""
    durations: dict[str, list[float]] = defaultdict(list)
    for dump in artifacts.glob("timeline-*.json"):
        try:
            steps = json.loads(dump.read_text())["steps"]
        except (OSError, ValueError, KeyError):
            continue
        for s in steps:
            if s["name"] in ("restore", "cold-boot-ready") and not s.get("error"):
                durations[s["name"]].append(float(s["duration"]))
    names = {"restore": "restore_s", "cold-boot-ready": "cold_boot_s"}
    return [model.Figure(names[k], round(statistics.median(v), 3)) for k, v in sorted(durations.items()) if v]


def guest_kernel(config: HilConfig) -> str:
    from hil.deploy.kmod import kernel_release

    if config.linux.image == "embedded":
        from hil.images.linux_image import cached_image

        img = cached_image()
        return img.kernel_release if img else ""
    return kernel_release(Path(config.linux.kbuild_dir)) if config.linux.kbuild_dir else ""


# ---- the run ------------------------------------------------------------------------------------


def qualify(
    config: HilConfig,
    profile: Profile,
    *,
    history_url: str | None,
    out: Path,
    config_path: str | None = None,
    extra: list[str] | None = None,
) -> Outcome:
    from hil import __version__
    from hil.qualify.history import History
    from hil.qualify.report import write_report

    history = History.open(history_url or config.history or None)  # fails fast on a bad URL
    try:
        run_id = new_run_id()
        folder = Path(out).resolve() / run_id
        folder.mkdir(parents=True)
        workers = workers_for(profile, config)
        selection = pytest_selection(profile)
        print(f"hil qualify: profile {profile.name}, {workers} worker(s), run {run_id}\n  folder: {folder}", flush=True)
        started = datetime.now(UTC)
        attempts: list[list[PhaseReport]] = []
        args, codes = selection, []
        for attempt in range(1, profile.reruns + 2):
            cmd = pytest_command(
                profile, folder, attempt, args, workers if attempt == 1 else 1, config_path, list(extra or [])
            )
            codes.append(run_pytest(cmd, folder / f"pytest-{attempt}.log"))
            phases = read(folder / f"results-{attempt}.jsonl")
            attempts.append(phases)
            failed = _failed_tests(phases)
            if not failed or attempt > profile.reruns:
                break
            print(
                f"\nhil qualify: running {len(failed)} failed test(s) again on fresh guests "
                f"(attempt {attempt + 1} of {profile.reruns + 1})",
                flush=True,
            )
            args = failed
        results, figures, deployed = test_results(attempts, folder)
        run = model.Run(
            run_id=run_id,
            profile=profile.name,
            host=platform.node(),
            version=__version__,
            guest_kernel=guest_kernel(config),
            started=started,
            ended=datetime.now(UTC),
            folder=str(folder),
            results=results,
            figures=figures + lab_figures(folder / "artifacts"),
            artifacts=deployed,
            crashes=[
                model.CrashSeen(r.crash_title, r.crash_kind, r.nodeid, r.crash_expected)
                for r in results
                if r.crash_title
            ],
        )
        history.record(run)
        known = history.crash_history([c.title for c in run.crashes], before=run_id)
        trends = history.trends(profile.name)
    finally:
        history.close()
    decided = verdict(run, known, fail_on_flaky=profile.fail_on_flaky, pytest_exit=codes[0])
    art = folder / "artifacts"
    report = write_report(
        run,
        folder / "report.html",
        known_crashes=known,
        trends=trends,
        timeline=_existing(art / "timeline.html"),
        latency=_existing(art / "latency.html"),
        verdict_=decided,
        coverage=_coverage_report(art, len(attempts)),
    )
    return Outcome(run, decided, report)


def _existing(p: Path) -> Path | None:
    return p if p.is_file() else None


def _coverage_report(art: Path, attempts: int) -> Path | None:
    """With ``--hil-coverage`` among the pytest arguments: the run's coverage report.  Each
    attempt's session merged only its own tests' data, so after reruns every attempt's is
    merged again (a rerun test's folder holds its last attempt's data)."""
    from hil.deploy import coverage

    index = art / coverage.FOLDER / "index.html"
    if not coverage.data_sets(art):
        return None
    if attempts > 1 or not index.is_file():
        try:
            coverage.render(art)
        except HilError as exc:
            print(f"hil qualify: merging the coverage data failed: {exc}", flush=True)
    return _existing(index)


def _failed_tests(phases: list[PhaseReport]) -> list[str]:
    out = []
    for test_phases in by_test(phases).values():
        outcome, _ = attempt_outcome(test_phases)
        if outcome in (model.FAILED, model.ERROR):
            out.append(rerun_argument(test_phases[0]))
    return out
