"""What the crash monitor needs to know about a guest's operating system: its :class:`Detector`.

The monitor (:mod:`hil.crash.monitor`) is the same for every libvirt guest: it follows the
console file, takes libvirt's crash events, checks for hangs and records crashes.  What differs
per OS is behind a detector:

- ``console_parser(on_report)``: what reads the console stream and calls ``on_report`` with each
  complete :class:`~hil.crash.report.Report` (Linux: :class:`hil.crash.stream.ConsoleWatcher`;
  Windows: :class:`hil.crash.bugcheck.ConsoleWatcher`, bug checks named on the serial port);
- ``attach(guest)``: the monitor starts (remember where the logs stand);
- ``provisional(signal)``: the report a fatal libvirt event gets until something names it;
- ``named_elsewhere()``: a final report from outside the console, or None (Windows: the
  ``panic hyper-v`` line QEMU/libvirt wrote to the domain log for the bug check);
- ``interrupted_function(excerpt)``: what a hang's NMI caught the CPU in (names the hang);
- ``evidence(guest, crash)``: files to keep after a fatal crash (Windows: a memory dump);
- ``resume_after_panic``: resume a domain libvirt paused at a panic so its console can finish
  printing (Linux prints the panic after the notifiers; Windows must stay put for the dump).

:class:`LinuxDetector` is the default; :class:`WindowsDetector` is for a Windows lab guest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hil.crash import bugcheck, linux
from hil.crash.events import Signal
from hil.crash.kinds import CrashKind
from hil.crash.report import Report
from hil.crash.stream import ConsoleWatcher

if TYPE_CHECKING:
    from hil.crash.monitor import Crash, MonitoredGuest

log = logging.getLogger("hil.crash.detectors")

LIBVIRT_QEMU_LOGS = Path("/var/log/libvirt/qemu")


class ConsoleParser(Protocol):
    """A console stream reader: :meth:`feed` it chunks; it calls its ``on_report`` with each
    complete report; :attr:`busy` while a report is half collected; :meth:`flush` names it."""

    @property
    def busy(self) -> bool: ...

    def feed(self, chunk: str | bytes) -> Report | None: ...

    def flush(self) -> Report | None: ...


class Detector(Protocol):
    """The OS-specific part of crash detection (module docstring)."""

    name: str
    resume_after_panic: bool

    def console_parser(self, on_report: Callable[[Report], None]) -> ConsoleParser: ...

    def attach(self, guest: MonitoredGuest) -> None: ...

    def provisional(self, signal: Signal) -> Report: ...

    def named_elsewhere(self) -> Report | None: ...

    def interrupted_function(self, excerpt: str) -> str: ...

    def evidence(self, guest: MonitoredGuest, crash: Crash) -> list[Path]: ...


class LinuxDetector:
    """Linux: crash reports on the serial console, named by :mod:`hil.crash.linux`."""

    name = "linux"
    resume_after_panic = True

    def console_parser(self, on_report: Callable[[Report], None]) -> ConsoleParser:
        return ConsoleWatcher(on_report=on_report)

    def attach(self, guest: MonitoredGuest) -> None:
        pass

    def provisional(self, signal: Signal) -> Report:
        return Report(title=signal.title, kind=CrashKind.PANIC)

    def named_elsewhere(self) -> Report | None:
        return None  # the console names a Linux crash

    def interrupted_function(self, excerpt: str) -> str:
        return linux.interrupted_function(excerpt)

    def evidence(self, guest: MonitoredGuest, crash: Crash) -> list[Path]:
        return []


class WindowsDetector:
    """A Windows lab guest under libvirt: a bug check raises libvirt's PANICKED event and (under
    KVM, with the ``hyperv`` panic device) QEMU's stop code and parameters land in the domain
    log (:func:`hil.crash.bugcheck.parse_domain_log`), which names the crash
    (``0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL``).  With EMS on, the serial console names it
    too.  After a fatal crash a raw memory dump goes to the guest's folder
    (``<name>.memory.dump``).

    Arguments:
        domain_log: libvirt's log of the domain; default ``/var/log/libvirt/qemu/<name>.log``.
        dump: write the memory dump (a guest's whole RAM: turn it off where disk is short).
    """

    name = "windows"
    resume_after_panic = False  # the crashed guest stays paused for the dump

    def __init__(self, domain_log: Path | None = None, *, dump: bool = True) -> None:
        self.domain_log = Path(domain_log) if domain_log is not None else None
        self.dump = dump
        self._log_start = 0  # the domain log is appended per start: read only this run's part

    def console_parser(self, on_report: Callable[[Report], None]) -> ConsoleParser:
        return bugcheck.ConsoleWatcher(on_report=on_report)

    def attach(self, guest: MonitoredGuest) -> None:
        if self.domain_log is None:
            self.domain_log = LIBVIRT_QEMU_LOGS / f"{guest.name}.log"
        try:
            self._log_start = self.domain_log.stat().st_size
        except OSError:
            self._log_start = 0

    def provisional(self, signal: Signal) -> Report:
        title = {
            "panicked": "bug check (libvirt PANICKED event)",
            "crashloaded": "bug check, crash dump loaded (libvirt CRASHLOADED event)",
            "stopped-crashed": "guest crashed and was stopped (libvirt STOPPED/CRASHED event)",
        }.get(signal.what, signal.title)
        return Report(title=title, kind=CrashKind.BSOD)

    def named_elsewhere(self) -> Report | None:
        """The bug check of this run's part of the domain log, or None (not written yet, not
        readable, or TCG: QEMU ignores the crash MSRs there)."""
        if self.domain_log is None:
            return None
        try:
            with open(self.domain_log, "rb") as f:
                f.seek(self._log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        return bugcheck.parse_domain_log(text)

    def interrupted_function(self, excerpt: str) -> str:
        return ""  # an NMI makes Windows bug-check (NMI_HARDWARE_FAILURE): no function to name

    def evidence(self, guest: MonitoredGuest, crash: Crash) -> list[Path]:
        """A raw memory dump of the crashed guest in its folder (best effort: logged on failure)."""
        domain = guest.domain
        if not self.dump or domain is None:
            return []
        folder = guest_folder(guest)
        path = folder / f"{guest.name}.memory.dump"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            dump_memory(domain, path)
        except Exception as exc:  # evidence is best effort: the report stands without it
            log.error("memory dump of %s failed: %s", guest.name, exc)
            return []
        log.warning("guest %s: memory dump written to %s", guest.name, path)
        return [path]


def guest_folder(guest: MonitoredGuest) -> Path:
    """Where ``guest``'s evidence goes."""
    return Path(guest.folder)


def guest_console_path(guest: MonitoredGuest) -> Path:
    """The console log file of ``guest``."""
    return Path(guest.console_path)


def dump_memory(domain: Any, path: Path) -> Path:
    """Write the guest's memory as a raw dump (``virsh dump --memory-only --format=raw``).

    For Windows guests this is the crash evidence a bug check leaves behind under libvirt; for
    Linux it is the analogue of a kdump vmcore (readable with ``crash``/``drgn`` given the
    kernel's debug symbols).  The file is written by QEMU's user: the folder must allow it.
    """
    import libvirt

    path = Path(path)
    flags = libvirt.VIR_DUMP_MEMORY_ONLY
    domain.coreDumpWithFormat(str(path), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW, flags)
    return path
