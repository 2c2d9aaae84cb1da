"""Wine as a Windows guest kind: per-test Wine prefixes that load mingw-built kernel drivers.

The guest is :class:`hil.guest.wine.WineGuest` (made by :meth:`hil.lab.Lab.wine_guest`); this
package holds the prefix machinery (:mod:`hil.wine.prefix`), the transport
(:mod:`hil.wine.transport`) and the pytest fixtures.

What runs for real under Wine 8.0: the WSK socket path (netio.sys over host sockets), device
IOCTLs, service start/stop.  What does not: process-notify callbacks are never called, and the
minifilter communication port functions are stubs.
"""

from hil.wine.prefix import clone_prefix, ensure_template, wine_version

__all__ = ["clone_prefix", "ensure_template", "wine_version"]
