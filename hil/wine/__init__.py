"""Wine as a Windows guest kind: a per-test Wine prefix that loads mingw-built kernel drivers.

What runs for real under Wine 8.0: the WSK socket path (netio.sys over host sockets), device
IOCTLs, service start/stop.  What does not (see shared ENVIRONMENT.md): process-notify
callbacks are never called, and the minifilter communication port functions are stubs.
"""

from hil.wine.guest import DbgLine, WineGuest
from hil.wine.prefix import clone_prefix, ensure_template, wine_version

__all__ = ["DbgLine", "WineGuest", "clone_prefix", "ensure_template", "wine_version"]
