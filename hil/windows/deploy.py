"""Deploying a driver under test into a real Windows guest (lab path), over any transport
with ``run(cmd) -> RunResult`` and ``put(local, remote)`` (normally :class:`WinRMTransport`).

    require_testsigning(t)
    install_driver(t, build["hilagent.sys"], "hilagent")     # copy + sc create type= kernel
    enable_verifier(t, "hilagent.sys")                          # standard flags, needs a reboot
    start_driver(t, "hilagent"); stop_driver(t, "hilagent"); delete_driver(t, "hilagent")
    fltmc_load(t, "hilflt"); fltmc_unload(t, "hilflt")

Every helper names the command and its output when it fails.
"""

from __future__ import annotations

import ntpath
import re
from pathlib import Path

from hil.errors import GuestError

DRIVER_DIR = r"C:\Windows\System32\drivers"
# sc.exe exit codes that mean "already there" for the operation asked.
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_NOT_ACTIVE = 1062
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _name(service: str) -> str:
    if not _NAME.match(service):
        raise GuestError(f"invalid service name {service!r}", "use letters, digits, '_', '-', '.'")
    return service


def _check(res, what: str, ok=(0,)):
    if res.exit_code not in ok:
        out = (res.stdout + res.stderr).decode(errors="replace").strip()[-800:]
        raise GuestError(f"{what} failed (exit {res.exit_code}): {out}")
    return res


def testsigning_enabled(t) -> bool:
    res = _check(t.run("bcdedit /enum {current}"), "bcdedit /enum {current}")
    m = re.search(r"^testsigning\s+(\w+)", res.stdout.decode(errors="replace"), re.M | re.I)
    return bool(m and m.group(1).lower() == "yes")


def require_testsigning(t) -> None:
    if not testsigning_enabled(t):
        raise GuestError(
            "test signing is off in the Windows guest: unsigned drivers will not load",
            "run 'bcdedit /set testsigning on' in the image and reboot (guests/windows/firstboot.ps1 does it)",
        )


def install_driver(t, sys_file: Path, service: str, *, file_system: bool = False) -> str:
    """Copy the .sys into System32\\drivers and create its service (demand start)."""
    service = _name(service)
    remote = ntpath.join(DRIVER_DIR, f"{service}.sys")
    t.put(Path(sys_file), remote)
    kind = "filesys" if file_system else "kernel"
    _check(
        t.run(f'sc create {service} type= {kind} start= demand error= normal binPath= "{remote}"'),
        f"sc create {service}",
    )
    return remote


def start_driver(t, service: str) -> None:
    _check(t.run(f"sc start {_name(service)}"), f"sc start {service}", ok=(0, ERROR_SERVICE_ALREADY_RUNNING))


def stop_driver(t, service: str) -> None:
    _check(t.run(f"sc stop {_name(service)}"), f"sc stop {service}", ok=(0, ERROR_SERVICE_NOT_ACTIVE))


def delete_driver(t, service: str) -> None:
    _check(t.run(f"sc delete {_name(service)}"), f"sc delete {service}")


def service_state(t, service: str) -> str:
    res = _check(t.run(f"sc query {_name(service)}"), f"sc query {service}")
    m = re.search(r"STATE\s+:\s+\d+\s+(\w+)", res.stdout.decode(errors="replace"))
    return m.group(1) if m else "UNKNOWN"


def fltmc_load(t, name: str) -> None:
    _check(t.run(f"fltmc load {_name(name)}"), f"fltmc load {name}")


def fltmc_unload(t, name: str) -> None:
    _check(t.run(f"fltmc unload {_name(name)}"), f"fltmc unload {name}")


# Driver Verifier: /standard = special pool, force IRQL checking, pool tracking, I/O
# verification, deadlock detection, DMA checking, security checks, misc checks, DDI compliance.
def enable_verifier(t, *drivers: str) -> bool:
    """Turn on Verifier's standard checks for ``drivers`` (e.g. "hilagent.sys").  Returns True
    when Windows asks for a reboot (it always does before the settings apply)."""
    if not drivers:
        raise ValueError("enable_verifier needs at least one driver name")
    for d in drivers:
        if not re.match(r"^[A-Za-z0-9_.-]+\.sys$", d):
            raise GuestError(f"invalid driver file name {d!r}")
    res = t.run("verifier /standard /driver " + " ".join(drivers))
    # verifier exits 2 when a reboot is needed for the new settings.
    _check(res, "verifier /standard", ok=(0, 2))
    return res.exit_code == 2 or b"reboot" in res.stdout.lower()


def verified_drivers(t) -> list[str]:
    res = _check(t.run("verifier /querysettings"), "verifier /querysettings")
    text = res.stdout.decode(errors="replace")
    m = re.search(r"Verified Drivers:\s*(.*?)(?:\r?\n\r?\n|$)", text, re.S)
    names = m.group(1).split() if m else []
    return [n for n in names if n.lower().endswith(".sys")]


def reset_verifier(t) -> None:
    _check(t.run("verifier /reset"), "verifier /reset", ok=(0, 2))
