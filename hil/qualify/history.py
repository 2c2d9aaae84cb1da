"""The qualification history: every run in one database, so a run knows what is new.

One schema written with SQLAlchemy Core (tables and SQL expressions, no ORM: the model's
dataclasses stay plain data) that works the same on SQLite, the default, a file in the user's
data folder, and on PostgreSQL, the server a team shares between its lab hosts.  Users write
PostgreSQL URLs as libpq does (``postgresql://user:password@host/db``,
``postgresql://user@/db?host=/var/run/postgresql``); they are driven by psycopg 3.

Several processes (xdist workers, several lab hosts) record at once without losing a row:

- SQLite runs in WAL mode (readers never wait for the writer) with a busy timeout, and a
  writing transaction starts with ``BEGIN IMMEDIATE``, so writers queue for the lock up front
  instead of failing half-way; "database is locked" past the timeout is retried.
- PostgreSQL records a run in one transaction, holding an advisory lock on the run's id so that
  two writers of the same run queue instead of deadlocking; a serialization failure or a
  deadlock is still retried.  Readers see one snapshot.
- Creating the schema is idempotent and serialised (``BEGIN IMMEDIATE`` / an advisory lock), so
  several processes may open a fresh database together.

Times are stored as the ISO 8601 text the run gave (aware or naive, back exactly as it was) plus
a UTC sort key (a naive time is the recording host's local time) that orders runs across hosts.

What the counts mean (one choice each, used everywhere):

- a crash signature's ``count`` is the number of *runs* its title was seen in, not the number of
  tests that hit it: one bug crashing ten tests of a run is one sighting;
- :class:`RunSummary` ``failed`` counts ``failed`` and ``error``; its ``crashes`` and a trend
  point's ``crash_titles`` leave out expected crashes (tests that crash the guest on purpose);
- a figure recorded several times in one run (one per test) counts with its largest value: the
  worst case for latencies (``*_p99_ms``, ``restore_s``) and losses (``records_lost``).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from hil.errors import ConfigError, HilError
from hil.qualify.model import (
    ERROR,
    FAILED,
    FLAKY,
    PASSED,
    SKIPPED,
    Artifact,
    CrashSeen,
    CrashSignature,
    Figure,
    FlakyTest,
    Run,
    RunDiff,
    RunSummary,
    TestResult,
    TrendPoint,
)

SCHEMA_VERSION = 1
"""Bumped when the tables change; a database written by a newer kernel-hil is refused."""

BUSY_TIMEOUT_S = 30.0
"""How long SQLite waits for another process's write before "database is locked"."""

RETRY_FOR_S = 120.0
"""How long a write is retried on lock contention, serialization failures and deadlocks."""

URL_FIX = (
    "write sqlite:////ABSOLUTE/PATH/history.sqlite, or postgresql://USER:PASSWORD@HOST/DB "
    "(postgresql://USER@/DB?host=/var/run/postgresql for the local socket)"
)

metadata = sa.MetaData()

runs = sa.Table(
    "hil_runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("guest_kernel", sa.Text, nullable=False),
    sa.Column("folder", sa.Text, nullable=False),
    sa.Column("started", sa.Text, nullable=False),  # ISO 8601 as the run gave it
    sa.Column("ended", sa.Text, nullable=False),
    sa.Column("started_utc", sa.DateTime, nullable=False),  # the order of runs
    sa.Index("hil_runs_started", "started_utc", "run_id"),
    sa.Index("hil_runs_profile_started", "profile", "started_utc", "run_id"),
)


def _run_fk() -> sa.Column:
    return sa.Column("run_id", sa.Text, sa.ForeignKey("hil_runs.run_id", ondelete="CASCADE"), primary_key=True)


artifacts = sa.Table(
    "hil_artifacts",
    metadata,
    _run_fk(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),  # order in Run.artifacts
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
)

results = sa.Table(
    "hil_results",
    metadata,
    _run_fk(),
    sa.Column("nodeid", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),  # order in Run.results
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("attempts", sa.JSON, nullable=False),
    sa.Column("duration_s", sa.Double, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("crash_title", sa.Text, nullable=False),
    sa.Column("crash_kind", sa.Text, nullable=False),
    sa.Column("crash_expected", sa.Boolean, nullable=False),
    sa.Column("console_excerpt", sa.Text, nullable=False),
    sa.Column("artifacts", sa.JSON, nullable=False),  # name -> path
    sa.Column("deployed", sa.JSON, nullable=False),  # name -> [path, sha256]
)

crashes = sa.Table(
    "hil_crashes",
    metadata,
    _run_fk(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("nodeid", sa.Text, nullable=False),
    sa.Column("expected", sa.Boolean, nullable=False),
    sa.Index("hil_crashes_title", "title", "run_id"),
)

figures = sa.Table(
    "hil_figures",
    metadata,
    _run_fk(),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("value", sa.Double, nullable=True),  # SQLite stores NaN as NULL
    sa.Column("nodeid", sa.Text, nullable=False),
)

meta = sa.Table(
    "hil_meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

CHILDREN = (results, crashes, figures, artifacts)
_NEWEST = (runs.c.started_utc.desc(), runs.c.run_id.desc())
_SCHEMA_LOCK = 0x68696C5F686973  # "hil_his": PostgreSQL advisory lock held while creating tables


# --- where the history is ------------------------------------------------------------------


def data_root() -> Path:
    """The user's data folder: ``HIL_DATA_DIR``, else ``/var/lib/kernel-hil`` as root, else
    ``${XDG_DATA_HOME:-~/.local/share}/kernel-hil``.  Data, not cache: deleting it loses history."""
    if env := os.environ.get("HIL_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/kernel-hil")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "kernel-hil"


def default_url() -> str:
    """The SQLite history in :func:`data_root` (created if missing)."""
    root = data_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the history folder {root}: {exc.strerror}",
            "set HIL_DATA_DIR to a folder you can write, or pass --history URL",
        ) from None
    return f"sqlite:///{(root / 'history.sqlite').resolve()}"


def mask(url: str) -> str:
    """``url`` as the user wrote it, with its password hidden."""
    url = re.sub(r"(://[^/:@?]*:)[^@/?]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


def engine_url(url: str) -> URL:
    """The SQLAlchemy URL for a history URL as users write it: ``postgresql://`` and
    ``postgres://`` are driven by psycopg 3; only SQLite and PostgreSQL are accepted."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"history URL {mask(url)!r} is not a database URL ({exc})", URL_FIX) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        driver = parsed.drivername.partition("+")[2] or "psycopg"
        return parsed.set(drivername=f"postgresql+{driver}")
    if backend != "sqlite":
        raise ConfigError(
            f"history URL {mask(url)!r}: kernel-hil keeps its history in SQLite or PostgreSQL, not {backend}", URL_FIX
        )
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        folder = Path(parsed.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise ConfigError(
                f"history URL {mask(url)!r}: folder {folder} does not exist",
                f"create it (mkdir -p {folder}) or choose another path",
            )
    return parsed


# --- engines and errors --------------------------------------------------------------------


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    args: dict[str, object] = {}
    if "connect_timeout" not in url.query:
        args["connect_timeout"] = 10  # a firewalled server fails in seconds, not minutes
    if "application_name" not in url.query:
        args["application_name"] = "kernel-hil"
    return sa.create_engine(url, connect_args=args, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection, _record) -> None:
    # pysqlite's own transaction handling would not begin before DDL and cannot BEGIN IMMEDIATE:
    # turn it off and let _sqlite_begin open every transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # persistent in the file; readers never block
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, safe with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock first (waiting up to the busy timeout) rather than reading
    # under a snapshot it may not upgrade later.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("hil_write") else "BEGIN")


def _message(exc: BaseException) -> str:
    """The driver's message, first line only (psycopg adds hints on further lines)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [" ".join(line.split()) for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def _fix(url: URL, message: str) -> str:
    low = message.lower()
    if "does not exist" in low and "database" in low:
        owner = f" -O {url.username}" if url.username else ""
        return f"create it (as the postgres user: createdb{owner} {url.database}) or fix the database name in the URL"
    if "authentication failed" in low or "password" in low or "role" in low:
        return "fix the user and password in the URL (or the server's pg_hba.conf)"
    if any(
        s in low
        for s in (
            "refused",
            "could not connect",
            "timeout",
            "timed out",
            "no such file",
            "could not translate host",
            "name or service",
        )
    ):
        return "start the server (Debian: pg_ctlcluster <version> main start) or fix the host and port in the URL"
    if "unable to open database file" in low or "readonly" in low or "read-only" in low:
        return "check that the file's folder exists and that you may write it"
    if "locked" in low:
        return "another process held the history too long; run again"
    return "check the history URL (--history, hil.toml's history, else the SQLite file in the data folder)"


def _transient(exc: sa_exc.DBAPIError) -> bool:
    """Worth running the transaction again: lock contention, not a mistake."""
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        return "locked" in str(orig) or "busy" in str(orig)
    return getattr(orig, "sqlstate", None) in ("40001", "40P01")  # serialization failure, deadlock


def _lock_key(run_id: str) -> int:
    """A PostgreSQL advisory lock key (signed 64 bits) for one run."""
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big", signed=True)


def _utc(when: datetime) -> datetime:
    """The sort key of a time: UTC without tzinfo (a naive time is this host's local time)."""
    return when.astimezone(UTC).replace(tzinfo=None)


def _pass_rate(counts: dict[str, int]) -> float:
    """As :attr:`Run.pass_rate`: passed and flaky over everything that ran; 1.0 when nothing ran."""
    ran = sum(n for outcome, n in counts.items() if outcome != SKIPPED)
    return (counts.get(PASSED, 0) + counts.get(FLAKY, 0)) / ran if ran else 1.0


T = TypeVar("T")


# --- the history ---------------------------------------------------------------------------


class History:
    """The run history in one database.  Open with :meth:`open`; close (or use ``with``)."""

    def __init__(self, engine: Engine, url: str):
        self._engine = engine
        self._sa_url = engine.url
        self._pg = engine.dialect.name == "postgresql"
        self.url = mask(url)

    @classmethod
    def open(cls, url: str | None = None) -> History:
        """Open the history at ``url`` (None: :func:`default_url`), creating its tables if
        missing.  Any problem (a malformed URL, a server that does not answer, a missing
        database, a bad password) is one :class:`ConfigError` naming the URL and the fix."""
        url = url or default_url()
        sa_url = engine_url(url)
        try:
            engine = _create_engine(sa_url)
        except ImportError as exc:  # an explicit driver that is not installed (+psycopg2...)
            raise ConfigError(
                f"history URL {mask(url)!r}: database driver missing ({exc})",
                "write postgresql://... (psycopg 3 comes with kernel-hil)",
            ) from None
        history = cls(engine, url)
        try:
            history._ensure_schema()
        except HilError as exc:
            engine.dispose()
            raise ConfigError(exc.problem, exc.fix) from None
        except BaseException:
            engine.dispose()
            raise
        return history

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"History({self.url!r})"

    # --- transactions ---

    def _error(self, action: str, exc: BaseException) -> HilError:
        message = _message(exc)
        return HilError(f"cannot {action} {self.url}: {message}", _fix(self._sa_url, message))

    @contextmanager
    def _reading(self, action: str = "read the history") -> Iterator[Connection]:
        """One read-only transaction that sees one snapshot of the history."""
        try:
            with self._engine.connect() as conn:
                if self._pg:
                    conn.execution_options(isolation_level="REPEATABLE READ")
                yield conn
        except sa_exc.DBAPIError as exc:
            raise self._error(action, exc) from None

    def _writing(self, action: str, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one writing transaction, again while the database is contended."""
        deadline = time.monotonic() + RETRY_FOR_S
        delay = 0.02
        while True:
            try:
                with self._engine.connect() as conn:
                    conn.execution_options(hil_write=True)
                    with conn.begin():
                        return work(conn)
            except sa_exc.DBAPIError as exc:
                if not _transient(exc) or time.monotonic() > deadline:
                    raise self._error(action, exc) from None
            # back off with jitter so that contending writers do not retry in lockstep
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)

    def _ensure_schema(self) -> None:
        with self._reading("open the history") as conn:
            if self._schema_version(conn) == SCHEMA_VERSION:
                return
        self._writing("create the tables of the history", self._create_schema)

    @staticmethod
    def _schema_version(conn: Connection) -> int | None:
        if not sa.inspect(conn).has_table(meta.name):
            return None
        value = conn.scalar(sa.select(meta.c.value).where(meta.c.key == "schema_version"))
        return int(value) if value is not None else None

    def _create_schema(self, conn: Connection) -> None:
        if self._pg:  # SQLite is already serialised by BEGIN IMMEDIATE
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
        metadata.create_all(conn)  # checks first: only what is missing
        version = self._schema_version(conn)
        if version is None:
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif version > SCHEMA_VERSION:
            raise ConfigError(
                f"history {self.url} was written by a newer kernel-hil "
                f"(schema {version}, this one knows {SCHEMA_VERSION})",
                "upgrade kernel-hil, or use another history URL",
            )

    # --- writing ---

    def record(self, run: Run) -> None:
        """Store ``run`` in one transaction; a run recorded again replaces the earlier copy."""
        rows = _rows(run)

        def write(conn: Connection) -> None:
            if self._pg:  # writers of the same run queue here instead of deadlocking on its rows
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(run.run_id))))
            for table in (*CHILDREN, runs):
                conn.execute(table.delete().where(table.c.run_id == run.run_id))
            conn.execute(runs.insert(), rows[runs])
            for table in CHILDREN:
                if rows[table]:
                    conn.execute(table.insert(), rows[table])

        self._writing(f"record run {run.run_id} in the history", write)

    # --- reading ---

    def run(self, run_id: str) -> Run:
        """The whole run as it was recorded."""
        with self._reading() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
            if row is None:
                raise self._no_run(run_id)
            child = {
                t: conn.execute(sa.select(t).where(t.c.run_id == run_id).order_by(t.c.seq)).mappings().all()
                for t in CHILDREN
            }
        return Run(
            run_id=row["run_id"],
            profile=row["profile"],
            host=row["host"],
            version=row["version"],
            guest_kernel=row["guest_kernel"],
            folder=row["folder"],
            started=datetime.fromisoformat(row["started"]),
            ended=datetime.fromisoformat(row["ended"]),
            results=[
                TestResult(
                    nodeid=r["nodeid"],
                    outcome=r["outcome"],
                    duration_s=r["duration_s"],
                    attempts=list(r["attempts"]),
                    message=r["message"],
                    crash_title=r["crash_title"],
                    crash_kind=r["crash_kind"],
                    crash_expected=bool(r["crash_expected"]),
                    console_excerpt=r["console_excerpt"],
                    artifacts=dict(r["artifacts"]),
                    deployed={k: (v[0], v[1]) for k, v in r["deployed"].items()},
                )
                for r in child[results]
            ],
            crashes=[CrashSeen(c["title"], c["kind"], c["nodeid"], bool(c["expected"])) for c in child[crashes]],
            figures=[
                Figure(f["name"], float("nan") if f["value"] is None else f["value"], f["nodeid"])
                for f in child[figures]
            ],
            artifacts=[Artifact(a["name"], a["path"], a["sha256"], a["origin"]) for a in child[artifacts]],
        )

    def _no_run(self, run_id: str) -> HilError:
        return HilError(f"no run {run_id} in {self.url}", "list the recorded runs: hil history runs")

    def latest(self, profile: str | None = None) -> str | None:
        """The newest run's id (of ``profile``), None in an empty history."""
        with self._reading() as conn:
            return conn.scalar(sa.select(runs.c.run_id).where(*_of(profile)).order_by(*_NEWEST).limit(1))

    def runs(self, limit: int = 50, profile: str | None = None) -> list[RunSummary]:
        """The newest ``limit`` runs (all when ``limit <= 0``), newest first, with their counts."""
        with self._reading() as conn:
            recent = conn.execute(_recent(runs, limit, profile)).mappings().all()
            ids = _recent(runs.c.run_id, limit, profile)
            counts = _outcome_counts(conn, ids)
            crash_count: dict[str, int] = dict(
                conn.execute(
                    sa.select(crashes.c.run_id, sa.func.count())
                    .where(crashes.c.run_id.in_(ids), crashes.c.expected == sa.false())
                    .group_by(crashes.c.run_id)
                ).all()
            )
        out = []
        for r in recent:
            c = counts.get(r["run_id"], {})
            out.append(
                RunSummary(
                    run_id=r["run_id"],
                    profile=r["profile"],
                    host=r["host"],
                    started=datetime.fromisoformat(r["started"]),
                    ended=datetime.fromisoformat(r["ended"]),
                    passed=c.get(PASSED, 0),
                    failed=c.get(FAILED, 0) + c.get(ERROR, 0),
                    flaky=c.get(FLAKY, 0),
                    skipped=c.get(SKIPPED, 0),
                    crashes=crash_count.get(r["run_id"], 0),
                    pass_rate=_pass_rate(c),
                    guest_kernel=r["guest_kernel"],
                    version=r["version"],
                )
            )
        return out

    def crash_history(self, titles: Iterable[str], before: str | None = None) -> dict[str, CrashSignature]:
        """For each of ``titles`` seen earlier, where: first run, last run, and the number of runs
        it was seen in.  ``before`` is the current run: it does not count, nor do runs that started
        after it once it is recorded (so a report rebuilt later says what was new *then*).
        Titles never seen are absent: they are new."""
        wanted = sorted(set(titles))
        if not wanted:
            return {}
        with self._reading() as conn:
            where = []
            if before is not None:
                where.append(runs.c.run_id != before)
                start = conn.scalar(sa.select(runs.c.started_utc).where(runs.c.run_id == before))
                if start is not None:
                    where.append(
                        sa.or_(runs.c.started_utc < start, sa.and_(runs.c.started_utc == start, runs.c.run_id < before))
                    )
            rows = [
                row
                for i in range(0, len(wanted), 500)  # bounded IN lists
                for row in conn.execute(_sightings(crashes.c.title.in_(wanted[i : i + 500]), *where)).all()
            ]
        return {s.title: s for s in _signatures(rows)}

    def crashes(self, profile: str | None = None) -> list[CrashSignature]:
        """Every crash title of the history (of runs of ``profile``), most recently seen first."""
        with self._reading() as conn:
            rows = conn.execute(_sightings(*_of(profile))).all()
        last_seen: dict[str, tuple[datetime, str]] = {}
        for title, run_id, started in rows:
            last_seen[title] = max(last_seen.get(title, (started, run_id)), (started, run_id))
        return sorted(_signatures(rows), key=lambda s: (last_seen[s.title], s.title), reverse=True)

    def flaky(self, last: int = 20, profile: str | None = None) -> list[FlakyTest]:
        """Tests that were flaky at least once in the last ``last`` runs: in how many of those
        runs, out of how many runs they ran in.  The flakiest first."""
        is_flaky = sa.case((results.c.outcome == FLAKY, 1), else_=0)
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(results.c.nodeid, sa.func.sum(is_flaky), sa.func.count())
                .where(results.c.run_id.in_(_recent(runs.c.run_id, last, profile)))
                .group_by(results.c.nodeid)
                .having(sa.func.sum(is_flaky) > 0)
            ).all()
        tests = [FlakyTest(nodeid, int(n_flaky), int(n_runs)) for nodeid, n_flaky, n_runs in rows]
        return sorted(tests, key=lambda t: (-t.fail_ratio, -t.flaky_runs, t.nodeid))

    def diff(self, a: str, b: str, threshold: float = 0.2) -> RunDiff:
        """What changed from run ``a`` to run ``b``: tests that started or stopped failing,
        crash titles that appeared or vanished, figures that moved by more than ``threshold``
        (relative to ``a``; any change from 0 counts)."""
        with self._reading() as conn:
            found = set(conn.scalars(sa.select(runs.c.run_id).where(runs.c.run_id.in_([a, b]))))
            for run_id in (a, b):
                if run_id not in found:
                    raise self._no_run(run_id)
            outcome = {
                r: dict(conn.execute(sa.select(results.c.nodeid, results.c.outcome).where(results.c.run_id == r)).all())
                for r in (a, b)
            }
            titles = {r: set(conn.scalars(sa.select(crashes.c.title).where(crashes.c.run_id == r))) for r in (a, b)}
            figs = {r: _figures(conn, figures.c.run_id == r).get(r, {}) for r in (a, b)}
        good, bad = (PASSED, FLAKY, SKIPPED), (FAILED, ERROR)
        both = outcome[a].keys() & outcome[b].keys()
        moved = []
        for name in sorted(figs[a].keys() & figs[b].keys()):
            va, vb = figs[a][name], figs[b][name]
            change = abs(vb - va) / abs(va) if va else (0.0 if vb == va else float("inf"))
            if change > threshold:
                moved.append((name, va, vb))
        return RunDiff(
            run_a=a,
            run_b=b,
            newly_failing=sorted(n for n in both if outcome[a][n] in good and outcome[b][n] in bad),
            newly_passing=sorted(n for n in both if outcome[a][n] in bad and outcome[b][n] in (PASSED, FLAKY)),
            new_crashes=sorted(titles[b] - titles[a]),
            vanished_crashes=sorted(titles[a] - titles[b]),
            moved_figures=moved,
        )

    def trends(self, profile: str | None = None, last: int = 20) -> list[TrendPoint]:
        """The last ``last`` runs (of ``profile``), oldest first: pass rate, distinct unexpected
        crash titles and figures (each name's largest value in the run)."""
        with self._reading() as conn:
            recent = conn.execute(_recent(sa.select(runs.c.run_id, runs.c.started), last, profile)).all()
            ids = _recent(runs.c.run_id, last, profile)
            counts = _outcome_counts(conn, ids)
            titles: dict[str, int] = dict(
                conn.execute(
                    sa.select(crashes.c.run_id, sa.func.count(sa.distinct(crashes.c.title)))
                    .where(crashes.c.run_id.in_(ids), crashes.c.expected == sa.false())
                    .group_by(crashes.c.run_id)
                ).all()
            )
            figs = _figures(conn, figures.c.run_id.in_(ids))
        return [
            TrendPoint(
                run_id=run_id,
                started=datetime.fromisoformat(started),
                pass_rate=_pass_rate(counts.get(run_id, {})),
                crash_titles=titles.get(run_id, 0),
                figures=figs.get(run_id, {}),
            )
            for run_id, started in reversed(recent)
        ]


# --- query pieces --------------------------------------------------------------------------


def _of(profile: str | None) -> list:
    return [] if profile is None else [runs.c.profile == profile]


def _recent(what, limit: int, profile: str | None) -> sa.Select:
    """``what`` of the newest ``limit`` runs (all when ``limit <= 0``), newest first.  Used as
    a subquery (``run_id IN (...)``) rather than a list of ids: no bound-parameter limit."""
    query = (what if isinstance(what, sa.Select) else sa.select(what)).where(*_of(profile)).order_by(*_NEWEST)
    return query.limit(limit) if limit > 0 else query


def _outcome_counts(conn: Connection, ids: sa.Select) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for run_id, outcome, n in conn.execute(
        sa.select(results.c.run_id, results.c.outcome, sa.func.count())
        .where(results.c.run_id.in_(ids))
        .group_by(results.c.run_id, results.c.outcome)
    ):
        out.setdefault(run_id, {})[outcome] = n
    return out


def _figures(conn: Connection, *where) -> dict[str, dict[str, float]]:
    """run -> figure name -> its largest value in that run."""
    out: dict[str, dict[str, float]] = {}
    for run_id, name, value in conn.execute(
        sa.select(figures.c.run_id, figures.c.name, sa.func.max(figures.c.value))
        .where(*where)
        .group_by(figures.c.run_id, figures.c.name)
    ):
        if value is not None:
            out.setdefault(run_id, {})[name] = value
    return out


def _sightings(*where) -> sa.Select:
    """(title, run, run's start) once per run a title was seen in, oldest first."""
    return (
        sa.select(crashes.c.title, runs.c.run_id, runs.c.started_utc)
        .distinct()
        .join(runs, runs.c.run_id == crashes.c.run_id)
        .where(*where)
        .order_by(runs.c.started_utc, runs.c.run_id)
    )


def _signatures(rows: Iterable) -> list[CrashSignature]:
    """Crash signatures from :func:`_sightings` rows (oldest first)."""
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    count: dict[str, int] = {}
    for title, run_id, _started in rows:
        first.setdefault(title, run_id)
        last[title] = run_id
        count[title] = count.get(title, 0) + 1
    return [CrashSignature(t, first[t], last[t], count[t]) for t in first]


def _rows(run: Run) -> dict[sa.Table, list[dict]]:
    """The rows that store ``run``, per table."""
    seen: set[str] = set()
    for r in run.results:
        if r.nodeid in seen:
            raise HilError(
                f"run {run.run_id} lists {r.nodeid} twice",
                "merge a test's attempts into one TestResult (attempts=[...])",
            )
        seen.add(r.nodeid)
    return {
        runs: [
            dict(
                run_id=run.run_id,
                profile=run.profile,
                host=run.host,
                version=run.version,
                guest_kernel=run.guest_kernel,
                folder=run.folder,
                started=run.started.isoformat(),
                ended=run.ended.isoformat(),
                started_utc=_utc(run.started),
            )
        ],
        results: [
            dict(
                run_id=run.run_id,
                nodeid=r.nodeid,
                seq=i,
                outcome=r.outcome,
                attempts=list(r.attempts),
                duration_s=r.duration_s,
                message=r.message,
                crash_title=r.crash_title,
                crash_kind=r.crash_kind,
                crash_expected=r.crash_expected,
                console_excerpt=r.console_excerpt,
                artifacts=dict(r.artifacts),
                deployed={k: list(v) for k, v in r.deployed.items()},
            )
            for i, r in enumerate(run.results)
        ],
        crashes: [
            dict(run_id=run.run_id, seq=i, title=c.title, kind=c.kind, nodeid=c.nodeid, expected=c.expected)
            for i, c in enumerate(run.crashes)
        ],
        figures: [
            dict(run_id=run.run_id, seq=i, name=f.name, value=f.value, nodeid=f.nodeid)
            for i, f in enumerate(run.figures)
        ],
        artifacts: [
            dict(run_id=run.run_id, seq=i, name=a.name, path=a.path, sha256=a.sha256, origin=a.origin)
            for i, a in enumerate(run.artifacts)
        ],
    }
