"""How a driver gets into a guest and out again: one interface, one implementation per kind.

    guest.deployer.install(artifact, "kserver", port=7000)   # copy in, register, settings
    guest.deployer.start("kserver")                          # insmod / sc start / StartService
    guest.deployer.is_loaded("kserver")
    guest.deployer.stop("kserver"); guest.deployer.remove("kserver")

Every step raises :class:`hil.errors.GuestError` naming the command and what it printed.
Settings (``params``) are module parameters on Linux and REG_DWORD values under the service's
``Parameters`` key on Windows (what a WDM driver reads at DriverEntry).
"""

from __future__ import annotations

import ntpath
import posixpath
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hil.errors import GuestError

if TYPE_CHECKING:
    from hil.guest.linux import LinuxGuest
    from hil.guest.windows_lab import WindowsLabGuest
    from hil.guest.wine import WineGuest

SERVICE_RUNNING = 4  # SERVICE_STATUS.dwCurrentState


@runtime_checkable
class Deployer(Protocol):
    def install(self, artifact: Path, name: str, **params: int | str) -> str:
        """Copy ``artifact`` into the guest and register it as ``name``; returns its guest path."""
        ...

    def start(self, name: str) -> None: ...

    def stop(self, name: str) -> None: ...

    def remove(self, name: str) -> None: ...

    def is_loaded(self, name: str) -> bool: ...


class KmodDeployer:
    """Kernel modules in a Linux guest (``insmod`` / ``rmmod``, kernel log checked each time)."""

    REMOTE_DIR = "/tmp"

    def __init__(self, guest: LinuxGuest):
        self.guest = guest
        self._installed: dict[str, tuple[Path, dict[str, int | str]]] = {}

    def install(self, artifact: Path, name: str, **params: int | str) -> str:
        artifact = Path(artifact)
        if artifact.stem != name:
            raise GuestError(
                f"{artifact} is module {artifact.stem!r}, not {name!r}", "a module's name is its file name without .ko"
            )
        remote = posixpath.join(self.REMOTE_DIR, artifact.name)
        self.guest.put(artifact, remote)
        self._installed[name] = (artifact, dict(params))
        return remote

    def start(self, name: str) -> None:
        from hil.deploy import kmod

        if name not in self._installed:
            raise GuestError(f"module {name} is not installed in {self.guest.name}", "call install() first")
        artifact, params = self._installed[name]
        # params are the module's own: a module parameter named timeout must not become insmod's
        kmod.load_module_with(self.guest, artifact, params, remote_dir=self.REMOTE_DIR)

    def stop(self, name: str) -> None:
        from hil.deploy import kmod

        kmod.unload_module(self.guest, name)

    def remove(self, name: str) -> None:
        artifact, _ = self._installed.pop(name, (Path(f"{name}.ko"), {}))
        self.guest.run(f"rm -f {shlex.quote(posixpath.join(self.REMOTE_DIR, artifact.name))}", timeout=30)

    def is_loaded(self, name: str) -> bool:
        from hil.deploy import kmod

        return kmod.is_loaded(self.guest, name)


def _registry_dword(name: str, value: int | str) -> tuple[str, str]:
    try:
        return name, str(int(value))
    except ValueError:
        raise GuestError(f"driver setting {name}={value!r} is not a number", "settings are REG_DWORD values") from None


class WindowsServiceDeployer:
    """Kernel-driver services in a Windows lab guest (``sc.exe`` over WinRM); a minifilter
    (``file_system=True`` at install) is a file-system service loaded with ``fltmc``."""

    def __init__(self, guest: WindowsLabGuest):
        self.guest = guest
        self._filters: set[str] = set()

    def install(self, artifact: Path, name: str, **params: int | str) -> str:
        """As :meth:`Deployer.install`; the keyword ``file_system=True`` (not a registry value)
        installs a minifilter.  It is taken out of ``params``, which keeps this method a
        :class:`Deployer`'s (whose ``install`` takes settings only)."""
        from hil.windows import deploy

        file_system = bool(params.pop("file_system", False))
        remote = deploy.install_driver(self.guest.winrm, Path(artifact), name, file_system=file_system)
        key = rf"HKLM\SYSTEM\CurrentControlSet\Services\{name}\Parameters"
        for k, v in params.items():
            k, v = _registry_dword(k, v)
            self.guest.run(f'reg add "{key}" /v {k} /t REG_DWORD /d {v} /f', check=True)
        if file_system:
            self._filters.add(name)
        return remote

    def start(self, name: str) -> None:
        from hil.windows import deploy

        if name in self._filters:
            deploy.fltmc_load(self.guest.winrm, name)
        else:
            deploy.start_driver(self.guest.winrm, name)

    def stop(self, name: str) -> None:
        from hil.windows import deploy

        if name in self._filters:
            deploy.fltmc_unload(self.guest.winrm, name)
        else:
            deploy.stop_driver(self.guest.winrm, name)

    def remove(self, name: str) -> None:
        from hil.windows import deploy

        deploy.delete_driver(self.guest.winrm, name)
        self._filters.discard(name)

    def is_loaded(self, name: str) -> bool:
        from hil.windows import deploy

        return deploy.service_state(self.guest.winrm, name) == "RUNNING"


class WineServiceDeployer:
    """Kernel-driver services in a Wine prefix (the prefix's ``hilsvc.exe``)."""

    def __init__(self, guest: WineGuest):
        self.guest = guest

    def install(self, artifact: Path, name: str, **params: int | str) -> str:
        return self.guest.install_driver(
            Path(artifact), name, **{k: int(_registry_dword(k, v)[1]) for k, v in params.items()}
        )

    def start(self, name: str) -> None:
        self.guest.start_driver(name)

    def stop(self, name: str) -> None:
        res = self.guest.stop_driver(name)
        if res.exit_code != 0:
            raise GuestError(
                f"stopping driver {name} failed: {res.text.strip()}",
                f"its DbgPrint output is in {self.guest.debug_log}",
            )

    def remove(self, name: str) -> None:
        res = self.guest.delete_driver(name)
        if res.exit_code != 0:
            raise GuestError(f"deleting service {name} failed: {res.text.strip()}")
        self.guest.unix_path(ntpath.join(r"C:\windows\system32\drivers", f"{name}.sys")).unlink(missing_ok=True)

    def is_loaded(self, name: str) -> bool:
        return self.guest.service_state(name) == SERVICE_RUNNING
