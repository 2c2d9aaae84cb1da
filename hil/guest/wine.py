"""A Wine prefix as a Windows "guest": kernel drivers load into winedevice.exe.

    guest = lab.wine_guest(workdir, tools={"hilsvc.exe": ...})     # clone, boot, capture DbgPrint
    guest.install_driver(build["hilsocks.sys"], "hilsocks", Port=50007)
    guest.start_driver("hilsocks")
    guest.wait_for_log(r"\\[hilsocks\\] listening", timeout=20)
    guest.run([r"C:\\hil\\hilsvc.exe", "query", "hilsocks"], check=True)
    guest.stop_driver("hilsocks"); guest.delete_driver("hilsocks")
    guest.destroy()                                                  # wineserver -k, prefix removed

DbgPrint output: Wine prints it on the ``debugstr`` channel of the process that calls it
(winedevice.exe).  That process is started by services.exe, which inherits stderr and
WINEDEBUG from the command that started the prefix, so :meth:`WineGuest.boot` starts the
prefix with ``WINEDEBUG=-all,err+all,+debugstr,+loaddll`` and stderr appended to ``wine-debug.log``
(the guest's console); :meth:`WineGuest.dbgprint_lines` extracts the DbgPrint texts from it.

Crashes: a driver's unhandled exception is in that log too; :mod:`hil.crash.wine` names it and
it reaches the test through the same path as a kernel oops (:meth:`Guest.add_crash`).

The prefix carries an owner record (``owner.json``) like a libvirt domain's metadata, so the
leak sweep removes the prefix of a session that died.

Known Wine 8.0 quirks handled here: the wineserver is started persistent (``-p``), otherwise
it stops services.exe and unloads every driver a few seconds after the last user process ends;
the first StartService after a boot may fail with 1053 (ERROR_SERVICE_REQUEST_TIMEOUT);
:meth:`WineGuest.start_driver` then restarts the prefix and retries.
"""

from __future__ import annotations

import json
import logging
import ntpath
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hil.errors import GuestError
from hil.guest.base import Guest
from hil.guest.state import GuestKind, GuestState
from hil.provision.owner import Owner
from hil.provision.sweep import OWNER_FILE
from hil.steps import step
from hil.transport.base import RunResult
from hil.wine import prefix as wprefix
from hil.wine.transport import Command, WineTransport

log = logging.getLogger(__name__)

ERROR_SERVICE_REQUEST_TIMEOUT = 1053
ERROR_SERVICE_ALREADY_RUNNING = 1056
TOOLS_DIR = r"C:\hil"
_DBG_RE = re.compile(r"^[0-9a-f]+:(?:warn|trace|err|fixme):debugstr:\w+ (?:[0-9a-f]{8}:[0-9a-f]{8}: )?(.*)$")


@dataclass(frozen=True)
class DbgLine:
    text: str
    raw: str


def prefix_run_dir() -> Path:
    """Where per-test prefixes live: next to the template (hard links need one filesystem)."""
    return wprefix.run_dir()


class WineGuest(Guest):
    """workdir: a directory owned by the caller (e.g. the test's artifact folder) for logs;
    owner: whose prefix this is (the lab's owner); tools: {name: local path} of executables
    copied to ``C:\\hil\\`` at boot (``hilsvc.exe`` is required for the driver helpers);
    name: a label for logs and step records; debug_channels: extra WINEDEBUG channels for the
    prefix's services (e.g. ``+netio``)."""

    kind = GuestKind.WINE

    def __init__(
        self,
        workdir: Path,
        owner: Owner,
        tools: dict[str, Path] | None = None,
        name: str = "wine",
        debug_channels: str = "",
    ):
        super().__init__(name, workdir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.owner = owner
        self.tools = dict(tools or {})
        self.debug_channels = debug_channels
        self.prefix = prefix_run_dir() / f"{owner.prefix()}{name}-{time.monotonic_ns() % 10**9}"
        self.debug_log = self.folder / "wine-debug.log"
        self.transport: WineTransport = WineTransport(self.prefix, name)
        from hil.deploy.deployers import WineServiceDeployer

        self.deployer = WineServiceDeployer(self)
        self._log_fh: IO[bytes] | None = None
        self._crash_offsets: set[int] = set()

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def console_path(self) -> Path:
        return self.debug_log

    def console_text(self) -> str:
        return self.debug_log.read_text(errors="replace") if self.debug_log.exists() else ""

    @property
    def env(self) -> dict[str, str]:
        return self.transport.env

    def boot(self) -> None:
        self._require(GuestState.DEFINED)
        from hil.provision.sweep import sweep_wine_prefixes

        sweep_wine_prefixes(self.prefix.parent)
        with step("wine-clone", guest=self.name):
            self.prefix.parent.mkdir(parents=True, exist_ok=True)
            wprefix.clone_prefix(self.prefix)
            (self.prefix / OWNER_FILE).write_text(json.dumps({**self.owner.as_dict(), "kind": self.kind.value}))
        self._set_state(GuestState.BOOTED)
        for tname, local in self.tools.items():
            self.transport.put(Path(local), ntpath.join(TOOLS_DIR, tname))
        self._start_prefix()
        self._set_state(GuestState.READY)

    def _start_prefix(self) -> None:
        """Start the prefix's persistent wineserver and boot it (services.exe, winedevice.exe).

        A boot that fails is retried once on a fresh wineserver, with the reason logged: 1 in
        about 300 suite boots here ended ``wineboot`` with exit 1 before any output, a different
        prefix's next boot then succeeding.  Wine's own ``err`` lines (all channels) go to the
        log, so such a failure names its cause there."""
        with step("wine-boot", guest=self.name) as rec:
            self._log_fh = open(self.debug_log, "ab")
            for attempt in (1, 2):
                start = len(self.console_text())
                code = self._boot_once()
                if code == 0:
                    rec.args["attempts"] = str(attempt)
                    return
                said = self.console_text()[start:].strip()[-1500:] or "(nothing on its stderr)"
                if attempt == 1:
                    log.warning(
                        "wineboot exited %d in %s; restarting the prefix once. Its output: %s", code, self.prefix, said
                    )
                    wprefix.kill_prefix(self.prefix)
            raise GuestError(
                f"wineboot failed twice in {self.prefix} (exit {code}): {said.splitlines()[-1]}",
                f"see {self.debug_log}; check that Wine runs: WINEPREFIX=/tmp/x wine wineboot -i",
            )

    def _boot_once(self) -> int:
        env = self.env
        # A persistent wineserver: by default it shuts the prefix down (services, drivers
        # included) about 3 s after the last user process exits, unloading our drivers.
        subprocess.run(
            [wprefix.wineserver_binary(), "-p"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        env["WINEDEBUG"] = "-all,err+all,+debugstr,+loaddll" + (
            f",{self.debug_channels}" if self.debug_channels else ""
        )
        # services.exe and winedevice.exe inherit this stderr: it is the DbgPrint log.
        assert self._log_fh is not None
        proc = subprocess.run(
            [wprefix.wine_binary(), "wineboot"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log_fh,
            timeout=120,
        )
        return proc.returncode

    def restart(self) -> None:
        """Kill every process of the prefix and start it again (drivers are not restarted)."""
        self._require(GuestState.READY)
        self._set_state(GuestState.BOOTED)
        wprefix.kill_prefix(self.prefix)
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
        self._start_prefix()
        self._set_state(GuestState.READY)

    def destroy(self) -> None:
        if self.state is GuestState.DESTROYED:
            return
        with step("wine-destroy", guest=self.name):
            if self.prefix.exists():
                try:
                    wprefix.kill_prefix(self.prefix)
                finally:
                    shutil.rmtree(self.prefix, ignore_errors=True)
            if self._log_fh:
                self._log_fh.close()
                self._log_fh = None
        self.scan_for_crashes()  # what the last moments printed still counts
        self._set_state(GuestState.DESTROYED)

    def keep(self) -> None:
        super().keep()
        owner_file = self.prefix / OWNER_FILE
        if owner_file.exists():
            owner_file.write_text(json.dumps({**json.loads(owner_file.read_text()), "keep": "1"}))

    def wait_ready(self, timeout: float = 60.0) -> None:
        if self.state is GuestState.DEFINED:
            self.boot()

    # ---- crashes ---------------------------------------------------------------------------------
    def scan_for_crashes(self) -> list[Any]:
        """Read the log for unhandled exceptions not seen yet and record each as a crash."""
        from hil.crash import wine as wine_crash

        new = []
        for report in wine_crash.parse(self.console_text()):
            if report.start not in self._crash_offsets:
                self._crash_offsets.add(report.start)
                if (crash := self.add_crash(report, source="wine log")) is not None:
                    new.append(crash)
        return new

    @property
    def crashes(self) -> list[Any]:
        if self.state is not GuestState.DESTROYED:
            self.scan_for_crashes()
        return super().crashes

    def on_crash(self, crash: Any) -> None:
        """A driver's unhandled exception kills winedevice.exe, not the prefix: the prefix
        stays usable (stopping services, reading files), so it is not marked crashed; the
        test fails through :meth:`unexpected_crashes` all the same."""

    def crash_excerpt(self) -> str:
        """The first unhandled exception's report (fault, registers, backtrace), or ""."""
        crashes = self.crashes
        return crashes[0].report.text if crashes else ""

    # ---- files -----------------------------------------------------------------------------------
    def unix_path(self, remote: str) -> Path:
        r"""``C:\x\y`` -> ``<prefix>/drive_c/x/y`` (only drive C: is mapped)."""
        return self.transport.unix_path(remote)

    def exists(self, remote: str) -> bool:
        return self.transport.exists(remote)

    # ---- kernel-driver services (hilsvc.exe); the uniform interface is ``self.deployer`` ----------
    def _svc(self, *args: str, timeout: float = 60.0) -> RunResult:
        if "hilsvc.exe" not in self.tools:
            raise GuestError("a Wine guest needs tools={'hilsvc.exe': ...} for driver services")
        return self.run([ntpath.join(TOOLS_DIR, "hilsvc.exe"), *args], timeout=timeout)

    def install_driver(self, sys_file: Path, service: str, **params: int) -> str:
        """Copy the driver to system32\\drivers and create a kernel-driver service; ``params``
        become REG_DWORD values under the service's Parameters key."""
        remote = ntpath.join(r"C:\windows\system32\drivers", f"{service}.sys")
        self.put(sys_file, remote)
        args = ["install", service, remote] + [f"{k}={int(v)}" for k, v in params.items()]
        res = self._svc(*args)
        if res.exit_code != 0:
            raise GuestError(
                f"installing {service} failed: {res.text.strip()} {res.stderr.decode(errors='replace')[-500:]}"
            )
        return remote

    def start_driver(self, service: str, retries: int = 1) -> None:
        for attempt in range(retries + 1):
            res = self._svc("start", service)
            if res.exit_code in (0, ERROR_SERVICE_ALREADY_RUNNING):
                return
            if res.exit_code == ERROR_SERVICE_REQUEST_TIMEOUT and attempt < retries:
                # Wine 8.0: the first start after a boot can time out; a fresh wineserver works.
                self.restart()
                continue
            raise GuestError(
                f"starting driver {service} failed: {res.text.strip()}",
                f"look at the DbgPrint/crash output in {self.debug_log}",
            )

    def stop_driver(self, service: str, timeout_ms: int = 20000) -> RunResult:
        return self._svc("stop", service, str(timeout_ms), timeout=timeout_ms / 1000 + 30)

    def delete_driver(self, service: str) -> RunResult:
        return self._svc("delete", service)

    def service_state(self, service: str) -> int | None:
        res = self._svc("query", service)
        m = re.search(r"state (\d+)", res.text)
        return int(m.group(1)) if m else None

    # ---- DbgPrint --------------------------------------------------------------------------------
    def dbgprint_lines(self) -> list[DbgLine]:
        out = []
        for raw in self.console_text().splitlines():
            m = _DBG_RE.match(raw)
            if m:
                out.append(DbgLine(m.group(1).rstrip(), raw))
        return out

    def log_text(self) -> str:
        return self.console_text()

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        """Wait until a DbgPrint line (from index ``start``) matches ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            lines = self.dbgprint_lines()
            for line in lines[start:]:
                m = rx.search(line.text)
                if m:
                    return m
            if time.monotonic() >= deadline:
                tail = "\n".join(dl.text for dl in lines[-15:]) or "(no DbgPrint output)"
                crash = self.crash
                raise GuestError(
                    f"no DbgPrint line matching {pattern!r} within {timeout:g} s in {self.name}; last lines:\n{tail}",
                    f"a driver crashed ({crash.title}): see {self.debug_log}"
                    if crash
                    else f"full log: {self.debug_log}",
                )
            time.sleep(0.05)  # polling a log file: the condition is re-checked, with a deadline

    def crashed(self) -> bool:
        return bool(self.crashes)

    def run(self, cmd: Command, timeout: float = 60.0, input: bytes | None = None, check: bool = False) -> RunResult:
        return super().run(cmd, timeout=timeout, input=input, check=check)
