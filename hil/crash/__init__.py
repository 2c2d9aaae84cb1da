"""Crash recognition in guest output: Linux console reports, Windows bug checks, Wine crashes.

``parse(text)`` finds the first Linux crash report in console text, ``parse_all`` every one;
``ConsoleWatcher`` does the same on a stream of chunks and reports a crash as soon as it is
complete; ``bugcheck.parse_panic_line`` names a Windows bug check from libvirt's log line;
``wine.parse`` names the unhandled exceptions in a Wine debug log.  Every report's ``kind`` is a
:class:`CrashKind` (:mod:`hil.crash.kinds`), which says whether the guest survives it.
``CrashMonitor`` follows a live guest (console + libvirt events + hangs), see
:mod:`hil.crash.monitor`, :mod:`hil.crash.detectors` and :mod:`hil.crash.events`.
"""

from hil.crash.kinds import CrashKind
from hil.crash.monitor import Crash, CrashMonitor, MonitoredGuest
from hil.crash.report import Report
from hil.crash.stream import ConsoleWatcher, parse, parse_all

__all__ = ["ConsoleWatcher", "Crash", "CrashKind", "CrashMonitor", "MonitoredGuest", "Report", "parse", "parse_all"]
