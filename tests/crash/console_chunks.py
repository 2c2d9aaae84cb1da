"""Feeding a console to the stream parser the way the monitor reads it: in chunks."""

from __future__ import annotations

from hil.crash import ConsoleWatcher
from hil.crash.report import Report


def streamed_reports(text: str, chunk: int) -> list[Report]:
    """The reports of ``text`` fed ``chunk`` characters at a time (lines cut anywhere)."""
    w = ConsoleWatcher()
    for i in range(0, len(text), chunk):
        w.feed(text[i : i + chunk])
    w.flush()
    return w.reports
