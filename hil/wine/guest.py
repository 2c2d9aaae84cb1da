"""A Wine prefix used as a Windows "guest": kernel drivers load into winedevice.exe.

    with WineGuest(workdir) as guest:                 # clone, boot, capture DbgPrint
        guest.install_driver(build["hilsocks.sys"], "hilsocks", Port=50007)
        guest.start_driver("hilsocks")
        guest.wait_for_log(r"\\[hilsocks\\] listening", timeout=20)
        guest.run(r"C:\\tools\\hilsvc.exe query hilsocks").check()
        guest.stop_driver("hilsocks"); guest.delete_driver("hilsocks")
                                                       # exit: wineserver -k, prefix removed

Same method names as the Linux guest transport (``run``/``put``/``get``/``write_file``/
``read_file``/``spawn``/``wait_ready``), so helpers written against
:class:`hil.transport.base.GuestTransport` work here too.

DbgPrint output: Wine prints it on the ``debugstr`` channel of the process that calls it
(winedevice.exe).  That process is started by services.exe, which inherits stderr and
WINEDEBUG from the command that started the prefix, so :meth:`boot` starts the prefix with
``WINEDEBUG=-all,+debugstr`` and stderr appended to ``wine-debug.log``;
:meth:`dbgprint_lines` extracts the DbgPrint texts from it.

Known Wine 8.0 quirks handled here: the wineserver is started persistent (``-p``), otherwise
it stops services.exe and unloads every driver a few seconds after the last user process ends;
the first StartService after a boot may fail with 1053
(ERROR_SERVICE_REQUEST_TIMEOUT); :meth:`start_driver` then restarts the prefix and retries.
"""

from __future__ import annotations

import ntpath
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hil.errors import GuestError
from hil.steps import step
from hil.transport.base import RunResult
from hil.wine import prefix as wprefix

ERROR_SERVICE_REQUEST_TIMEOUT = 1053
ERROR_SERVICE_ALREADY_RUNNING = 1056
TOOLS_DIR = r"C:\hil"
_DBG_RE = re.compile(r"^[0-9a-f]+:(?:warn|trace|err|fixme):debugstr:\w+ (?:[0-9a-f]{8}:[0-9a-f]{8}: )?(.*)$")


@dataclass(frozen=True)
class DbgLine:
    text: str
    raw: str


class WineGuest:
    """A per-test Wine prefix.

    workdir: a directory owned by the caller (e.g. pytest's tmp_path); the prefix itself lives
        next to the template in the cache (hard links need one filesystem) and is removed by
        :meth:`destroy`; logs stay in ``workdir``.
    tools: optional mapping {name: local path} of executables copied to ``C:\\hil\\`` at boot
        (``hilsvc.exe`` is required for the driver helpers).
    name: a label for logs and step records.
    debug_channels: extra WINEDEBUG channels for the prefix's services (e.g. ``+netio``).
    """

    kind = "wine"

    def __init__(
        self, workdir: Path, tools: dict[str, Path] | None = None, name: str = "wine", debug_channels: str = ""
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.tools = dict(tools or {})
        self.debug_channels = debug_channels
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        # <worker>-<pid>-<random>: reap_stale_prefixes() recognises prefixes of dead runs.
        self.prefix = wprefix.template_dir().parent / "run" / f"{worker}-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.debug_log = self.workdir / "wine-debug.log"
        self.state = "defined"
        self._log_fh = None

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> WineGuest:
        self.boot()
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    @property
    def env(self) -> dict[str, str]:
        return wprefix.base_env(self.prefix)

    def boot(self) -> None:
        if self.state == "defined":
            wprefix.reap_stale_prefixes(self.prefix.parent)
            with step("wine-clone", guest=self.name):
                self.prefix.parent.mkdir(parents=True, exist_ok=True)
                wprefix.clone_prefix(self.prefix)
            for tname, local in self.tools.items():
                self.put(Path(local), ntpath.join(TOOLS_DIR, tname))
        self._start_prefix()
        self.state = "ready"

    def _start_prefix(self) -> None:
        with step("wine-boot", guest=self.name):
            self._log_fh = open(self.debug_log, "ab")
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
            env["WINEDEBUG"] = "-all,+debugstr,err+module" + (f",{self.debug_channels}" if self.debug_channels else "")
            # services.exe and winedevice.exe inherit this stderr: it is the DbgPrint log.
            proc = subprocess.run(
                [wprefix.wine_binary(), "wineboot"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=self._log_fh,
                timeout=120,
            )
            if proc.returncode != 0:
                raise GuestError(f"wineboot failed in {self.prefix} (exit {proc.returncode}); see {self.debug_log}")

    def restart(self) -> None:
        """Kill every process of the prefix and start it again (drivers are not restarted)."""
        wprefix.kill_prefix(self.prefix)
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None
        self._start_prefix()

    def destroy(self) -> None:
        if self.state == "destroyed":
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
        self.state = "destroyed"

    def wait_ready(self, timeout: float = 60.0) -> None:
        if self.state != "ready":
            self.boot()

    # ---- transport -------------------------------------------------------------------------

    def unix_path(self, remote: str) -> Path:
        r"""``C:\x\y`` -> ``<prefix>/drive_c/x/y`` (only drive C: is mapped)."""
        drive, rest = ntpath.splitdrive(remote)
        if drive.upper() != "C:":
            raise GuestError(f"only C: paths are supported in a Wine guest, got {remote!r}")
        parts = [p for p in rest.replace("/", "\\").split("\\") if p]
        if any(p == ".." for p in parts):
            raise GuestError(f"'..' is not allowed in guest paths: {remote!r}")
        return self.prefix / "drive_c" / Path(*parts) if parts else self.prefix / "drive_c"

    def run(self, cmd: str | list[str], timeout: float = 60.0, input: bytes | None = None) -> RunResult:
        """Run a Windows command line through ``cmd /c`` (str) or a program with arguments
        (list: ``[r"C:\\hil\\hilsvc.exe", "query", "x"]``)."""
        argv = [wprefix.wine_binary()]
        argv += ["cmd", "/c", cmd] if isinstance(cmd, str) else list(cmd)
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        t0 = time.monotonic()
        with step("wine-run", guest=self.name, cmd=shown):
            try:
                proc = subprocess.run(argv, env=self.env, input=input, capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise GuestError(f"{shown!r} did not finish within {timeout:g} s in {self.name}") from exc
        return RunResult(shown, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)

    def spawn(self, cmd: str | list[str]) -> subprocess.Popen:
        argv = [wprefix.wine_binary()] + (["cmd", "/c", cmd] if isinstance(cmd, str) else list(cmd))
        return subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def write_file(self, remote: str, data: bytes) -> None:
        dest = self.unix_path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:6]}")
        tmp.write_bytes(data)
        # Replace, never write in place: the old file may be a hard link into the template.
        os.replace(tmp, dest)

    def read_file(self, remote: str) -> bytes:
        return self.unix_path(remote).read_bytes()

    def put(self, local: Path, remote: str) -> None:
        self.write_file(remote, Path(local).read_bytes())

    def get(self, remote: str, local: Path) -> None:
        Path(local).write_bytes(self.read_file(remote))

    def exists(self, remote: str) -> bool:
        return self.unix_path(remote).exists()

    # ---- kernel drivers --------------------------------------------------------------------

    def _svc(self, *args: str, timeout: float = 60.0) -> RunResult:
        if "hilsvc.exe" not in self.tools:
            raise GuestError("WineGuest needs tools={'hilsvc.exe': ...} for driver services")
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

    # ---- DbgPrint --------------------------------------------------------------------------

    def dbgprint_lines(self) -> list[DbgLine]:
        if not self.debug_log.exists():
            return []
        out = []
        for raw in self.debug_log.read_text(errors="replace").splitlines():
            m = _DBG_RE.match(raw)
            if m:
                out.append(DbgLine(m.group(1).rstrip(), raw))
        return out

    def log_text(self) -> str:
        return self.debug_log.read_text(errors="replace") if self.debug_log.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
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
                crash = "Unhandled" in self.log_text()
                raise GuestError(
                    f"no DbgPrint line matching {pattern!r} within {timeout:g} s in {self.name}; last lines:\n{tail}",
                    "the driver crashed: see " + str(self.debug_log) if crash else f"full log: {self.debug_log}",
                )
            time.sleep(0.05)  # polling a log file: the condition is re-checked, with a deadline

    def crash_excerpt(self, before: int = 5, after: int = 25) -> str:
        """The log lines around the first unhandled exception (what Wine prints for a driver
        crash: the fault, registers, backtrace), or "" when nothing crashed."""
        lines = self.log_text().splitlines()
        at = next(
            (i for i, line in enumerate(lines) if "Unhandled page fault" in line or "Unhandled exception" in line), None
        )
        return "" if at is None else "\n".join(lines[max(0, at - before) : at + after])

    def crashed(self) -> bool:
        return "Unhandled page fault" in self.log_text() or "Unhandled exception" in self.log_text()
