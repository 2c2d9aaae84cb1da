"""A real Windows guest under libvirt for a lab (needs a prepared Windows image).

    guest = lab.windows_guest(image, user="hil", password="...")   # overlay, boot, WinRM up
    guest.deployer.install(build["hilagent.sys"], "hilagent"); guest.deployer.start("hilagent")
    guest.run("ver", check=True)

The domain comes from the one domain-XML builder with the Windows parts (Hyper-V
enlightenments, the hyperv panic device, SATA disk, e1000e NIC, WinRM forwarded to
127.0.0.1 only) and the owner metadata, so a dead session's Windows guest is swept like a
Linux one.  The crash monitor watches it: a bug check under KVM raises libvirt's PANICKED
event and QEMU writes the bug-check code and parameters to the domain log, which names the
crash (``0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL``).  Not runnable on the development hosts:
there is no Windows image there (suites skip with the reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.crash import bugcheck
from hil.crash.report import Report
from hil.errors import GuestError
from hil.guest.libvirt_guest import LibvirtGuest
from hil.guest.state import GuestKind, GuestState
from hil.provision.spec import GuestSpec
from hil.steps import step
from hil.windows.winrm import WinRMTransport

LIBVIRT_QEMU_LOGS = Path("/var/log/libvirt/qemu")
WINRM_GUEST_PORT = 5985


class WindowsLabGuest(LibvirtGuest):
    """spec: a ``os="windows"`` spec whose forwards include WinRM's port; user/password: the
    image's WinRM administrator; boot_timeout: seconds until WinRM must answer."""

    kind = GuestKind.WINDOWS

    def __init__(self, conn: Any, spec: GuestSpec, *, user: str, password: str, boot_timeout: float = 900.0):
        super().__init__(conn, spec)
        if WINRM_GUEST_PORT not in self.forwards:
            raise ValueError("a Windows lab guest's spec must forward a host port to WinRM (5985)")
        self.boot_timeout = boot_timeout
        self.winrm = WinRMTransport(self.forward_host, self.forwards[WINRM_GUEST_PORT], user, password)
        from hil.deploy.deployers import WindowsServiceDeployer

        self.deployer = WindowsServiceDeployer(self)

    def _make_transport(self, domain: Any) -> WinRMTransport:
        return self.winrm

    def _monitor_options(self) -> dict[str, Any]:
        from hil.crash.monitor import windows_monitor_options

        return windows_monitor_options(self.domain_log)

    def boot(self) -> None:
        self.start_domain()
        self.wait_ready(self.boot_timeout)

    def wait_ready(self, timeout: float) -> None:
        self._require(GuestState.BOOTED, GuestState.READY)
        with step("windows-ready", guest=self.name):
            try:
                self.winrm.wait_ready(timeout)
            except GuestError:
                self._raise_if_crashed("waiting for WinRM")
                raise
        self._set_state(GuestState.READY)

    @property
    def domain_log(self) -> Path:
        """libvirt's log of this domain (QEMU's stderr, and the hyperv panic device's line)."""
        return LIBVIRT_QEMU_LOGS / f"{self.name}.log"

    def bugcheck(self) -> Report | None:
        """The bug check this guest reported, named as Windows names it, read from the domain
        log by the same parser the crash monitor uses (KVM only: see hil.crash.bugcheck)."""
        log = self.domain_log
        return bugcheck.parse_domain_log(log.read_text(errors="replace")) if log.exists() else None

    def reboot(self) -> None:
        """Reboot (Driver Verifier settings need one) and wait for WinRM again."""
        self._require(GuestState.READY)
        self.winrm.close()
        self._set_state(GuestState.BOOTED)
        self.domain.reboot(0)
        self.wait_ready(self.boot_timeout)
