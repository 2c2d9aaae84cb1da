"""Test reports as JSON lines: how a pytest run tells ``hil qualify`` what happened.

The plugin registers :class:`ResultsWriter` on the controller when ``--hil-results FILE`` is
given (xdist workers' reports reach the controller's hooks too).  One line per report phase
(setup, call, teardown) with the node id, the outcome, the failure's one-line message, the
test's JUnit properties (crash title, deployed drivers, figures, artifact paths) and the guest
console tail the plugin attached.  :func:`read` turns the lines back into :class:`PhaseReport`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PhaseReport:
    nodeid: str
    path: str  # the test file, absolute
    when: str
    outcome: str  # passed | failed | skipped
    duration: float
    message: str = ""
    properties: list[tuple[str, str]] = field(default_factory=list)
    console: str = ""


class ResultsWriter:
    """A pytest plugin object: appends one JSON line per test report to ``path``."""

    def __init__(self, path: Path, rootpath: Path):
        self.path = Path(path)
        self.rootpath = Path(rootpath)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def pytest_runtest_logreport(self, report) -> None:
        message = ""
        if report.failed or report.skipped:
            crash = getattr(report.longrepr, "reprcrash", None)
            if crash is not None:
                message = str(crash.message)
            elif isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
                message = str(report.longrepr[-1])
            else:
                message = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else ""
        console = next((text for title, text in report.sections if title.startswith("guest ")), "")
        row = {
            "nodeid": report.nodeid,
            "path": str(self.rootpath / report.location[0]),
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
            "message": message[:2000],
            "properties": [[str(k), str(v)] for k, v in report.user_properties],
            "console": console,
        }
        with self._lock, open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def read(path: Path) -> list[PhaseReport]:
    if not Path(path).is_file():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["properties"] = [tuple(p) for p in row["properties"]]
            out.append(PhaseReport(**row))
    return out
