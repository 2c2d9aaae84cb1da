"""Waiting on a condition with a deadline (never a bare sleep as synchronisation).

For state that offers no event to wait on: a counter in sysfs, a line in a log, a listener
that is not up yet.
"""

from __future__ import annotations

import time

from hil.errors import HilError


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05, error: type[HilError] = HilError):
    """Poll ``predicate()`` until it returns a truthy value (returned) or raise ``error``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
