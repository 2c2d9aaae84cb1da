"""What the Linux and the Windows lab guest share: a libvirt domain, watched for crashes.

The domain XML comes from :func:`hil.provision.domain_xml.domain_xml` (one builder, per-OS
parts) and carries the owner metadata, so the leak sweep removes a dead session's domain of
either kind.  While the domain lives a :class:`hil.crash.monitor.CrashMonitor` follows its
console and libvirt's lifecycle events.
"""

from __future__ import annotations

import abc
import logging
import random
from pathlib import Path
from typing import Any

from hil.errors import GuestError, HilError
from hil.guest.base import Guest
from hil.guest.state import GuestState
from hil.provision.domain_xml import HIL_NS, NETDEV_ID, domain_xml
from hil.provision.spec import GuestSpec, free_local_port
from hil.steps import step
from hil.transport.base import GuestTransport

log = logging.getLogger("hil.guest")


class LibvirtGuest(Guest):
    """conn: the lab's libvirt connection; spec: the domain's description."""

    def __init__(self, conn: Any, spec: GuestSpec):
        super().__init__(spec.name, (spec.console_local or spec.console_log).parent)
        self.conn = conn
        self.spec = spec
        self.domain: Any = None
        self.forwards: dict[int, int] = {g: h for h, g in spec.forwards}
        self.hang_timeout_s: float | None = None  # see CrashMonitor; set before boot/restore
        # where a process of this guest reaches this machine (a collector, a test's server) and
        # where such a server listens: QEMU user networking's 10.0.2.2 is the guest's host, which
        # is this machine only for a local guest (see hil.hosts.host)
        self.controller_address = "10.0.2.2"
        self.listen_address = "127.0.0.1"
        self.host_uri = ""
        self.host_lost: str | None = None  # why the guest's libvirt host went away, if it did
        self.console_mirror: Any = None  # a remote host's console log, followed into console_path

    @property
    def forward_host(self) -> str:
        """The address this machine connects to for a port :meth:`forward_port` forwarded."""
        return self.spec.forward_address

    @property
    def instance(self) -> str:
        return self.spec.instance or self.name

    @property
    def console_path(self) -> Path:
        return self.spec.console_local or self.spec.console_log

    def console_text(self) -> str:
        if self.console_mirror is not None and self.host_lost is None:
            try:
                self.console_mirror.sync()
            except HilError:
                pass  # the host went away: what was mirrored is all there is
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    # --- what a libvirt kind adds ---------------------------------------------------------------
    @abc.abstractmethod
    def _make_transport(self, domain: Any) -> GuestTransport:
        """The transport into a freshly started domain."""

    def _monitor_options(self) -> dict[str, Any]:
        """Extra :class:`CrashMonitor` arguments for this kind (its console parser...)."""
        return {}

    # --- lifecycle ------------------------------------------------------------------------------
    def _attach(self, domain: Any) -> None:
        from hil.crash.monitor import CrashMonitor

        self.domain = domain
        self.transport = self._make_transport(domain)
        self._stop_monitor()
        self.monitor = CrashMonitor(self, hang_timeout_s=self.hang_timeout_s, **self._monitor_options()).start()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def start_domain(self) -> None:
        """DEFINED -> BOOTED: create the domain from the spec (no waiting for an agent)."""
        self._require(GuestState.DEFINED)
        import libvirt

        with step("boot", guest=self.name, kind=self.kind.value, accel=self.spec.accel):
            try:
                self._attach(self.conn.createXML(domain_xml(self.spec), 0))
            except libvirt.libvirtError as exc:
                raise GuestError(
                    f"libvirt refused to start guest {self.name}: {exc.get_error_message()}",
                    "run `hil doctor`; the domain XML is in the debug log",
                ) from None
        self._set_state(GuestState.BOOTED)

    def destroy(self) -> None:
        if self.state is GuestState.DESTROYED:
            return
        if self.host_lost is not None:  # nothing left to destroy, nobody to ask
            self._set_state(GuestState.DESTROYED)
            self.domain = None
            return
        import libvirt

        self._stop_monitor()
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception as exc:  # the guest may already be gone
                log.debug("closing the transport of %s: %s", self.name, exc)
        if self.domain is not None:
            with step("destroy", guest=self.name):
                try:
                    self.domain.destroy()
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                        raise
        if self.console_mirror is not None:
            self.console_mirror.stop()  # its last bytes, then no more polling
        self._set_state(GuestState.DESTROYED)
        self.domain = None

    def keep(self) -> None:
        """Keep this guest after the session (for debugging): the leak sweep then skips it."""
        import libvirt

        super().keep()
        if self.domain is not None:
            owner = {**self.spec.owner, "kind": self.spec.os, "keep": "1"}
            attrs = " ".join(f'{k}="{v}"' for k, v in owner.items())
            self.domain.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, f"<owner {attrs}/>", "hil", HIL_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )

    def mark_host_lost(self, why: str) -> None:
        """The guest's libvirt host went away: stop watching (a vanished host is not a guest
        crash) and fail every later call with ``why``."""
        self.host_lost = why
        self._stop_monitor()
        if self.console_mirror is not None:
            self.console_mirror.stop()

    def is_running(self) -> bool:
        return super().is_running() and self.domain is not None

    def domain_state(self) -> tuple[int, int] | None:
        import libvirt

        if self.domain is None:
            return None
        try:
            state, reason = self.domain.state()
            return state, reason
        except libvirt.libvirtError:
            return None

    def _raise_if_crashed(self, doing: str) -> None:
        import libvirt

        if self.host_lost is None and self.host_uri and not _connection_alive(self.conn):
            self.mark_host_lost("the connection to it closed")  # before the close callback said so
        if self.host_lost is not None:
            raise GuestError(
                f"guest {self.name} is gone with its libvirt host {self.host_uri}: {self.host_lost}",
                "the run goes on on the other hosts; look at libvirtd on that host",
            )
        if self.monitor is not None:
            self.monitor.poll()
        st = self.domain_state()
        if st and st[0] == libvirt.VIR_DOMAIN_CRASHED and self.state is not GuestState.CRASHED:
            self.mark_crashed()
        super()._raise_if_crashed(doing)

    def forward_port(self, guest_port: int) -> int:
        """Forward a fresh port of the guest's host to ``guest_port``; returns that port, on
        :attr:`forward_host` (127.0.0.1 here, a remote host's own address there).

        Connections through it reach the guest from 10.0.2.2 (QEMU user networking).
        """
        if guest_port in self.forwards:
            return self.forwards[guest_port]
        import libvirt_qemu

        self._require(GuestState.READY, GuestState.BOOTED)
        last = ""
        local = self.spec.forward_address == "127.0.0.1"
        for _ in range(8):
            # a remote host's free ports are not ours to see: a random one, another if taken
            host_port = free_local_port() if local else random.randrange(20000, 60000)
            last = libvirt_qemu.qemuMonitorCommand(
                self.domain,
                f"hostfwd_add {NETDEV_ID} tcp:{self.spec.forward_address}:{host_port}-:{guest_port}",
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP,
            ).strip()
            if not last:
                self.forwards[guest_port] = host_port
                return host_port
        raise GuestError(f"guest {self.name}: cannot forward a host port to guest port {guest_port}: {last}")


def _connection_alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except Exception:
        return False
