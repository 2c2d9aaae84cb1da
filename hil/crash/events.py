"""libvirt lifecycle events: one event loop per process, crash signals routed to guests.

libvirt delivers domain events only to connections opened *after* an event implementation was
registered, and only while something runs that implementation.  :func:`ensure_event_loop`
does both once per process (``virEventRegisterDefaultImpl`` + a daemon thread looping on
``virEventRunDefaultImpl``); :func:`hil.provision.daemons.open_connection` calls it before
``libvirt.open``.

:class:`EventDispatcher` (one per connection, :func:`dispatcher_for`) registers a lifecycle
callback for every domain and hands crash signals to the guest *currently watched* under that
domain name.  Restored guests share the snapshot's domain name and UUID (one live at a time
per lab), so the name -> guest map is what tells them apart: the newest watcher of a name
wins, and an event for a name nobody watches is ignored.

Signals (:class:`Signal`) that count as a crash:

- CRASHED/PANICKED (the pvpanic device; ``on_crash=preserve`` keeps the guest),
- CRASHED/CRASHLOADED (a crash kernel took over),
- STOPPED/CRASHED (``on_crash=destroy``),
- a REBOOT event the test did not ask for (``panic=-1`` reboots at once): only a crash if the
  console shows one, which the monitor decides.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("hil.crash.events")

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None
_loop_registered = False


def ensure_event_loop() -> bool:
    """Register libvirt's default event implementation and run it on a daemon thread.

    Idempotent; must run before the connection that wants events is opened.  Returns False
    when the libvirt binding is missing (then no events, only the console signal).
    """
    global _loop_thread, _loop_registered
    try:
        import libvirt
    except ImportError:
        return False
    with _loop_lock:
        if not _loop_registered:
            libvirt.virEventRegisterDefaultImpl()
            _loop_registered = True
        if _loop_thread is None or not _loop_thread.is_alive():
            _loop_thread = threading.Thread(target=_run_loop, name="hil-libvirt-events", daemon=True)
            _loop_thread.start()
    return True


def event_loop_running() -> bool:
    return _loop_thread is not None and _loop_thread.is_alive()


def _run_loop() -> None:
    import libvirt

    while True:
        try:
            if libvirt.virEventRunDefaultImpl() < 0:
                log.error("libvirt event loop iteration failed")
                time.sleep(0.1)  # do not spin on a broken loop
        except Exception:  # never let the thread die: later connections need it
            log.exception("libvirt event loop")
            time.sleep(0.1)


@dataclass(frozen=True)
class Signal:
    """A crash signal from libvirt: ``what`` is ``panicked``, ``crashloaded``,
    ``stopped-crashed`` or ``reboot``; ``at`` is ``time.monotonic()`` on arrival."""

    what: str
    domain: str
    at: float

    @property
    def fatal(self) -> bool:
        """The event alone proves a crash (a reboot needs the console to say so)."""
        return self.what != "reboot"

    @property
    def title(self) -> str:
        return {
            "panicked": "kernel panic (libvirt PANICKED event)",
            "crashloaded": "kernel crash, crash kernel loaded (libvirt CRASHLOADED event)",
            "stopped-crashed": "guest crashed and was stopped (libvirt STOPPED/CRASHED event)",
            "reboot": "guest rebooted unexpectedly (libvirt REBOOT event)",
        }[self.what]


def classify(event: int, detail: int) -> str | None:
    """The :class:`Signal` name for a lifecycle (event, detail) pair, or None if no crash."""
    import libvirt

    if event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        if detail == libvirt.VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED:
            return "crashloaded"
        return "panicked"
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED:
        return "stopped-crashed"
    return None


class Watcher(Protocol):
    """What :class:`EventDispatcher` hands signals to (the crash monitor of one guest)."""

    @property
    def name(self) -> str: ...

    def on_signal(self, sig: Signal) -> None: ...


class EventDispatcher:
    """Routes one connection's crash events to the watched guest of each domain name.

    A watched object needs ``name`` and ``on_signal(signal)`` (:class:`Watcher`); ``on_signal``
    runs on the event-loop thread and must not block (the crash monitor just records it).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._watchers: dict[str, Watcher] = {}
        self._callbacks: list[int] = []
        self.received: list[Signal] = []  # every crash signal seen, for tests and benches

    def watch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers[watcher.name] = watcher
            if not self._callbacks:
                self._register()

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            if self._watchers.get(watcher.name) is watcher:
                del self._watchers[watcher.name]
            if not self._watchers:
                self._deregister()

    def watcher(self, name: str) -> Watcher | None:
        with self._lock:
            return self._watchers.get(name)

    def _register(self) -> None:
        import libvirt

        if not event_loop_running():
            log.warning("no libvirt event loop: crash detection falls back to the console only")
            return
        try:
            self._callbacks.append(
                self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)
            )
            self._callbacks.append(
                self.conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot, None)
            )
        except libvirt.libvirtError as exc:
            log.warning(
                "cannot register for libvirt events (%s): console-only crash detection", exc.get_error_message()
            )

    def _deregister(self) -> None:
        import libvirt

        for cb in self._callbacks:
            try:
                self.conn.domainEventDeregisterAny(cb)
            except libvirt.libvirtError:
                pass  # connection already closed
        self._callbacks.clear()

    def close(self) -> None:
        with self._lock:
            self._watchers.clear()
            self._deregister()

    # --- callbacks (event-loop thread) ------------------------------------------------
    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: object) -> None:
        what = classify(event, detail)
        if what is not None:
            self._dispatch(Signal(what, dom.name(), time.monotonic()))

    def _reboot(self, conn: Any, dom: Any, opaque: object) -> None:
        self._dispatch(Signal("reboot", dom.name(), time.monotonic()))

    def _dispatch(self, sig: Signal) -> None:
        self.received.append(sig)
        target = self.watcher(sig.domain)
        if target is None:
            log.info("crash signal %s for %s: no live guest watches it", sig.what, sig.domain)
            return
        log.info("crash signal %s for %s", sig.what, sig.domain)
        try:
            target.on_signal(sig)
        except Exception:
            log.exception("crash signal handler for %s", sig.domain)


_dispatchers: dict[int, EventDispatcher] = {}
_dispatchers_lock = threading.Lock()


def dispatcher_for(conn: Any) -> EventDispatcher:
    """The dispatcher of ``conn`` (made on first use)."""
    with _dispatchers_lock:
        d = _dispatchers.get(id(conn))
        if d is None or d.conn is not conn:
            d = _dispatchers[id(conn)] = EventDispatcher(conn)
        return d
