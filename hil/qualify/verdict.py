"""A qualification run's verdict: PASS or FAIL and why, decided in one place for the exit code
of ``hil qualify`` and the first line of its report."""

from __future__ import annotations

from dataclasses import dataclass

from hil.qualify.model import FLAKY, SKIPPED, CrashSeen, CrashSignature, Run

EXIT_NO_TESTS = 5  # pytest's own code for "nothing collected"


@dataclass(frozen=True)
class Verdict:
    """PASS or FAIL and why, in the words the report's first line uses."""

    passed: bool
    reason: str

    @property
    def word(self) -> str:
        return "PASS" if self.passed else "FAIL"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_crashes(run: Run) -> list[CrashSeen]:
    """The run's crashes: ``run.crashes``, plus a test's crash the runner left out of them."""
    out = list(run.crashes)
    seen = {(c.title, c.nodeid) for c in out}
    for r in run.results:
        if r.crash_title and (r.crash_title, r.nodeid) not in seen:
            out.append(CrashSeen(r.crash_title, r.crash_kind, r.nodeid, r.crash_expected))
            seen.add((r.crash_title, r.nodeid))
    return out


def new_crash_titles(run: Run, known_crashes: dict[str, CrashSignature]) -> list[str]:
    """Titles of unexpected crashes the history had never seen, in the order the run met them."""
    titles: list[str] = []
    for c in run_crashes(run):
        if not c.expected and c.title not in known_crashes and c.title not in titles:
            titles.append(c.title)
    return titles


def verdict(
    run: Run, known_crashes: dict[str, CrashSignature], *, fail_on_flaky: bool = False, pytest_exit: int | None = None
) -> Verdict:
    """FAIL on a failed or erroring test, on an unexpected crash title never seen before, when
    no test ran (a qualification that qualified nothing must not look green), on flaky tests when
    ``fail_on_flaky``, or when pytest itself ended abnormally (``pytest_exit`` other than 0, 1:
    interrupted, an internal or usage error, nothing collected); PASS otherwise.  Flaky tests
    pass, and are named in the reason."""
    failures, new = len(run.product_failures), len(new_crash_titles(run, known_crashes))
    ran = sum(r.outcome != SKIPPED for r in run.results)
    flaky = run.count(FLAKY)
    problems = []
    if failures:
        problems.append(plural(failures, "product failure"))
    if new:
        problems.append(plural(new, "new crash title"))
    if flaky and fail_on_flaky:
        problems.append(plural(flaky, "flaky test") + " (the profile fails on flaky tests)")
    abnormal = pytest_exit not in (None, 0, 1, EXIT_NO_TESTS)
    if not ran:
        problems.append(
            "no test ran"
            + (
                " (the profile selected none)"
                if pytest_exit == EXIT_NO_TESTS
                else f" (pytest exit code {pytest_exit})"
                if abnormal
                else ""
            )
        )
    elif abnormal:
        problems.append(f"pytest ended with exit code {pytest_exit} (interrupted, or an internal or usage error)")
    notes = [plural(flaky, "flaky test")] if flaky and not fail_on_flaky else []
    if problems:
        return Verdict(False, "; ".join([", ".join(problems), *notes]))
    return Verdict(True, "; ".join(["passed", *notes]))
