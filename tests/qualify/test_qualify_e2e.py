"""``hil qualify`` end to end, as a team runs it: a project of its own with a profile, two runs in
a row against one history (SQLite and a real PostgreSQL), real guests, a real crash, a test that
fails once and passes on a fresh guest, and the report read back in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil_linux

TEAM_TESTS = """
import pathlib

STATE = pathlib.Path(__file__).with_name("flaky-state")


def test_guest_answers(linux_guest):
    assert linux_guest.run("echo ok").check().text.strip() == "ok"


def test_a_panic_is_caught(linux_guest):
    with linux_guest.expect_crash(kind="PANIC", timeout=30) as crash:
        linux_guest.spawn("echo c > /proc/sysrq-trigger")
    assert crash.report.title == "kernel panic: sysrq triggered crash"


def test_fails_once_then_passes():
    first = not STATE.exists()
    STATE.write_text("seen")
    assert not first, "the first attempt fails on purpose"
"""

HIL_TOML = """
[profiles.team]
paths = ["tests"]
reruns = 1
workers = 1
soak_s = 0
"""


def _qualify(project: Path, history: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HIL_SOAK"))}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "hil.cli",
            "qualify",
            "--profile",
            "team",
            "--history",
            history,
            "--out",
            str(project / "runs"),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )


def _history(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "hil.cli", "history", *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_two_runs_in_a_row_remember_crashes_flaky_tests_and_trends(tmp_path, history_url):
    from hil.qualify.browser import load

    project = tmp_path / "team"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_team.py").write_text(TEAM_TESTS)
    (project / "hil.toml").write_text(HIL_TOML)

    first = _qualify(project, history_url)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert "1 flaky" in first.stdout and "0 failed" in first.stdout
    report1 = Path(re.fullmatch(r"report: (.+)", first.stdout.strip().splitlines()[-1]).group(1))
    second = _qualify(project, history_url)
    assert second.returncode == 0, second.stdout[-5000:] + second.stderr[-2000:]
    report2 = Path(re.fullmatch(r"report: (.+)", second.stdout.strip().splitlines()[-1]).group(1))
    run1, run2 = report1.parent.name, report2.parent.name

    page1 = load(report1, screenshot=tmp_path / "report1.png")
    page2 = load(report2, screenshot=tmp_path / "report2.png")
    assert page1.console_errors == [] and page2.console_errors == []
    assert "kernel panic: sysrq triggered crash" in page1.text and "new" in page1.crash_marks
    assert page2.crash_marks == [f"known (first seen {run1}, seen 1 time)"]
    assert page2.trend_points >= 2
    assert page1.counts["flaky"] == 1 and page2.counts["flaky"] == 0 and page2.counts["passed"] == 3

    runs = _history("runs", "--history", history_url)
    assert run1 in runs and run2 in runs
    crashes = _history("crashes", "--history", history_url)
    assert "kernel panic: sysrq triggered crash" in crashes and run1 in crashes
    flaky = _history("flaky", "--history", history_url)
    assert "test_fails_once_then_passes" in flaky and "1/2" in flaky
