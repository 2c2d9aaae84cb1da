"""The qualification history against a real SQLite file and a real PostgreSQL database.

Every behaviour runs on both backends (the ``url`` fixture).  PostgreSQL is the local server
(``scripts/setup.sh`` installs and starts it): this module creates a throwaway role and
database through the local socket as the ``postgres`` user, and drops both at the end.  A
server that does not answer fails these tests with the command that starts it: CI must not
skip the backend a team shares.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from postgres import PostgresServer

from hil import cli
from hil.errors import ConfigError, HilError
from hil.qualify import history as hist
from hil.qualify.history import History
from hil.qualify.model import Artifact, CrashSeen, Figure, Run, TestResult

T0 = datetime(2026, 11, 27, 13, 30, tzinfo=UTC)


def test_a_silent_server_fails_with_the_command_that_starts_it(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"does not answer .* `pg_ctlcluster \d+ main start`"):
        PostgresServer(socket=str(tmp_path))  # no server listens there


@pytest.fixture(scope="module")
def pg_database(pg_server) -> str:
    return pg_server.create_database()


def _count_rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(hist.engine_url(url))
    try:
        with engine.connect() as conn:
            return {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in hist.metadata.sorted_tables
            }
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> Iterator[str]:
    """A history URL with no tables yet: a fresh SQLite file, or the module's PostgreSQL
    database whose tables are dropped after each test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/history.sqlite"
        return
    url = request.getfixturevalue("pg_database")
    yield url
    engine = sa.create_engine(hist.engine_url(url))
    hist.metadata.drop_all(engine)
    engine.dispose()


# --- runs to record ------------------------------------------------------------------------


def make_run(
    run_id: str,
    at: int = 0,
    profile: str = "nightly",
    outcomes: dict[str, str] | None = None,
    crashes: Sequence[str | tuple[str, bool]] = (),
    figures: Sequence[tuple] = (),
    host: str = "lab1",
) -> Run:
    """A run ``at`` hours after T0; ``crashes`` as titles (or (title, expected)), ``figures`` as
    (name, value[, nodeid])."""
    outcomes = outcomes if outcomes is not None else {"suites/a.py::t1": "passed", "suites/a.py::t2": "passed"}
    crash_seen = [
        CrashSeen(c, "BUG", "suites/a.py::t1", False)
        if isinstance(c, str)
        else CrashSeen(c[0], "BUG", "suites/a.py::t1", c[1])
        for c in crashes
    ]
    return Run(
        run_id=run_id,
        profile=profile,
        host=host,
        version="0.1.0",
        guest_kernel="6.1.0-28-amd64",
        started=T0 + timedelta(hours=at),
        ended=T0 + timedelta(hours=at, minutes=62, seconds=5),
        folder=f"/runs/{run_id}",
        results=[
            TestResult(
                nodeid, outcome, duration_s=1.5, attempts=["failed", "passed"] if outcome == "flaky" else [outcome]
            )
            for nodeid, outcome in outcomes.items()
        ],
        crashes=crash_seen,
        figures=[Figure(*f) for f in figures],
        artifacts=[Artifact("kserver", "build/kserver.ko", "ab" * 32, "hil.toml")],
    )


def full_run() -> Run:
    """A run with every field set, aware and naive times mixed, orders that are not sorted."""
    return Run(
        run_id="20261127T133000-lab1-1a2b",
        profile="nightly",
        host="lab1",
        version="0.1.0",
        guest_kernel="6.1.0-28-amd64",
        started=T0,
        ended=T0 + timedelta(minutes=42, microseconds=7),
        folder="/srv/runs/20261127T133000-lab1-1a2b",
        results=[
            TestResult("suites/linux/test_smoke.py::test_boot", "passed", 1.25, ["passed"]),
            TestResult(
                "suites/linux/test_kserver.py::test_echo[big]",
                "flaky",
                3.5,
                ["failed", "passed"],
                message="AssertionError: short read",
                console_excerpt="[  1.0] hil: rx\n",
                artifacts={"console": "t/console.log", "dmesg": "t/dmesg.txt"},
                deployed={"kserver": ("build/kserver.ko", "cd" * 32)},
            ),
            TestResult(
                "suites/linux/test_crash.py::test_oops",
                "failed",
                9.0,
                ["failed"],
                message="BUG: unable to handle page fault in hil_rx",
                crash_title="BUG: unable to handle page fault in hil_rx",
                crash_kind="BUG",
                crash_expected=False,
            ),
            TestResult("suites/linux/test_a.py::test_skip", "skipped", 0.0, ["skipped"], message="no KVM"),
        ],
        crashes=[
            CrashSeen(
                "BUG: unable to handle page fault in hil_rx", "BUG", "suites/linux/test_crash.py::test_oops", False
            ),
            CrashSeen("WARNING in hil_tx", "WARNING", "suites/linux/test_crash.py::test_warn", True),
        ],
        figures=[
            Figure("restore_s", 1.2, "suites/linux/test_smoke.py::test_boot"),
            Figure("records_lost", 0.0),
            Figure("exec_to_sent_p99_ms", 12.75, "suites/stress/test_soak.py::test_soak"),
        ],
        artifacts=[
            Artifact("kserver", "build/kserver.ko", "cd" * 32, "hil.toml"),
            Artifact("linux_agent", "drivers/linux/hil_agent.ko", "ef" * 32, "reference"),
        ],
    )


# --- where the history is ------------------------------------------------------------------


def test_default_url_is_sqlite_in_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_DATA_DIR", str(tmp_path / "data"))
    assert hist.default_url() == f"sqlite:///{tmp_path}/data/history.sqlite"
    assert (tmp_path / "data").is_dir()


def test_data_folder_as_root_and_as_a_user(tmp_path, monkeypatch):
    monkeypatch.delenv("HIL_DATA_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert hist.data_root() == Path("/var/lib/kernel-hil")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert hist.data_root() == tmp_path / "xdg" / "kernel-hil"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hist.data_root() == tmp_path / "home" / ".local" / "share" / "kernel-hil"


@pytest.mark.parametrize(
    "written, driver",
    [
        ("postgresql://u:p@db.lab/hil", "postgresql+psycopg"),
        ("postgres://u@db.lab:5433/hil", "postgresql+psycopg"),
        ("postgresql://u@/hil?host=/var/run/postgresql", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.lab/hil", "postgresql+psycopg"),
        ("sqlite:////srv/history.sqlite", "sqlite"),
    ],
)
def test_urls_as_users_write_them(written, driver):
    url = hist.engine_url(written)
    assert url.drivername == driver
    if "host=" in written:
        assert url.query["host"] == "/var/run/postgresql" and url.database == "hil"


def test_passwords_are_masked():
    assert hist.mask("postgresql://hil:s3cret@db/hil") == "postgresql://hil:***@db/hil"
    assert hist.mask("postgresql://hil@db/hil?password=s3cret&x=1") == "postgresql://hil@db/hil?password=***&x=1"
    assert hist.mask("sqlite:////srv/h.sqlite") == "sqlite:////srv/h.sqlite"


# --- recording and loading -----------------------------------------------------------------


def test_a_run_comes_back_exactly_as_recorded(url):
    run = full_run()
    with History.open(url) as h:
        h.record(run)
        assert h.run(run.run_id) == run
    naive = make_run("naive")
    naive.started, naive.ended = datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 4, 0, 0)
    with History.open(url) as h:  # a second open finds the tables
        h.record(naive)
        assert h.run("naive") == naive
        assert h.run(run.run_id) == run


def test_recording_a_run_again_replaces_it(url):
    with History.open(url) as h:
        h.record(full_run())
        h.record(make_run("other", at=1))
        before = _count_rows(url)
        again = full_run()
        h.record(again)
        assert _count_rows(url) == before
        again.results = again.results[:1]
        again.crashes = []
        again.profile = "pre-release"
        h.record(again)
        assert h.run(again.run_id) == again
        rows = _count_rows(url)
        assert rows["hil_runs"] == 2 and rows["hil_results"] == 1 + 2 and rows["hil_crashes"] == 0


def test_a_run_listing_a_test_twice_is_refused(url):
    run = make_run("dup")
    run.results.append(TestResult(run.results[0].nodeid, "failed"))
    with History.open(url) as h, pytest.raises(HilError, match="lists suites/a.py::t1 twice"):
        h.record(run)


def test_nan_figures_survive(url):
    run = make_run("nan", figures=[("jitter_ms", float("nan"))])
    with History.open(url) as h:
        h.record(run)
        assert math.isnan(h.run("nan").figures[0].value)


def test_an_unknown_run_is_a_clear_error(url):
    with History.open(url) as h:
        with pytest.raises(HilError, match="no run nope in") as err:
            h.run("nope")
        assert "hil history runs" in err.value.fix
        with pytest.raises(HilError, match="no run nope"):
            h.diff("nope", "nope")


def test_a_history_from_a_newer_kernel_hil_is_refused(url):
    History.open(url).close()
    engine = sa.create_engine(hist.engine_url(url))
    with engine.begin() as conn:
        conn.execute(hist.meta.update().values(value=str(hist.SCHEMA_VERSION + 1)))
    engine.dispose()
    with pytest.raises(ConfigError, match="newer kernel-hil") as err:
        History.open(url)
    assert "upgrade kernel-hil" in err.value.fix


# --- queries -------------------------------------------------------------------------------


def test_runs_newest_first_with_counts(url):
    with History.open(url) as h:
        assert h.runs() == [] and h.latest() is None
        h.record(
            make_run(
                "r1",
                at=0,
                outcomes={"t1": "passed", "t2": "failed", "t3": "error", "t4": "skipped", "t5": "flaky"},
                crashes=["BUG in a", "BUG in a", ("WARNING in b", True)],
            )
        )
        h.record(make_run("r3", at=2, profile="pre-release"))
        h.record(make_run("r2", at=1, host="lab2"))
        assert [s.run_id for s in h.runs()] == ["r3", "r2", "r1"]
        assert [s.run_id for s in h.runs(limit=2)] == ["r3", "r2"]
        assert [s.run_id for s in h.runs(profile="nightly")] == ["r2", "r1"]
        r1 = h.runs(profile="nightly", limit=0)[-1]
        assert (r1.passed, r1.failed, r1.flaky, r1.skipped, r1.crashes) == (1, 2, 1, 1, 2)
        assert r1.pass_rate == pytest.approx(2 / 4)
        assert r1.started == T0 and r1.ended - r1.started == timedelta(minutes=62, seconds=5)
        assert h.latest() == "r3" and h.latest("nightly") == "r2" and h.latest("none") is None


def test_crash_history_first_last_and_runs_seen_in(url):
    with History.open(url) as h:
        h.record(make_run("r1", at=0, crashes=["BUG in a", "BUG in a"]))
        h.record(make_run("r2", at=1, crashes=["BUG in a", "WARNING in b"]))
        h.record(make_run("r3", at=2))
        h.record(make_run("r4", at=3, crashes=["BUG in a", "KASAN in c"]))
        known = h.crash_history(["BUG in a", "KASAN in c", "WARNING in b", "never"], before="r4")
        assert set(known) == {"BUG in a", "WARNING in b"}  # KASAN only in the current run: new
        assert known["BUG in a"] == hist.CrashSignature("BUG in a", "r1", "r2", 2)
        assert known["WARNING in b"] == hist.CrashSignature("WARNING in b", "r2", "r2", 1)
        # a report rebuilt for r2 later: only what came before r2 counts
        assert h.crash_history(["BUG in a", "WARNING in b"], before="r2") == {
            "BUG in a": hist.CrashSignature("BUG in a", "r1", "r1", 1)
        }
        # before a run not recorded (yet): every recorded run counts
        assert h.crash_history(["BUG in a"], before="r9")["BUG in a"].count == 3
        assert h.crash_history(["BUG in a"])["BUG in a"].last_run == "r4"
        assert h.crash_history([]) == {}
        assert h.crashes() == [
            hist.CrashSignature("KASAN in c", "r4", "r4", 1),
            hist.CrashSignature("BUG in a", "r1", "r4", 3),
            hist.CrashSignature("WARNING in b", "r2", "r2", 1),
        ]


def test_flaky_tests_over_the_last_runs(url):
    with History.open(url) as h:
        h.record(make_run("r1", at=0, outcomes={"a": "flaky", "b": "passed"}))
        h.record(make_run("r2", at=1, outcomes={"a": "flaky", "b": "flaky", "c": "failed"}))
        h.record(make_run("r3", at=2, outcomes={"a": "passed", "b": "passed"}))
        h.record(make_run("r4", at=3, outcomes={"a": "passed", "b": "passed"}, profile="other"))
        flaky = h.flaky()
        assert [(t.nodeid, t.flaky_runs, t.runs) for t in flaky] == [("a", 2, 4), ("b", 1, 4)]
        assert [(t.nodeid, t.flaky_runs, t.runs) for t in h.flaky(profile="nightly")] == [("a", 2, 3), ("b", 1, 3)]
        assert [(t.nodeid, t.flaky_runs, t.runs) for t in h.flaky(last=2)] == []
        assert [(t.nodeid, t.flaky_runs, t.runs) for t in h.flaky(last=3)] == [("a", 1, 3), ("b", 1, 3)]


def test_diff_between_two_runs(url):
    with History.open(url) as h:
        h.record(
            make_run(
                "a",
                at=0,
                outcomes={
                    "t1": "passed",
                    "t2": "failed",
                    "t3": "skipped",
                    "t4": "error",
                    "t5": "flaky",
                    "gone": "passed",
                },
                crashes=["BUG in old", "WARNING in both"],
                figures=[("p99_ms", 10.0), ("restore_s", 1.0), ("lost", 0.0), ("same", 5.0), ("p99_ms", 12.0, "other")],
            )
        )
        h.record(
            make_run(
                "b",
                at=1,
                outcomes={
                    "t1": "failed",
                    "t2": "passed",
                    "t3": "error",
                    "t4": "flaky",
                    "t5": "passed",
                    "new": "failed",
                },
                crashes=["WARNING in both", "KASAN in new"],
                figures=[("p99_ms", 15.0), ("restore_s", 1.1), ("lost", 3.0), ("same", 5.0)],
            )
        )
        d = h.diff("a", "b")
    assert d.newly_failing == ["t1", "t3"] and d.newly_passing == ["t2", "t4"]
    assert d.new_crashes == ["KASAN in new"] and d.vanished_crashes == ["BUG in old"]
    assert d.moved_figures == [("lost", 0.0, 3.0), ("p99_ms", 12.0, 15.0)]  # 25% > 20%; restore 10% is not


def test_trends_oldest_first(url):
    with History.open(url) as h:
        h.record(
            make_run(
                "r1",
                at=0,
                outcomes={"t1": "passed", "t2": "failed"},
                crashes=["BUG in a", "BUG in a", "WARNING in b", ("WARNING in expected", True)],
                figures=[("p99_ms", 3.0, "x"), ("p99_ms", 7.0, "y")],
            )
        )
        h.record(make_run("r2", at=1, figures=[("restore_s", 1.5)]))
        h.record(make_run("r3", at=2, profile="other"))
        points = h.trends("nightly")
        assert [p.run_id for p in points] == ["r1", "r2"]
        assert points[0].pass_rate == 0.5 and points[0].crash_titles == 2 and points[0].figures == {"p99_ms": 7.0}
        assert points[1].pass_rate == 1.0 and points[1].crash_titles == 0 and points[1].figures == {"restore_s": 1.5}
        assert points[0].started == T0
        assert [p.run_id for p in h.trends(last=2)] == ["r2", "r3"]


# --- errors a user can cause -----------------------------------------------------------------


def _one_line(err: HilError) -> None:
    assert "\n" not in err.problem and err.fix and "\n" not in err.fix
    assert "Traceback" not in str(err) and "sqlalche.me" not in str(err)


def test_an_unreachable_server_is_one_clear_line():
    with pytest.raises(ConfigError) as err:
        History.open("postgresql://hil:s3cret@127.0.0.1:1/hil")
    _one_line(err.value)
    assert "postgresql://hil:***@127.0.0.1:1/hil" in err.value.problem and "s3cret" not in str(err.value)
    assert "refused" in err.value.problem and "start the server" in err.value.fix


@pytest.mark.parametrize(
    "bad, says",
    [
        ("nonsense", "not a database URL"),
        ("postgresql://hil:s3cret@db:port/hil", "not a database URL"),
        ("mysql://hil@db/hil", "SQLite or PostgreSQL, not mysql"),
        ("sqlite:////no/such/folder/history.sqlite", "folder /no/such/folder does not exist"),
    ],
)
def test_a_malformed_url_is_one_clear_line(bad, says):
    with pytest.raises(ConfigError, match=says) as err:
        History.open(bad)
    _one_line(err.value)
    assert "s3cret" not in str(err.value)


def test_a_missing_database_and_a_wrong_password_name_the_fix(pg_database):
    missing = pg_database.rsplit("/", 1)[0] + "/hil_no_such_db"
    with pytest.raises(ConfigError, match='database "hil_no_such_db" does not exist') as err:
        History.open(missing)
    _one_line(err.value)
    assert "createdb" in err.value.fix and ":***@" in err.value.problem
    wrong = pg_database.replace(f":{sa.engine.make_url(pg_database).password}@", ":wrong@")
    with pytest.raises(ConfigError, match="password authentication failed") as err:
        History.open(wrong)
    _one_line(err.value)


# --- the command ---------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = cli.main(["history", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def _record_story(url: str) -> None:
    with History.open(url) as h:
        h.record(
            make_run(
                "20261127T133000-lab1-aaaa",
                at=0,
                outcomes={"suites/a.py::t1": "passed", "suites/a.py::t2": "flaky", "suites/a.py::t3": "passed"},
                crashes=["BUG in hil_rx"],
                figures=[("p99_ms", 10.0)],
            )
        )
        h.record(
            make_run(
                "20261127T143000-lab1-bbbb",
                at=1,
                outcomes={"suites/a.py::t1": "failed", "suites/a.py::t2": "passed", "suites/a.py::t3": "passed"},
                crashes=["KASAN: use-after-free in hil_tx"],
                figures=[("p99_ms", 20.0)],
            )
        )


def test_cli_runs(url, capsys):
    _record_story(url)
    code, out, err = _cli(capsys, "runs", "--history", url)
    assert code == 0 and err == ""
    assert out[0].split() == [
        "run",
        "profile",
        "host",
        "started",
        "duration",
        "passed",
        "failed",
        "flaky",
        "skipped",
        "crashes",
        "pass",
        "rate",
    ]
    assert out[1].split() == [
        "20261127T143000-lab1-bbbb",
        "nightly",
        "lab1",
        "2026-11-27",
        "14:30",
        "1h02m",
        "2",
        "1",
        "0",
        "0",
        "1",
        "66.7%",
    ]
    assert out[2].split()[0] == "20261127T133000-lab1-aaaa" and out[2].endswith("100.0%")
    assert len({len(line) for line in out}) == 1  # aligned: the last column is right-aligned
    code, out, _ = _cli(capsys, "runs", "--history", url, "--limit", "1", "--profile", "nightly")
    assert len(out) == 2
    code, out, _ = _cli(capsys, "runs", "--history", url, "--profile", "weekly")
    assert out == [f"no runs of profile weekly in {hist.mask(url)}"]


def test_cli_crashes_and_flaky(url, capsys):
    _record_story(url)
    code, out, _ = _cli(capsys, "crashes", "--history", url)
    assert code == 0
    assert [line.split("  ")[0] for line in out] == ["title", "KASAN: use-after-free in hil_tx", "BUG in hil_rx"]
    assert out[1].split()[-3:] == ["20261127T143000-lab1-bbbb", "20261127T143000-lab1-bbbb", "1"]
    code, out, _ = _cli(capsys, "flaky", "--history", url, "--last", "5")
    assert code == 0 and out[0].split() == ["test", "flaky"]
    assert out[1].split() == ["suites/a.py::t2", "1/2"]


def test_cli_diff(url, capsys):
    _record_story(url)
    code, out, _ = _cli(capsys, "diff", "20261127T133000-lab1-aaaa", "20261127T143000-lab1-bbbb", "--history", url)
    assert code == 0
    assert out[0] == "20261127T133000-lab1-aaaa -> 20261127T143000-lab1-bbbb"
    text = "\n".join(out)
    assert "newly failing (1)\n  suites/a.py::t1\n" in text
    assert "newly passing (0): none" in text
    assert "new crashes (1)\n  KASAN: use-after-free in hil_tx\n" in text
    assert "vanished crashes (1)\n  BUG in hil_rx\n" in text
    assert "figures moved by more than 20% (1)" in text
    assert out[-1].split() == ["p99_ms", "10", "20", "+100%"]


def test_cli_errors_are_one_line_without_traceback(url, capsys):
    _record_story(url)
    code, out, err = _cli(capsys, "diff", "20261127T133000-lab1-aaaa", "nope", "--history", url)
    assert code == 2 and out == []
    assert err.splitlines() == [
        f"hil history: error: no run nope in {hist.mask(url)}",
        "  fix: list the recorded runs: hil history runs",
    ]
    assert "***" in err or url.startswith("sqlite")  # the PostgreSQL password never shows
    code, _, err = _cli(capsys, "runs", "--history", "postgresql://hil:s3cret@127.0.0.1:1/hil")
    assert code == 2 and err.startswith(
        "hil history: error: cannot open the history postgresql://hil:***@127.0.0.1:1/hil"
    )
    assert "Traceback" not in err and "s3cret" not in err and len(err.splitlines()) == 2


def test_cli_finds_the_history_in_hil_toml_else_the_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HIL_DATA_DIR", str(tmp_path / "data"))
    code, out, _ = _cli(capsys, "runs")
    assert code == 0 and out == [f"no runs in sqlite:///{tmp_path}/data/history.sqlite"]
    (tmp_path / "hil.toml").write_text(f'history = "sqlite:///{tmp_path}/team.sqlite"\n')
    from hil.config import HilConfig

    if "history" not in HilConfig.__dataclass_fields__:
        pytest.skip("hil.toml has no history key yet")  # only before config.py learns it
    code, out, _ = _cli(capsys, "runs")
    assert out == [f"no runs in sqlite:///{tmp_path}/team.sqlite"]


# --- several processes at once -------------------------------------------------------------

WORKERS, RUNS_EACH, TESTS_PER_RUN = 4, 8, 25


def _record_concurrently(url: str, worker: int, start) -> None:
    """One process: open the (maybe fresh) history together with the others, then record its
    runs, and every time the one run all workers share."""
    start.wait(timeout=60)
    with History.open(url) as h:
        for i in range(RUNS_EACH):
            outcomes = {f"suites/s.py::test_{n}": "passed" for n in range(TESTS_PER_RUN)}
            for run_id in (f"w{worker}-{i:02d}", "shared"):
                h.record(
                    make_run(
                        run_id,
                        at=i,
                        host=f"host{worker}",
                        outcomes=outcomes,
                        crashes=[f"BUG in w{worker}", "WARNING in all"],
                        figures=[("p99_ms", float(i)), ("restore_s", 1.0)],
                    )
                )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_recording_at_once_lose_no_row(backend, tmp_path, request):
    url = (
        f"sqlite:///{tmp_path}/history.sqlite"
        if backend == "sqlite"
        else request.getfixturevalue("pg_server").create_database()
    )  # fresh: the tables race too
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_record_concurrently, args=(url, w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    n_runs = WORKERS * RUNS_EACH + 1
    assert _count_rows(url) == {
        "hil_runs": n_runs,
        "hil_results": n_runs * TESTS_PER_RUN,
        "hil_crashes": n_runs * 2,
        "hil_figures": n_runs * 2,
        "hil_artifacts": n_runs,
        "hil_meta": 1,
    }
    with History.open(url) as h:
        assert len(h.run("shared").results) == TESTS_PER_RUN
        assert h.crash_history(["WARNING in all"])["WARNING in all"].count == n_runs


def test_a_write_waits_out_a_lock_held_past_the_busy_timeout(tmp_path, monkeypatch):
    """SQLite: "database is locked" after the busy timeout is retried, not lost."""
    url = f"sqlite:///{tmp_path}/history.sqlite"
    monkeypatch.setattr(hist, "BUSY_TIMEOUT_S", 0.05)
    retried = threading.Event()
    transient = hist._transient

    def noting(exc):
        if transient(exc):
            retried.set()
            return True
        return False

    monkeypatch.setattr(hist, "_transient", noting)
    h = History.open(url)
    holder = sqlite3.connect(tmp_path / "history.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
    errors: list[BaseException] = []

    def record():
        try:
            h.record(make_run("r1"))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=record)
    writer.start()
    assert retried.wait(timeout=30), "the write never met the lock"
    holder.execute("COMMIT")
    writer.join(timeout=60)
    holder.close()
    assert not writer.is_alive() and errors == []
    assert h.latest() == "r1"
    h.close()
