"""``hil history runs|crashes|flaky|diff``: read the qualification history in a terminal.

The history is ``--history URL``, else the ``history`` key of hil.toml, else the SQLite file in
the data folder (:func:`hil.qualify.history.default_url`).  Everything prints as plain aligned
columns, one row per line, for a person (and ``grep``).
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime

HELP = "the qualification history: recent runs, crash titles, flaky tests, what changed between two runs"


def add_arguments(parser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--history",
        metavar="URL",
        default=None,
        help="history database: sqlite:///FILE or postgresql://... (default: hil.toml's "
        "history, else SQLite in the data folder)",
    )
    sub = parser.add_subparsers(dest="view", metavar="VIEW", required=True)

    p = sub.add_parser("runs", parents=[common], help="the latest runs, newest first")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="this many runs (0: all; default 20)")
    p.add_argument("--profile", default=None, metavar="P", help="only runs of this profile")

    p = sub.add_parser("crashes", parents=[common], help="every crash title: first and last run, in how many runs")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="the N most recently seen (default: all)")
    p.add_argument("--profile", default=None, metavar="P", help="only runs of this profile")

    p = sub.add_parser("flaky", parents=[common], help="tests that were flaky in the last runs")
    p.add_argument(
        "--limit", "--last", dest="limit", type=int, default=20, metavar="N", help="over the last N runs (default 20)"
    )
    p.add_argument("--profile", default=None, metavar="P", help="only runs of this profile")

    p = sub.add_parser("diff", parents=[common], help="what changed from RUN_A to RUN_B")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.2,
        metavar="R",
        help="report figures whose relative change exceeds R (default 0.2 = 20%%)",
    )


def history_url(option: str | None) -> str:
    """``--history``, else hil.toml's ``history``, else the default SQLite file."""
    if option:
        return option
    from hil.config import load_config

    if configured := getattr(load_config(), "history", ""):
        return configured
    from hil.qualify.history import default_url

    return default_url()


def run(args) -> int:
    from hil.qualify.history import History

    with History.open(history_url(args.history)) as history:
        lines = VIEWS[args.view](history, args)
    print("\n".join(lines))
    return 0


def runs_view(history, args) -> list[str]:
    summaries = history.runs(limit=args.limit, profile=args.profile)
    if not summaries:
        return [f"no runs{_of(args.profile)} in {history.url}"]
    return table(
        [
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
            "pass rate",
        ],
        [
            [
                s.run_id,
                s.profile,
                s.host,
                _when(s.started),
                duration(s.ended - s.started),
                s.passed,
                s.failed,
                s.flaky,
                s.skipped,
                s.crashes,
                f"{s.pass_rate:.1%}",
            ]
            for s in summaries
        ],
    )


def crashes_view(history, args) -> list[str]:
    signatures = history.crashes(profile=args.profile)
    if args.limit > 0:
        signatures = signatures[: args.limit]
    if not signatures:
        return [f"no crashes{_of(args.profile)} in {history.url}"]
    return table(
        ["title", "first run", "last run", "runs"], [[s.title, s.first_run, s.last_run, s.count] for s in signatures]
    )


def flaky_view(history, args) -> list[str]:
    tests = history.flaky(last=args.limit, profile=args.profile)
    if not tests:
        return [f"no flaky test in the last {args.limit} runs{_of(args.profile)}"]
    return table(["test", "flaky"], [[t.nodeid, f"{t.flaky_runs}/{t.runs}"] for t in tests])


def diff_view(history, args) -> list[str]:
    d = history.diff(args.run_a, args.run_b, threshold=args.threshold)
    figures = [[name, f"{a:g}", f"{b:g}", _change(a, b)] for name, a, b in d.moved_figures]
    sections = [  # title, how many, the lines under it
        ("newly failing", len(d.newly_failing), d.newly_failing),
        ("newly passing", len(d.newly_passing), d.newly_passing),
        ("new crashes", len(d.new_crashes), d.new_crashes),
        ("vanished crashes", len(d.vanished_crashes), d.vanished_crashes),
        (
            f"figures moved by more than {args.threshold:.0%}",
            len(figures),
            table(["figure", d.run_a, d.run_b, "change"], figures) if figures else [],
        ),
    ]
    out = [f"{d.run_a} -> {d.run_b}"]
    for title, n, lines in sections:
        out += ["", f"{title} ({n})" + ("" if n else ": none"), *(f"  {line}" for line in lines)]
    return out


_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?(e[-+]?\d+)?%?|\d+/\d+|inf)")

VIEWS = {"runs": runs_view, "crashes": crashes_view, "flaky": flaky_view, "diff": diff_view}


def table(headers: list[str], rows: list[list]) -> list[str]:
    """Aligned columns: numbers (``12``, ``-3.5``, ``98.0%``, ``2/5``) to the right, text to the
    left; no trailing blanks."""
    cells = [[str(c) for c in row] for row in rows]
    right = [bool(rows) and all(_NUMBER.fullmatch(row[i]) for row in cells) for i in range(len(headers))]
    widths = [max(len(x) for x in [h, *(row[i] for row in cells)]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    return [line(headers), *(line(row) for row in cells)]


def duration(delta) -> str:
    """``1h02m``, ``12m05s``, ``45s``."""
    s = max(0, int(delta.total_seconds()))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _when(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")


def _change(a: float, b: float) -> str:
    return f"{(b - a) / abs(a):+.0%}" if a else "from 0"


def _of(profile: str | None) -> str:
    return f" of profile {profile}" if profile else ""
