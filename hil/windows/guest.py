"""A real Windows guest under libvirt for a lab (needs a prepared Windows image).

    with WindowsLabGuest(image, workdir, user="hil", password="...") as g:
        g.transport.run("ver").check()          # WinRMTransport
        deploy.install_driver(g.transport, sys_file, "hilagent")

A qcow2 overlay per guest keeps the image untouched; the domain comes from
:func:`hil.windows.domain.windows_domain_xml` (Hyper-V enlightenments, hyperv panic device,
WinRM forwarded to 127.0.0.1 only).  Not runnable on the development hosts: there is no
Windows image there (suites skip with the reason).
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

from hil.crash import bugcheck
from hil.crash.report import Report
from hil.errors import EnvironmentProblem, GuestError
from hil.steps import step
from hil.windows.domain import windows_domain_xml
from hil.windows.winrm import WinRMTransport

LIBVIRT_QEMU_LOGS = Path("/var/log/libvirt/qemu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WindowsLabGuest:
    """image: the prepared base image (qcow2); workdir: overlay + logs (readable by QEMU's user);
    user/password: the image's WinRM administrator; accel: "kvm" or "tcg" (resolved);
    uri: libvirt URI; boot_timeout: seconds until WinRM must answer."""

    kind = "windows"

    def __init__(
        self,
        image: Path,
        workdir: Path,
        *,
        user: str,
        password: str,
        accel: str = "kvm",
        uri: str = "qemu:///system",
        memory_mib: int = 4096,
        vcpus: int = 2,
        boot_timeout: float = 900.0,
    ):
        self.image = Path(image)
        if not self.image.is_file():
            raise EnvironmentProblem(
                f"Windows image {self.image} does not exist", "build one as described in guests/windows/README.md"
            )
        self.workdir = Path(workdir)
        self.name = f"hil-win-{uuid.uuid4().hex[:8]}"
        self.overlay = self.workdir / f"{self.name}.qcow2"
        self.serial_log = self.workdir / f"{self.name}-serial.log"
        self.port = _free_port()
        self.accel, self.uri = accel, uri
        self.memory_mib, self.vcpus = memory_mib, vcpus
        self.boot_timeout = boot_timeout
        self.transport = WinRMTransport("127.0.0.1", self.port, user, password)
        self._conn = None
        self._dom = None
        self.state = "defined"

    def __enter__(self) -> WindowsLabGuest:
        self.boot()
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def boot(self) -> None:
        import libvirt

        self.workdir.mkdir(parents=True, exist_ok=True)
        with step("windows-overlay", guest=self.name):
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    str(self.image.resolve()),
                    str(self.overlay),
                ],
                check=True,
            )
        xml = windows_domain_xml(
            self.name,
            str(self.overlay),
            memory_mib=self.memory_mib,
            vcpus=self.vcpus,
            winrm_port=self.port,
            accel=self.accel,
            serial_log=str(self.serial_log),
        )
        with step("windows-boot", guest=self.name):
            self._conn = libvirt.open(self.uri)
            self._dom = self._conn.createXML(xml, 0)
            self.state = "booted"
            self.transport.wait_ready(self.boot_timeout)
        self.state = "ready"

    @property
    def domain_log(self) -> Path:
        """libvirt's log of this domain (QEMU's stderr, and the hyperv panic device's line)."""
        return LIBVIRT_QEMU_LOGS / f"{self.name}.log"

    def bugcheck(self) -> Report | None:
        """The bug check this guest reported, named as Windows names it
        (``0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL``, its four parameters in ``parameters``),
        read from the domain log by the same parser the crash monitor uses (KVM only; see
        domain.py)."""
        log = self.domain_log
        return bugcheck.parse_domain_log(log.read_text(errors="replace")) if log.exists() else None

    def reboot(self) -> None:
        """Reboot (Driver Verifier settings need one) and wait for WinRM again."""
        if self._dom is None:
            raise GuestError("guest is not running")
        self.transport.close()
        self._dom.reboot(0)
        self.transport.wait_ready(self.boot_timeout)

    def destroy(self) -> None:
        try:
            self.transport.close()
        except Exception:  # the guest may already be gone
            pass
        if self._dom is not None:
            try:
                self._dom.destroy()
            except Exception:
                pass
            self._dom = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.overlay.unlink(missing_ok=True)
        self.state = "destroyed"
