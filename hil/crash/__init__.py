"""Crash recognition in guest output: Linux console reports and Windows bug checks.

``parse(text)`` finds the first Linux crash report in console text, ``parse_all`` every one;
``ConsoleWatcher`` does the same on a stream of chunks and reports a crash as soon as it is
complete; ``bugcheck.parse_panic_line`` names a Windows bug check from libvirt's log line.
``CrashMonitor`` follows a live guest (console + libvirt events + hangs), see
:mod:`hil.crash.monitor` and :mod:`hil.crash.events`.
"""

from hil.crash.monitor import Crash, CrashMonitor
from hil.crash.report import Report
from hil.crash.stream import ConsoleWatcher, parse, parse_all

__all__ = ["ConsoleWatcher", "Crash", "CrashMonitor", "Report", "parse", "parse_all"]
