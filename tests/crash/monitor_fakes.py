"""The fakes the crash monitor's unit tests drive it with (Linux and Windows alike): a libvirt
connection that fires lifecycle events on demand, a domain, a transport, and a guest with
exactly the names :class:`hil.crash.monitor.CrashMonitor` may use (``MonitoredGuest``).
libvirt's constants are the real ones."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt


class FakeConn:
    def __init__(self) -> None:
        self.callbacks: dict[int, tuple] = {}
        self._next = 1

    def domainEventRegisterAny(self, dom, event_id, cb, opaque):
        self.callbacks[self._next] = (event_id, cb)
        self._next += 1
        return self._next - 1

    def domainEventDeregisterAny(self, cb_id):
        del self.callbacks[cb_id]

    def fire_lifecycle(self, name: str, event: int, detail: int) -> None:
        for event_id, cb in list(self.callbacks.values()):
            if event_id == libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE:
                cb(self, SimpleNamespace(name=lambda: name), event, detail, None)

    def panicked(self, name: str) -> None:
        self.fire_lifecycle(name, libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED)


class FakeDomain:
    """A running domain that counts the NMIs it was sent."""

    def __init__(self) -> None:
        self.nmis = 0

    def injectNMI(self, flags):
        self.nmis += 1

    def state(self):
        return [libvirt.VIR_DOMAIN_RUNNING, 0]


class FakeTransport:
    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.last_reply = 0.0
        self.aborted: str | None = None
        self.pings = 0

    def ping(self, timeout=2.0):
        self.pings += 1
        return self.alive

    def abort(self, reason):
        self.aborted = reason


class FakeGuest:
    """A ``MonitoredGuest``: its console is ``folder/<console_name>``, written with :meth:`console`."""

    def __init__(
        self,
        folder: Path,
        conn: FakeConn | None = None,
        name: str = "g1",
        alive: bool = True,
        domain: Any = None,
        transport: Any = None,
        console_name: str | None = None,
    ) -> None:
        self.name = name
        self.conn = conn or FakeConn()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.console_path = folder / (console_name or f"{name}.console.log")
        self.console_path.write_bytes(b"")
        self.transport = transport if transport is not None else FakeTransport(alive)
        self.domain = domain if domain is not None else FakeDomain()
        self.dead = threading.Event()
        self.tainted: list[Any] = []
        self.monitor: Any = None

    def console_text(self):
        return self.console_path.read_text()

    def on_crash(self, crash):
        self.transport.abort(crash.title)
        self.dead.set()

    def on_taint(self, crash):
        self.tainted.append(crash)

    def is_running(self):
        return not self.dead.is_set()

    @property
    def crashes(self):
        return list(self.monitor.crashes)

    def console(self, text: str, chunk: int = 0) -> None:
        with open(self.console_path, "a") as f:
            if not chunk:
                f.write(text)
                return
            for i in range(0, len(text), chunk):
                f.write(text[i : i + chunk])
                f.flush()
