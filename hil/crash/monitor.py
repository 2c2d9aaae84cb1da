"""Watch one guest for crashes: its console log, libvirt's crash events, and hangs.

A :class:`CrashMonitor` runs a small thread per live guest that follows the guest's console
log file as it grows (polling it every ``poll_s``; libvirt's virtlogd appends to it) and feeds
its OS's console parser (the :class:`~hil.crash.detectors.Detector`: Linux by default,
:class:`~hil.crash.detectors.WindowsDetector` for a Windows lab guest).  The first signal wins:

- a crash report on the console (title, kind and guilty function straight away), or
- a libvirt lifecycle event (:mod:`hil.crash.events`): the guest is marked crashed at once.  If
  the detector can name the crash from elsewhere (Windows: the bug check QEMU wrote to the
  domain log) that is the report; otherwise it gets a provisional title such as
  ``kernel panic (libvirt PANICKED event)``, and the console gets ``grace_s`` seconds to deliver
  the real report, which then replaces the provisional one.

Fatal reports (:attr:`CrashKind.fatal <hil.crash.kinds.CrashKind.fatal>`: all but the
warning-like kinds) mark the guest crashed: a command running on it fails within one agent
poll, naming the crash.  A non-fatal report (``WARNING``, KASAN, lockdep...) leaves the guest
usable, but it is tainted: the test fails unless it expected the report, and the guest is
discarded afterwards.  After the first fatal crash the detector may keep evidence (Windows: a
memory dump in the guest's folder, listed in :attr:`Crash.evidence`).

The guest is anything with the names of :class:`MonitoredGuest`.

Hangs: when ``hang_timeout_s`` is set and neither the console nor the agent has shown a sign of
life for that long, the monitor pings the agent; when that fails too it injects an NMI through
libvirt (``domain.injectNMI``), gives the console ``grace_s`` to print what the NMI shows and
reports a ``HANG``.  A 6.1 x86 kernel prints only ``Uhhuh. NMI received for unknown reason``
on an external NMI unless ``kernel.unknown_nmi_panic=1``, which turns it into a panic with the
interrupted CPU's stack (``Kernel panic - not syncing: NMI: Not continuing``): set that sysctl
in guests where a hang should name its function.  A guest whose transport has no ``ping``
(WinRM) gets no hang check.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

from hil.crash.detectors import (
    ConsoleParser,
    Detector,
    LinuxDetector,
    WindowsDetector,
    dump_memory,
    guest_console_path,
)
from hil.crash.events import EventDispatcher, Signal, dispatcher_for
from hil.crash.kinds import CrashKind
from hil.crash.report import Report

__all__ = [
    "Crash",
    "CrashMonitor",
    "ExpectedCrash",
    "MonitoredGuest",
    "console_excerpt",
    "dump_memory",
    "is_fatal",
    "windows_monitor_options",
]

log = logging.getLogger("hil.crash.monitor")

EXCERPT_LINES = 80
RESUME_AFTER_S = 0.3  # an event with no console report this long after: resume to let it print
HANG_GRACE_S = 20.0  # after an NMI: time for the kernel to react and print (8 s was too short on a loaded 2-core host)
# A report with no end line (lockdep's, "sleeping function called from invalid context": they
# end with their stack) is complete only when something follows it; a console quiet this long
# after one names it (a non-fatal report: a guest that crashed is the signals' business).
QUIET_REPORT_S = 2.0
EVIDENCE_TIMEOUT_S = 300.0  # a memory dump of a big guest on a slow disk: stop()/quiesce() wait this long at most


def is_fatal(report: Report) -> bool:
    """The guest is dead after ``report`` (a warning-like kind only taints it)."""
    return report.kind.fatal


class MonitoredGuest(Protocol):
    """What :class:`CrashMonitor` uses of a guest -- these names and nothing else.

    - ``name``: the libvirt domain's name (events are routed by it);
    - ``conn``: the libvirt connection (events are registered on it);
    - ``domain``: the libvirt domain, or None when there is none (NMI, resume, memory dump);
    - ``console_path``: the console (serial) log file libvirt appends to;
    - ``console_text()``: that file's text;
    - ``is_running()``: the domain runs (no hang check otherwise);
    - ``transport``: the command channel; its ``ping(timeout=...) -> bool`` (and optional
      ``last_reply``, a ``time.monotonic()``) serve the hang check; None or without ``ping``:
      no hang check;
    - ``crashes``: every crash of the guest, first first (:class:`ExpectedCrash` reads it);
    - ``monitor``: this monitor (:class:`ExpectedCrash` waits on it);
    - ``on_crash(crash)``: a fatal crash (monitor thread; must not block);
    - ``on_taint(crash)``: a non-fatal report (monitor thread; must not block);
    - ``folder``: where evidence such as a memory dump goes.
    """

    @property
    def name(self) -> str: ...

    @property
    def conn(self) -> Any: ...

    @property
    def domain(self) -> Any: ...

    @property
    def console_path(self) -> Path: ...

    @property
    def transport(self) -> Any: ...

    @property
    def crashes(self) -> list[Crash]: ...

    @property
    def monitor(self) -> CrashMonitor | None: ...

    @property
    def folder(self) -> Path: ...

    def console_text(self) -> str: ...

    def is_running(self) -> bool: ...

    def on_crash(self, crash: Crash) -> None: ...

    def on_taint(self, crash: Crash) -> None: ...


def windows_monitor_options(domain_log: Path | None = None, *, dump: bool = True) -> dict[str, Any]:
    """:class:`CrashMonitor` keyword arguments for a Windows lab guest: the Windows detector
    reading bug checks from ``domain_log`` (libvirt's log of the domain) and the serial port."""
    return {"detector": WindowsDetector(domain_log, dump=dump)}


@dataclass
class Crash:
    """What the monitor knows about a guest's crash (``guest.crash`` is its :attr:`report`).

    Arguments:
        report: the best report so far (provisional while :attr:`final` is False).
        source: ``console``, ``event`` (an event came first) or ``hang``.
        detected_at: ``time.monotonic()`` of the first signal.
        final_at: when the title stopped changing (console report, or grace expired).
        signals: libvirt signals that arrived for this guest.
        expected: a test declared it (``expect_crash``): it does not fail the test.
        evidence: files the detector kept (a Windows guest's memory dump).
    """

    report: Report
    source: str
    detected_at: float
    final_at: float | None = None
    signals: list[Signal] = field(default_factory=list)
    expected: bool = False
    evidence: list[Path] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.final_at is not None

    @property
    def title(self) -> str:
        return self.report.title

    def describe(self, console: str = "") -> str:
        """The ``crash.txt`` evidence: title, kind, function, how it was seen, the detector's
        excerpt, and (given the ``console`` text) the console lines from the report on."""
        r = self.report
        lines = [
            f"title: {r.title}",
            f"kind: {r.kind}",
            f"function: {r.function or '-'}",
            f"source: {self.source}",
            f"fatal: {is_fatal(r)}",
            f"signals: {', '.join(s.what for s in self.signals) or '-'}",
            f"expected: {self.expected}",
        ]
        if r.parameters:
            lines.append(f"parameters: {', '.join(r.parameters)}")
        if self.evidence:
            lines.append(f"evidence: {', '.join(str(p) for p in self.evidence)}")
        if r.corrupted:
            lines.append("corrupted: True (the title is a best guess)")
        excerpt = r.text.splitlines()[:EXCERPT_LINES]
        out = "\n".join(lines) + "\n\n" + "\n".join(excerpt) + "\n"
        around = console_excerpt(console, r) if console else ""
        if around:
            out += "\n--- console from the report on:\n" + around
        return out


def console_excerpt(console: str, report: Report, lines: int = EXCERPT_LINES) -> str:
    """``lines`` console lines starting at the report's first line (prefixes kept)."""
    first = report.text.splitlines()[0].strip() if report.text else ""
    if not first:
        return ""
    at = console.find(first)
    if at < 0:
        return ""
    start = console.rfind("\n", 0, at) + 1
    return "\n".join(console[start:].splitlines()[:lines]) + "\n"


class CrashMonitor:
    """Follows ``guest`` (a :class:`MonitoredGuest`) until :meth:`stop`.

    Arguments:
        guest: the names of :class:`MonitoredGuest`; ``on_crash(crash)`` is called on the
            monitor thread at the first fatal signal, ``on_taint(crash)`` at a non-fatal one.
        poll_s: how often the console file is read.
        grace_s: how long the console may take to name a crash an event announced.
        hang_timeout_s: silence (console and agent) before a hang check; None/0: no check.
        detector: the OS's part (:mod:`hil.crash.detectors`); default :class:`LinuxDetector`.
    """

    def __init__(
        self,
        guest: MonitoredGuest,
        *,
        poll_s: float = 0.05,
        grace_s: float = 2.0,
        hang_timeout_s: float | None = None,
        detector: Detector | None = None,
    ) -> None:
        self.guest = guest
        self.name = guest.name
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.hang_timeout_s = hang_timeout_s
        self.detector: Detector = detector if detector is not None else LinuxDetector()
        self.reports: list[Report] = []  # every console report, in order
        self.crashes: list[Crash] = []  # the first crash, then one per later console report
        self.detected = threading.Event()  # a first signal arrived
        self.settled = threading.Event()  # the first crash's title is final
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._signals: list[Signal] = []
        self._watcher: ConsoleParser = self.detector.console_parser(self._on_report)
        self._file: IO[bytes] | None = None
        self._offset = 0
        self._last_life = self._last_output = time.monotonic()
        self._thread: threading.Thread | None = None
        self._resumed = False
        self._dispatcher: EventDispatcher | None = None
        self._evidence_for: Crash | None = None  # a fatal crash whose evidence is still to take
        self._evidence_taken = False
        self._evidence_idle = threading.Event()  # no evidence pending or being written
        self._evidence_idle.set()
        self._named_elsewhere: str | None = None  # a title the detector took from outside the console

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> CrashMonitor:
        self.detector.attach(self.guest)
        self._dispatcher = dispatcher_for(self.guest.conn)
        self._dispatcher.watch(self)
        self._thread = threading.Thread(target=self._run, name=f"hil-crash-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (the guest is being destroyed or saved).  Idempotent.  Evidence
        being taken (a memory dump) is finished first, at most :data:`EVIDENCE_TIMEOUT_S`."""
        if self._dispatcher is not None:
            self._dispatcher.unwatch(self)
            self._dispatcher = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5 if self._evidence_idle.is_set() else EVIDENCE_TIMEOUT_S)
        with self._lock:  # a poll() on another thread may be reading it right now
            if self._file is not None:
                self._file.close()
                self._file = None

    @property
    def crash(self) -> Crash | None:
        return self.crashes[0] if self.crashes else None

    # --- signals in -------------------------------------------------------------------
    def on_signal(self, sig: Signal) -> None:
        """A libvirt crash signal (event-loop thread: record and wake the monitor)."""
        with self._lock:
            self._signals.append(sig)
        self._wake.set()

    # --- waiting ----------------------------------------------------------------------
    def poll(self) -> Crash | None:
        """Read what the console has now (on the caller's thread) and return the crash."""
        with self._lock:
            if not self._stop.is_set():  # stopped: the guest is gone, what was read is all
                self._read_console()
            self._handle_signals()
            self._check_grace()
        return self.crash

    def wait(self, timeout: float) -> Crash | None:
        """Block until a first crash signal (or ``timeout``); return the crash."""
        self.detected.wait(timeout)
        return self.crash

    def wait_settled(self, timeout: float) -> Crash | None:
        """Block until the first crash has its final title (or ``timeout``)."""
        self.settled.wait(timeout)
        return self.crash

    def quiesce(self) -> Crash | None:
        """Take in everything up to now: read the console, and if a report is half
        printed or an event's title is provisional, wait (at most ``grace_s``) for it; then
        wait for evidence being taken (at most :data:`EVIDENCE_TIMEOUT_S`)."""
        self.poll()
        with self._lock:
            pending = self._watcher.busy or (self.crash is not None and not self.crash.final)
        if pending:
            deadline = time.monotonic() + self.grace_s + self.poll_s * 2
            while time.monotonic() < deadline:
                self._wake.set()
                if self.settled.wait(self.poll_s):
                    break
                with self._lock:
                    if not self._watcher.busy and (self.crash is None or self.crash.final):
                        break
            self.poll()
        if not self._evidence_idle.is_set():
            if self._thread is not None and self._thread.is_alive():
                self._evidence_idle.wait(EVIDENCE_TIMEOUT_S)
            else:
                self._take_evidence()
        return self.crash

    # --- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._read_console()
                    self._handle_signals()
                    self._check_grace()
                self._take_evidence()
                self._check_hang()
            except Exception:
                log.exception("crash monitor of %s", self.name)
            self._wake.wait(self.poll_s)
            self._wake.clear()
        self._take_evidence()  # a crash declared just before stop() still gets its evidence

    def _read_console(self) -> None:
        if self._file is None:
            try:
                self._file = open(guest_console_path(self.guest), "rb")
            except OSError:
                return
        data = self._file.read()
        if data:
            self._offset += len(data)
            self._last_life = self._last_output = time.monotonic()
            self._watcher.feed(data)
        elif (
            self._watcher.busy
            and self.crash is None
            and not self._signals
            and time.monotonic() - self._last_output >= QUIET_REPORT_S
        ):
            self._watcher.flush()  # the report's stack was its last line: it is complete

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for sig in signals:
            crash = self.crash
            if crash is not None:
                crash.signals.append(sig)
                continue
            if not sig.fatal:
                # a reboot is a crash only if the console says so: let the console decide
                if self._watcher.busy:
                    continue
                log.info("guest %s rebooted without a crash report on its console", self.name)
                continue
            named = self.detector.named_elsewhere()
            if named is not None:  # e.g. the bug check in a Windows guest's domain log
                self._named_elsewhere = named.title
                now = time.monotonic()
                self._declare(Crash(report=named, source="event", detected_at=sig.at, final_at=now, signals=[sig]))
                self.settled.set()
                continue
            report = self.detector.provisional(sig)
            self._declare(Crash(report=report, source="event", detected_at=sig.at, signals=[sig]))

    def _check_grace(self) -> None:
        crash = self.crash
        if crash is None or crash.final or crash.source == "console":
            return
        named = self.detector.named_elsewhere()
        if named is not None:
            self._named_elsewhere = named.title
            crash.report = _hang_report(named, named.text, self.detector) if crash.source == "hang" else named
            self._finalise(crash)
            return
        waited = time.monotonic() - crash.detected_at
        if waited >= RESUME_AFTER_S and not self._watcher.busy:
            self._resume_panicked()
        grace = max(self.grace_s, HANG_GRACE_S) if crash.source == "hang" else self.grace_s
        if waited < grace:
            return
        # the console had its chance: name whatever report is half-collected, else keep
        # the event's title
        if self._watcher.busy:
            self._watcher.flush()
        if not crash.final:
            self._finalise(crash)

    def _resume_panicked(self) -> None:
        """Let a paused, panicked guest finish printing its panic (once per guest; only where
        the detector wants it: a Windows guest stays paused for its memory dump).

        QEMU pauses the guest when the kernel's panic notifiers reach the pvpanic device
        (``on_crash=preserve``).  A panic that starts in NMI context (or with the console
        busy) has only put its message in the ring buffer by then: the kernel prints it in
        ``console_flush_on_panic`` *after* the notifiers.  Resuming the crashed domain lets it
        get there; with ``panic=0`` the kernel then stays in its panic loop.
        """
        if self._resumed or not self.detector.resume_after_panic:
            return
        import libvirt

        dom = self.guest.domain
        if dom is None:
            return
        try:
            state, _ = dom.state()
            if state == libvirt.VIR_DOMAIN_CRASHED:
                self._resumed = True
                dom.resume()
                log.info("guest %s: resumed after the panic event so its console can finish", self.name)
        except libvirt.libvirtError as exc:
            log.info("guest %s: cannot resume the panicked guest: %s", self.name, exc.get_error_message())

    def _on_report(self, report: Report) -> None:
        """A console report is complete (monitor thread, lock held)."""
        self.reports.append(report)
        crash = self.crash
        now = time.monotonic()
        if crash is None:
            self._declare(Crash(report=report, source="console", detected_at=now, final_at=now))
            self.settled.set()
            return
        if not crash.final:
            # the console names what an event (or hang) announced
            if crash.source == "hang":
                report = _hang_report(report, console_excerpt(self.guest.console_text(), report), self.detector)
            crash.report = replace(report, text=report.text or crash.report.text)
            self._finalise(crash)
            if is_fatal(crash.report):
                self._fatal(crash)
            return
        if report.title == self._named_elsewhere:
            self._named_elsewhere = None
            return  # the console's copy of what the detector named from elsewhere (a bug check)
        self._add_later(Crash(report=report, source="console", detected_at=now, final_at=now))

    def _add_later(self, later: Crash) -> None:
        """A report after the first crash (lock held)."""
        first = self.crash
        self.crashes.append(later)
        if first is not None and is_fatal(later.report) and not is_fatal(first.report):
            # a warning first, then the guest died: it is crashed now
            self._fatal(later)

    def add_report(self, report: Report, source: str) -> Crash | None:
        """A report found outside the console (``dmesg`` read through the agent, where a
        low-priority message may be the only trace): recorded exactly like a console report,
        so it fails the test through the same path, unless a crash of that title is known."""
        with self._lock:
            if not self._stop.is_set():
                self._read_console()  # the console may hold the same report: it stays the source
            if any(c.title == report.title for c in self.crashes):
                return None
            now = time.monotonic()
            crash = Crash(report=report, source=source, detected_at=now, final_at=now)
            if self.crash is None:
                self._declare(crash)
                self.settled.set()
            else:
                self._add_later(crash)
            return crash

    def _declare(self, crash: Crash) -> None:
        self.crashes.append(crash)
        log.warning("guest %s: %s (%s)", self.name, crash.title, crash.source)
        self.detected.set()
        if is_fatal(crash.report):
            self._fatal(crash)
        else:
            self._taint(crash)

    def _fatal(self, crash: Crash) -> None:
        """Tell the guest it is dead; the first time, have the detector's evidence taken."""
        if not self._evidence_taken:
            self._evidence_taken = True
            self._evidence_for = crash
            self._evidence_idle.clear()
            self._wake.set()
        self.guest.on_crash(crash)

    def _taint(self, crash: Crash) -> None:
        self.guest.on_taint(crash)

    def _take_evidence(self) -> None:
        """Take the detector's evidence for the first fatal crash (outside the lock: a memory
        dump takes seconds and must not hold up libvirt's event thread)."""
        with self._lock:
            crash, self._evidence_for = self._evidence_for, None
        if crash is None:
            return
        try:
            crash.evidence.extend(self.detector.evidence(self.guest, crash))
        except Exception:
            log.exception("crash evidence of %s", self.name)
        finally:
            self._evidence_idle.set()

    def _finalise(self, crash: Crash) -> None:
        crash.final_at = time.monotonic()
        self.settled.set()

    # --- hangs ------------------------------------------------------------------------
    def _check_hang(self) -> None:
        limit = self.hang_timeout_s
        if not limit or self.crash is not None or not self.guest.is_running():
            return
        transport = self.guest.transport
        ping = getattr(transport, "ping", None)
        if ping is None:
            return  # no way to ask the guest whether it lives
        last = max(self._last_life, getattr(transport, "last_reply", 0.0))
        if time.monotonic() - last < limit:
            return
        # a generous ping: a timed-out agent command makes libvirt refuse the agent afterwards
        if ping(timeout=min(10.0, max(1.0, limit / 4))):
            self._last_life = time.monotonic()
            return
        silent = time.monotonic() - last
        self.inject_nmi()
        t_nmi = time.monotonic()
        crash = Crash(
            report=Report(
                title=f"guest hung: no console output and no agent answer for {silent:.0f}s", kind=CrashKind.HANG
            ),
            source="hang",
            detected_at=t_nmi,
        )
        with self._lock:
            if self.crash is not None:
                return
            self._declare(crash)

    def inject_nmi(self) -> bool:
        """Send an NMI to the guest (its kernel prints, or panics with a backtrace)."""
        import libvirt

        dom = self.guest.domain
        if dom is None:
            return False
        try:
            dom.injectNMI(0)
            log.warning("guest %s: NMI injected", self.name)
            return True
        except libvirt.libvirtError as exc:
            log.error("guest %s: NMI injection failed: %s", self.name, exc.get_error_message())
            return False


def _hang_report(console: Report, excerpt: str = "", detector: Detector | None = None) -> Report:
    """A hang named after what the NMI showed: the report's function, else the function the
    NMI interrupted (``kernel.unknown_nmi_panic=1`` makes a Linux kernel print it)."""
    function = console.function or (detector or LinuxDetector()).interrupted_function(excerpt)
    where = f" in {function}" if function else ""
    return Report(
        title=f"guest hung{where} (NMI: {console.title})",
        kind=CrashKind.HANG,
        function=function,
        text=excerpt or console.text,
        parameters=console.parameters,
    )


class _ExpectingGuest(Protocol):
    """What :class:`ExpectedCrash` uses of a guest."""

    @property
    def crashes(self) -> list[Crash]: ...

    @property
    def monitor(self) -> CrashMonitor | None: ...


class ExpectedCrash:
    """The object ``guest.expect_crash(...)`` yields: after the block, :attr:`report` is the
    matching crash report and :attr:`seconds` the time from entering the block until its
    (final) title was known.  ``kind`` is a :class:`~hil.crash.kinds.CrashKind` or its name
    (an unknown name raises :class:`ValueError` at once)."""

    def __init__(
        self,
        guest: _ExpectingGuest,
        *,
        kind: CrashKind | str | None = None,
        function: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.guest = guest
        self.kind = CrashKind(kind) if kind is not None else None
        self.function = function
        self.timeout = timeout
        self.started = time.monotonic()
        self.crash: Crash | None = None
        self.error: Exception | None = None
        self._seen = len(guest.crashes)

    @property
    def report(self) -> Report | None:
        return self.crash.report if self.crash else None

    @property
    def seconds(self) -> float | None:
        if self.crash is None:
            return None
        return (self.crash.final_at or self.crash.detected_at) - self.started

    def matches(self, crash: Crash) -> bool:
        r = crash.report
        return (self.kind is None or r.kind == self.kind) and (self.function is None or r.function == self.function)

    def _wanted(self) -> str:
        parts = [f"kind={self.kind}"] if self.kind else []
        parts += [f"function={self.function}"] if self.function else []
        return "a crash" + (f" ({', '.join(parts)})" if parts else "")

    def finish(self, error: Exception | None = None) -> None:
        self.error = error
        monitor = self.guest.monitor
        deadline = self.started + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if monitor is not None:
                monitor.wait(max(0.0, remaining))
                c = monitor.crash
                if c is not None and not c.final:
                    grace = max(monitor.grace_s, HANG_GRACE_S) if c.source == "hang" else monitor.grace_s
                    monitor.wait_settled(max(0.0, min(remaining, grace + 0.5)))
            new = self.guest.crashes[self._seen :]
            for c in new:
                if self.matches(c):
                    c.expected = True
                    self.crash = c
                    return
            if time.monotonic() >= deadline or monitor is None:
                break
            if new:  # a crash that does not match yet: a later report might
                time.sleep(monitor.poll_s)
        got = self.guest.crashes[self._seen :]
        if got:
            raise AssertionError(
                f"expected {self._wanted()}, got {got[0].title} "
                f"(kind={got[0].report.kind}, function={got[0].report.function or '-'})"
            )
        msg = f"expected {self._wanted()} within {self.timeout:g}s, but the guest did not crash"
        if error is not None:
            raise AssertionError(f"{msg}; the block failed with: {error}") from error
        raise AssertionError(msg)
