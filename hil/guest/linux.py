"""A Linux guest: a libvirt domain reached through qemu-guest-agent, with a fast reset.

The lab boots the first one cold and saves it (:meth:`LinuxGuest.save`); later ones are
restored copies of that save (:meth:`LinuxGuest.restore`, about a second instead of a boot).
Drivers are kernel modules, deployed by :class:`hil.deploy.deployers.KmodDeployer`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from hil.errors import GuestError
from hil.guest.libvirt_guest import LibvirtGuest
from hil.guest.state import GuestKind, GuestState
from hil.provision.spec import GuestSpec
from hil.steps import step
from hil.transport.qga import QgaTransport


class LinuxGuest(LibvirtGuest):
    """transcript: file of every agent exchange; kernel_release/kbuild_dir: the guest kernel
    and its headers (module builds use them)."""

    kind = GuestKind.LINUX

    def __init__(
        self,
        conn: Any,
        spec: GuestSpec,
        transcript: Path | None = None,
        kernel_release: str | None = None,
        kbuild_dir: Path | None = None,
    ):
        super().__init__(conn, spec)
        self.transcript_path = transcript
        self.kernel_release = kernel_release
        self.kbuild_dir = kbuild_dir
        self.restored = False
        self.lease: Any = None  # the snapshot variant this copy restored from (hil.provision.snapshot_cache)
        self.transport: QgaTransport | None = None
        from hil.deploy.deployers import KmodDeployer

        self.deployer = KmodDeployer(self)

    def _make_transport(self, domain: Any) -> QgaTransport:
        return QgaTransport(domain, self.name, self.transcript_path)

    def boot(self) -> None:
        """Start the domain; :meth:`wait_ready` then waits for the agent."""
        self.start_domain()

    def restore(self, save_file: Path, xml: str, paused: bool = False) -> None:
        """Become a running copy of a saved guest (see :class:`hil.lab.Lab`); ``paused``: a
        copy kept ready ahead of need, costing no CPU until :meth:`resume`."""
        self._require(GuestState.DEFINED)
        import libvirt

        with step("restore", guest=self.instance, paused=str(paused)):
            try:
                flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else libvirt.VIR_DOMAIN_SAVE_RUNNING
                self.conn.restoreFlags(str(save_file), xml, flags)
                domain = self.conn.lookupByName(self.name)
            except libvirt.libvirtError as exc:
                raise GuestError(
                    f"restoring guest {self.name} from {save_file} failed: {exc.get_error_message()}",
                    "the snapshot may be stale: delete it from the snapshot cache and retry",
                ) from None
        self.restored = True
        if paused:
            self.domain = domain
            self._set_state(GuestState.PAUSED)
        else:
            self._attach(domain)
            self._set_state(GuestState.BOOTED)

    def resume(self) -> None:
        """PAUSED -> BOOTED: let a ready copy run; the crash monitor watches it from now on."""
        self._require(GuestState.PAUSED)
        with step("resume", guest=self.instance):
            self.domain.resume()
            self._attach(self.domain)
        self._set_state(GuestState.BOOTED)

    def destroy(self) -> None:
        super().destroy()
        if self.lease is not None:
            self.lease.release()  # only now: the variant's identity is free again
            self.lease = None

    def wait_ready(self, timeout: float = 180.0) -> None:
        self._require(GuestState.BOOTED, GuestState.READY)
        assert self.transport is not None
        with step("wait-ready", guest=self.name):
            try:
                self.transport.wait_ready(timeout)
            except GuestError:
                self._raise_if_crashed("waiting for the guest agent")
                raise GuestError(
                    f"guest {self.name} did not become ready within {timeout:.0f}s",
                    f"look at its console log {self.spec.console_log}:\n{self.console_tail()}",
                ) from None
        self._set_state(GuestState.READY)

    def save(self, save_file: Path) -> str:
        """Save memory state to ``save_file`` (the domain stops); returns the saved XML."""
        self._require(GuestState.READY)
        import libvirt

        with step("save", guest=self.name):
            self._stop_monitor()
            self.domain.save(str(save_file))
            xml = self.conn.saveImageGetXMLDesc(str(save_file), libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
        self._set_state(GuestState.SAVED)
        self.domain = None
        return str(xml)

    def console_barrier(self, timeout: float = 5.0) -> bool:
        """The serial console lags behind the kernel (a report printed just before a test ends
        may not be in the log yet): write a marker to the kernel log and wait until the console
        shows it, so every earlier report is attributed to the phase that caused it.  Through
        the agent's file calls, not a process: a few milliseconds."""
        if self.state is not GuestState.READY or self.transport is None:
            return False
        marker = f"hil: console barrier {uuid.uuid4().hex[:12]}"
        try:
            self.transport.write_file("/dev/kmsg", f"<4>{marker}\n".encode())
        except GuestError:
            return False  # a crashed or unresponsive guest: the crash path reports that
        deadline = time.monotonic() + timeout
        needle = marker.encode()
        while time.monotonic() < deadline:
            try:
                with open(self.console_path, "rb") as f:
                    f.seek(max(0, f.seek(0, 2) - 65536))
                    if needle in f.read():
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # a file another process appends to: re-checked until the deadline
        return False

    def sync_clock(self) -> None:
        """After a restore the guest clock is as old as the save: set it to now."""
        transport = self._transport()
        assert isinstance(transport, QgaTransport)
        transport.set_time()
