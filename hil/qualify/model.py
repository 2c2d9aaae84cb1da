"""What one qualification run produced, as plain data: the history stores it, the report draws it.

The runner (:mod:`hil.qualify.runner`) builds a :class:`Run` from the run's JUnit XML (every
attempt of every test), its timeline and the figures the suites recorded; nothing here talks to
pytest, a database or a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# A test's outcome over its attempts.
PASSED, FAILED, ERROR, SKIPPED, FLAKY = "passed", "failed", "error", "skipped", "flaky"
OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED, FLAKY)


@dataclass
class TestResult:
    """One test of the run.

    nodeid: pytest's id (``hil/suites/linux/test_smoke.py::test_boot``).
    outcome: one of :data:`OUTCOMES`; ``flaky`` = failed, then passed on a fresh guest.
    attempts: the outcome of each attempt, first first (``["failed", "passed"]``).
    message: the first failing attempt's message (for a crash: its title).
    crash_title / crash_kind / crash_expected: the first guest crash the test saw, if any.
    console_excerpt: the failing attempt's guest console tail (what a person reads first).
    artifacts: name -> path relative to the run folder (console log, dmesg, crash.txt...).
    deployed: name -> (path, sha256) of the drivers the test deployed.
    """

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    duration_s: float = 0.0
    attempts: list[str] = field(default_factory=list)
    message: str = ""
    crash_title: str = ""
    crash_kind: str = ""
    crash_expected: bool = False
    console_excerpt: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)
    deployed: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def product_failure(self) -> bool:
        return self.outcome in (FAILED, ERROR)


@dataclass(frozen=True)
class CrashSeen:
    """A crash of the run: its title is its signature."""

    title: str
    kind: str
    nodeid: str
    expected: bool


@dataclass(frozen=True)
class Figure:
    """A number a suite measured (``exec_to_sent_p99_ms``, ``records_lost``, ``restore_s``...)."""

    name: str
    value: float
    nodeid: str = ""


@dataclass(frozen=True)
class Artifact:
    """A driver the run deployed (from the tests' ``hil_deployed_*`` properties)."""

    name: str
    path: str
    sha256: str
    origin: str


@dataclass
class Run:
    """One qualification run.

    run_id: unique and sortable (``20261127T133000-host-1a2b``).
    profile: the profile's name; host: where it ran; version: kernel-hil's version;
    guest_kernel: the Linux guest's ``uname -r`` ("" if no Linux guest ran).
    folder: the run folder (JUnit XML, artifacts, report) as a string path.
    """

    run_id: str
    profile: str
    host: str
    version: str
    guest_kernel: str
    started: datetime
    ended: datetime
    folder: str = ""
    results: list[TestResult] = field(default_factory=list)
    crashes: list[CrashSeen] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.results)

    @property
    def pass_rate(self) -> float:
        """Passed (flaky included) over everything that ran (skips excluded); 1.0 when empty."""
        ran = [r for r in self.results if r.outcome != SKIPPED]
        return sum(r.outcome in (PASSED, FLAKY) for r in ran) / len(ran) if ran else 1.0

    @property
    def product_failures(self) -> list[TestResult]:
        return [r for r in self.results if r.product_failure]


@dataclass(frozen=True)
class CrashSignature:
    """A crash title across the history: first and last run it was seen in, how often."""

    title: str
    first_run: str
    last_run: str
    count: int


@dataclass(frozen=True)
class RunSummary:
    """A run as ``hil history runs`` lists it (and the trend plots read it)."""

    run_id: str
    profile: str
    host: str
    started: datetime
    ended: datetime
    passed: int
    failed: int
    flaky: int
    skipped: int
    crashes: int
    pass_rate: float
    guest_kernel: str = ""
    version: str = ""


@dataclass(frozen=True)
class FlakyTest:
    nodeid: str
    flaky_runs: int
    runs: int

    @property
    def fail_ratio(self) -> float:
        return self.flaky_runs / self.runs if self.runs else 0.0


@dataclass
class RunDiff:
    """``hil history diff A B``: what changed from run A to run B."""

    run_a: str
    run_b: str
    newly_failing: list[str] = field(default_factory=list)  # pass -> fail
    newly_passing: list[str] = field(default_factory=list)  # fail -> pass
    new_crashes: list[str] = field(default_factory=list)
    vanished_crashes: list[str] = field(default_factory=list)
    moved_figures: list[tuple[str, float, float]] = field(default_factory=list)  # name, a, b


@dataclass(frozen=True)
class TrendPoint:
    """One run on the report's trend plots: pass rate, crash titles, and the run's figures
    (``restore_s``, ``*_p99_ms``... by name)."""

    run_id: str
    started: datetime
    pass_rate: float
    crash_titles: int
    figures: dict[str, float] = field(default_factory=dict)
