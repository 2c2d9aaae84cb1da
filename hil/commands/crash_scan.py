"""``hil crash-scan FILE...``: name the first kernel crash in each console log."""

from __future__ import annotations

import sys
from pathlib import Path

HELP = "scan console logs for a kernel crash and print its title (FILE: TITLE or FILE: no crash)"


def add_arguments(parser) -> None:
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path, help="console log to scan ('-' for stdin)")


def run(args) -> int:
    from hil.crash import parse
    from hil.errors import HilError

    for path in args.files:
        if str(path) == "-":
            text = sys.stdin.read()
        else:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                raise HilError(f"cannot read {path}: {exc.strerror}") from exc
        report = parse(text)
        print(f"{path}: {report.title if report else 'no crash'}")
    return 0
