"""Crash recognition in guest output: Linux console reports and Windows bug checks.

``parse(text)`` finds the first Linux crash report in console text, ``parse_all`` every one;
``ConsoleWatcher`` does the same on a stream of chunks and reports a crash as soon as it is
complete; ``bugcheck.parse_panic_line`` names a Windows bug check from libvirt's log line.
"""

from hil.crash.report import Report
from hil.crash.stream import ConsoleWatcher, parse, parse_all

__all__ = ["ConsoleWatcher", "Report", "parse", "parse_all"]
