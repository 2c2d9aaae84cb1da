"""From a run's JSON-line reports to test results: attempts, flaky, crashes, figures, artifacts,
and the verdict's reasons.  The reports are written by the real plugin in an inner pytest run."""

from __future__ import annotations

import subprocess
import sys

from hil.qualify import model
from hil.qualify.results import read
from hil.qualify.runner import test_results as results_of
from hil.qualify.verdict import verdict

INNER = """
import pathlib, pytest

STATE = pathlib.Path(__file__).with_name("state")

def test_passes(record_property):
    record_property("latency_p99_ms", "12.5")
    record_property("records_lost", 0)
    record_property("note", "not a number")

def test_fails_once_then_passes():
    first = not STATE.exists()
    STATE.write_text("x")
    assert not first, "first attempt fails"

def test_always_fails(record_property):
    record_property("hil_crash_title", "WARNING in team_fn")
    record_property("hil_crash_kind", "WARNING")
    record_property("hil_crash_expected", "False")
    record_property("hil_deployed_team", "/builds/team.ko")
    record_property("hil_deployed_team_sha256", "ab" * 32)
    record_property("hil_deployed_team_origin", "configured")
    assert False, "the product is broken"

def test_skipped():
    pytest.skip("no Windows image configured")

@pytest.fixture
def broken():
    raise RuntimeError("setup broke")

def test_setup_error(broken):
    pass
"""


def _attempt(tmp_path, n, *args):
    out = tmp_path / f"results-{n}.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--hil-results={out}",
            f"--basetemp={tmp_path / f'bt{n}'}",
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return read(out)


def test_attempts_become_outcomes_with_their_evidence(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    first = _attempt(tmp_path, 1, "test_inner.py")
    failed = sorted({p.nodeid for p in first if p.outcome == "failed"})
    assert failed == [
        "test_inner.py::test_always_fails",
        "test_inner.py::test_fails_once_then_passes",
        "test_inner.py::test_setup_error",
    ]
    second = _attempt(tmp_path, 2, *[str(tmp_path / f) for f in failed])
    results, figures, deployed = results_of([first, second], tmp_path)
    by = {r.nodeid.split("::")[1]: r for r in results}
    assert by["test_passes"].outcome == model.PASSED and by["test_passes"].attempts == ["passed"]
    flaky = by["test_fails_once_then_passes"]
    assert flaky.outcome == model.FLAKY and flaky.attempts == ["failed", "passed"]
    assert "first attempt fails" in flaky.message
    broken = by["test_always_fails"]
    assert broken.outcome == model.FAILED and broken.attempts == ["failed", "failed"]
    assert broken.crash_title == "WARNING in team_fn" and not broken.crash_expected
    assert broken.deployed == {"team": ("/builds/team.ko", "ab" * 32)}
    assert by["test_setup_error"].outcome == model.ERROR and "setup broke" in by["test_setup_error"].message
    assert by["test_skipped"].outcome == model.SKIPPED and "no Windows image" in by["test_skipped"].message
    assert {(f.name, f.value) for f in figures} == {("latency_p99_ms", 12.5), ("records_lost", 0.0)}
    assert deployed == [model.Artifact("team", "/builds/team.ko", "ab" * 32, "configured")]

    run = model.Run(
        "r1",
        "nightly",
        "h",
        "0",
        "",
        None,
        None,
        results=results,
        crashes=[model.CrashSeen("WARNING in team_fn", "WARNING", broken.nodeid, False)],
    )
    decided = verdict(run, {}, pytest_exit=1)
    assert not decided.passed and decided.reason == "2 product failures, 1 new crash title; 1 flaky test"


def test_flaky_alone_passes_unless_the_profile_says_otherwise_and_pytest_must_end_normally():
    run = model.Run(
        "r",
        "p",
        "h",
        "0",
        "",
        None,
        None,
        results=[model.TestResult("t::a", model.FLAKY, attempts=["failed", "passed"])],
    )
    assert verdict(run, {}, pytest_exit=1).passed
    strict = verdict(run, {}, fail_on_flaky=True, pytest_exit=1)
    assert not strict.passed and strict.reason == "1 flaky test (the profile fails on flaky tests)"
    interrupted = verdict(run, {}, pytest_exit=2)
    assert not interrupted.passed and "exit code 2" in interrupted.reason
    crashed = verdict(model.Run("r", "p", "h", "0", "", None, None), {}, pytest_exit=3)
    assert crashed.reason == "no test ran (pytest exit code 3)"
    empty = model.Run("r", "p", "h", "0", "", None, None)
    assert verdict(empty, {}, pytest_exit=5).reason == "no test ran (the profile selected none)"


def test_workers_are_the_hosts_capacity_when_hosts_are_configured():
    from hil.config import HilConfig, HostConfig
    from hil.qualify.profiles import resolve
    from hil.qualify.runner import workers_for

    config = HilConfig(hosts=[HostConfig("qemu:///system", 2), HostConfig("qemu+tcp://lab2/system", 3)])
    assert workers_for(resolve("nightly", {}), config) == 5
