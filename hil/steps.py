"""Named, timed steps: the raw material of progress output and of report timelines.

``with step("boot", guest=name):`` logs the start and the end with its duration and keeps
a record in :data:`TIMELINE`, which the reporting layer turns into a picture.  Inspired by
labgrid's ``@step``; ours is a context manager so it also wraps a few lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("hil")


@dataclass
class StepRecord:
    name: str
    args: dict
    start: float  # time.time()
    duration: float | None = None
    error: str | None = None


@dataclass
class Timeline:
    records: list[StepRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rec: StepRecord) -> None:
        with self.lock:
            self.records.append(rec)

    def since(self, t0: float) -> list[StepRecord]:
        with self.lock:
            return [r for r in self.records if r.start >= t0]


TIMELINE = Timeline()


@contextlib.contextmanager
def step(name: str, **args):
    rec = StepRecord(name=name, args=args, start=time.time())
    desc = " ".join(f"{k}={v}" for k, v in args.items())
    log.debug("step %s %s: start", name, desc)
    t0 = time.monotonic()
    try:
        yield rec
    except BaseException as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        rec.duration = time.monotonic() - t0
        TIMELINE.add(rec)
        log.debug("step %s %s: %.3fs%s", name, desc, rec.duration, f" ({rec.error})" if rec.error else "")


class Progress:
    """Progress for long work (image builds, boots) on a terminal or in a CI log.

    On a TTY the current line is rewritten; elsewhere each phase prints one line, so a CI log
    shows what happened without thousands of carriage returns.
    """

    interval = 5.0  # seconds between lines of the same phase when not on a terminal

    def __init__(self, title: str, stream=None):
        self.title = title
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self._last_phase: str | None = None
        self._last_print = 0.0

    def update(self, phase: str, detail: str = "") -> None:
        elapsed = time.monotonic() - self.t0
        line = f"[{self.title} {elapsed:6.1f}s] {phase}" + (f": {detail}" if detail else "")
        if self.tty:
            self.stream.write("\r\033[K" + line[:160])
            self.stream.flush()
        elif phase != self._last_phase or elapsed - self._last_print >= self.interval:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = elapsed
        self._last_phase = phase

    def done(self, message: str) -> None:
        elapsed = time.monotonic() - self.t0
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(f"[{self.title} {elapsed:6.1f}s] {message}\n")
        self.stream.flush()
