"""Streaming crash detection: feed console chunks as they arrive, get a report at once.

:class:`ConsoleWatcher` splits chunks into lines (a line cut between two chunks is held until
its end arrives), looks for a crash header (:func:`hil.crash.linux.match_header`), then collects
the report's lines -- only those from the same printk caller as the header when the kernel
prints caller ids -- until the report is complete enough to name:

- an end line (``---[ end trace``, ``Kernel Offset:``, KASAN's closing ``=====``), or
- the stack trace ended and the report names its guilty function, or
- a row that needs no stack (``Kernel panic - not syncing: ...``) matched, or
- another crash header, or :data:`MAX_LINES` lines, or :meth:`ConsoleWatcher.flush`.

It also follows the boots on the console (:class:`hil.crash.linux.BootTracker`): a guest that
starts booting again after it had booted, with no crash report first, is a crash of its own
(``unexpected kernel reboot``, kind ``REBOOT``); a report still open then is named first, and
a reboot after a fatal report (``panic=N``) is that report's doing, not a crash of its own.

``parse``/``parse_all`` run the same machine over a whole text, so a log gives the same title
whatever the chunking.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass

from hil.crash import linux
from hil.crash.kinds import CrashKind
from hil.crash.linux_table import REBOOT_TITLE, Oops
from hil.crash.normalize import split_prefix
from hil.crash.report import Report

MAX_LINES = 200  # lines of a report (same caller) before it is named anyway
MAX_RAW_LINES = 2000  # console lines of any caller while a report is open
EARLY_LINES = 8  # a stack-less row is named within this many lines of its header
UNCONFIRMED_LINES = 30  # a header no row accepts yet (WARNING: without a stack) is dropped after this


@dataclass(frozen=True)
class _Line:
    start: int
    end: int
    ctx: str
    msg: str


class _Candidate:
    """The lines of one report being collected."""

    def __init__(self, oops: Oops, line: _Line, header: str) -> None:
        self.oops = oops
        self.start = line.start
        self.end = line.end
        self.ctx = line.ctx
        self.lines = [header]
        self.raw: list[_Line] = []  # every console line after the header, for a re-scan
        self.cpu_traceback = False
        self.prev_frame = False

    def _mine(self, line: _Line) -> bool:
        if line.ctx == self.ctx:
            return True
        return self.cpu_traceback and line.ctx.startswith("C")

    def add(self, line: _Line) -> str | None:
        """Take one console line; return ``"done"`` (line included), ``"next"`` (the line
        starts another report and is not included) or None (keep collecting)."""
        self.raw.append(line)
        if len(self.raw) >= MAX_RAW_LINES:
            return "done"
        if not self._mine(line):
            # Another caller's crash must not wait behind a header that is not a crash yet.
            if linux.match_header(line.msg) and not self.confirmed():
                return "next"
            return None
        msg = line.msg
        if "Disabling lock debugging due to kernel taint" in msg:
            return None
        if "Sending NMI from CPU" in msg or "NMI backtrace for cpu" in msg:
            self.cpu_traceback = True
        # Without printk caller ids, a new header ends the report; with them, another
        # report's lines are filtered out already and a header of ours is a follow-up, unless
        # no row accepts ours yet (a header cut short: ``INFO: t``, then the whole one).
        if linux.match_header(msg) and not linux.is_follow_up(msg):
            if len(self.lines) == 1 and linux.continues(msg, self.lines[0]):
                pass  # the header's second line (kmemleak's report after "BUG: memory leak")
            elif self.ctx in ("", "console") or not self.confirmed():
                return "next"
        self.lines.append(msg.rstrip())
        self.end = line.end
        if linux.is_end(msg, len(self.lines)) or len(self.lines) >= MAX_LINES:
            return "done"
        if len(self.lines) == UNCONFIRMED_LINES and not self.confirmed():
            return "done"
        is_frame = linux.frame_of(msg) is not None
        trace_ended = self.prev_frame and not is_frame and not linux.is_neutral(msg)
        if is_frame:
            self.prev_frame = True
        elif trace_ended:
            self.prev_frame = False
        if trace_ended or len(self.lines) <= EARLY_LINES:
            if self.complete(trace_ended):
                return "done"
        return None

    def confirmed(self) -> bool:
        """Some row accepts the report (it is a crash, if not yet a complete one)."""
        return linux.describe(self.oops, self.lines) is not None

    def complete(self, trace_ended: bool) -> bool:
        d = linux.describe(self.oops, self.lines)
        if d is None or d.corrupted:
            return False
        if "{func}" in d.fmt.fmt and not d.function:
            return False
        return trace_ended or d.fmt.no_stack

    def report(self) -> Report | None:
        d = linux.describe(self.oops, self.lines)
        if d is None:
            return None
        return Report(
            title=d.title,
            kind=d.kind,
            function=d.function,
            start=self.start,
            end=self.end,
            text="\n".join(self.lines) + "\n",
            corrupted=d.corrupted,
        )


class LineWatcher:
    """What every console watcher shares: decode chunks as they come (a character cut between
    chunks waits), cut them into lines with their character offsets since the first
    :meth:`feed`, and hand each to :meth:`_line`; :meth:`_end` names what is open at the end."""

    def __init__(self, on_report: Callable[[Report], None] | None = None) -> None:
        self.on_report = on_report
        self.reports: list[Report] = []
        self._tail = ""
        self._offset = 0  # offset of self._tail's first character
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    @property
    def first(self) -> Report | None:
        return self.reports[0] if self.reports else None

    def feed(self, chunk: str | bytes) -> Report | None:
        """Take a chunk of console output; return the first report once there is one."""
        if isinstance(chunk, bytes):
            chunk = self._decoder.decode(chunk)
        data = self._tail + chunk
        pos = 0
        while True:
            nl = data.find("\n", pos)
            if nl < 0:
                break
            self._line(self._offset + pos, self._offset + nl + 1, data[pos:nl])
            pos = nl + 1
        self._tail = data[pos:]
        self._offset += pos
        return self.first

    def flush(self) -> Report | None:
        """End of stream: take a last unterminated line and name any open report."""
        self._tail += self._decoder.decode(b"", final=True)
        if self._tail:
            tail, self._tail = self._tail, ""
            start = self._offset
            self._offset += len(tail)
            self._line(start, self._offset, tail)
        self._end()
        return self.first

    def _line(self, start: int, end: int, raw: str) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        """Called by :meth:`flush` after the last line."""


class ConsoleWatcher(LineWatcher):
    """Watch a guest's console output for crash reports.

    Feed it text with :meth:`feed` as it arrives; ``on_report`` (if given) is called with each
    :class:`~hil.crash.report.Report` as soon as it is complete.  :attr:`first` is the first
    report, :attr:`reports` all of them.  Call :meth:`flush` at the end of the stream to name
    a report that was still being collected.  Offsets in reports count characters since the
    first :meth:`feed`.
    """

    def __init__(self, on_report: Callable[[Report], None] | None = None) -> None:
        super().__init__(on_report)
        self._cand: _Candidate | None = None
        self._boots = linux.BootTracker()
        self._fatal_this_boot = False  # a fatal report since the last boot

    @property
    def busy(self) -> bool:
        """A crash header was seen and its report is still being collected."""
        return self._cand is not None

    def _end(self) -> None:
        while self._cand is not None:
            self._finish(None)

    def _line(self, start: int, end: int, raw: str) -> None:
        ctx, msg = split_prefix(raw)
        if self._boots.line(raw, ctx, msg):
            self._end()  # what the previous boot printed is over
            if not self._fatal_this_boot:  # a reboot after a panic is that panic's doing
                self._emit(Report(title=REBOOT_TITLE, kind=CrashKind.REBOOT, start=start, end=end, text=msg + "\n"))
            self._fatal_this_boot = False
            return
        self._process(_Line(start, end, ctx, msg))

    def _process(self, line: _Line) -> None:
        if self._cand is None:
            found = linux.match_header(line.msg)
            if found is None:
                return
            oops, header = found
            self._cand = _Candidate(oops, line, header)
            if self._cand.complete(False):
                self._finish(None)
            return
        status = self._cand.add(line)
        if status == "done":
            self._finish(None)
        elif status == "next":
            self._finish(line)

    def _finish(self, pending: _Line | None) -> None:
        cand, self._cand = self._cand, None
        assert cand is not None
        rep = cand.report()
        if rep is None:
            # Not a crash after all (e.g. a WARNING: line with no stack): look again at
            # everything that followed its header.
            for line in cand.raw:
                self._process(line)
            return
        self._emit(rep)
        if pending is not None:
            self._process(pending)

    def _emit(self, rep: Report) -> None:
        self._fatal_this_boot = self._fatal_this_boot or rep.fatal
        self.reports.append(rep)
        if self.on_report is not None:
            self.on_report(rep)


def parse_all(text: str | bytes) -> list[Report]:
    """Every crash report in ``text``, in order."""
    watcher = ConsoleWatcher()
    watcher.feed(text)
    watcher.flush()
    return watcher.reports


def parse(text: str | bytes) -> Report | None:
    """The first crash report in ``text``, or None."""
    reports = parse_all(text)
    return reports[0] if reports else None
