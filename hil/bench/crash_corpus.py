"""``hil bench crash-corpus``: score the Linux crash detector against a corpus of real logs.

Each corpus file has a header (``TITLE:``, ``ALT:``, ``TYPE:``, ``CORRUPTED:`` ...), a blank
line, the console log, and optionally ``REPORT:`` followed by the expected report text.
Figures:

- ``crash_detect_accuracy``: files where a crash is seen exactly when ``TITLE`` names one;
- ``kind_accuracy``: among crash files, the title's kind (text before ``" in "``) equals the
  kind of ``TITLE`` or of an ``ALT``;
- ``function_accuracy``: among crash files whose expected title names a function (other than
  syzkaller's placeholder ``corrupted``), the guilty function equals one named by ``TITLE``/``ALT``
  (the first word after ``" in "``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

HELP = "score the Linux crash detector against a corpus of console logs (accuracy figures)"

TARGETS = {"crash_detect_accuracy": 0.99, "kind_accuracy": 0.95, "function_accuracy": 0.90}


def default_corpus() -> Path:
    from hil.paths import linux_crash_corpus

    return linux_crash_corpus()


@dataclass
class Case:
    name: str
    titles: list[str] = field(default_factory=list)  # TITLE first, then ALTs
    corrupted: bool = False
    log: str = ""

    @property
    def crash(self) -> bool:
        return bool(self.titles and self.titles[0])


def load_case(path: Path) -> Case:
    data = path.read_text(encoding="utf-8", errors="replace")
    head, _, log = data.partition("\n\n")
    case = Case(path.name)
    for line in head.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "TITLE":
            case.titles.insert(0, value)
        elif key == "ALT":
            case.titles.append(value)
        elif key == "CORRUPTED":
            case.corrupted = value == "Y"
    if case.titles and not case.titles[0]:
        case.titles = []
    case.log = log.split("\nREPORT:\n", 1)[0]
    return case


def load_corpus(directory: Path) -> list[Case]:
    files = sorted(
        (p for p in directory.iterdir() if p.is_file() and not p.name.startswith(("README", "."))),
        key=lambda p: (len(p.name), p.name),
    )
    return [load_case(p) for p in files]


def _kind(title: str) -> str:
    return title.split(" in ", 1)[0]


def _func(title: str) -> str:
    # The function is the first word after " in " ("f at addr ADDR", "f age=NUM" name f).
    return title.split(" in ", 1)[1].split(" ")[0] if " in " in title else ""


@dataclass
class Result:
    case: Case
    title: str | None
    detect_ok: bool
    kind_ok: bool | None  # None: not scored
    func_ok: bool | None


def score_case(case: Case) -> Result:
    from hil.crash import parse

    rep = parse(case.log)
    title = rep.title if rep else None
    detect_ok = (rep is not None) == case.crash
    kind_ok = func_ok = None
    if case.crash:
        kind_ok = title is not None and _kind(title) in {_kind(t) for t in case.titles}
        funcs = {_func(t) for t in case.titles} - {"", "corrupted"}
        if funcs:
            func_ok = title is not None and _func(title) in funcs
    return Result(case, title, detect_ok, kind_ok, func_ok)


def evaluate(directory: Path) -> tuple[dict[str, float], list[Result]]:
    results = [score_case(c) for c in load_corpus(directory)]

    def ratio(values: list[bool | None]) -> float:
        scored = [v for v in values if v is not None]
        return sum(scored) / len(scored) if scored else 1.0

    figures = {
        "crash_detect_accuracy": ratio([r.detect_ok for r in results]),
        "kind_accuracy": ratio([r.kind_ok for r in results]),
        "function_accuracy": ratio([r.func_ok for r in results]),
    }
    return figures, results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="directory of annotated console logs (default: testdata/crash-logs/linux in the shared folder; HIL_SHARED_DIR)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="list the misses")


def run(args) -> int:
    from hil.errors import HilError

    directory = args.corpus or default_corpus()
    if not directory.is_dir():
        raise HilError(f"corpus directory not found: {directory}")
    figures, results = evaluate(directory)
    print(f"files: {len(results)}")
    for key, value in figures.items():
        print(f"{key}: {value:.4f}")
    if args.verbose:
        for r in results:
            what = [
                n for n, ok in (("detect", r.detect_ok), ("kind", r.kind_ok), ("function", r.func_ok)) if ok is False
            ]
            if what:
                expected = r.case.titles[0] if r.case.crash else "no crash"
                print(f"miss {r.case.name} [{','.join(what)}]: got {r.title!r}, expected {expected!r}")
    return 0
