"""A WinRM guest transport (pywinrm): run cmd/PowerShell, copy files in base64 chunks.

    t = WinRMTransport("127.0.0.1", 55985, "hil", "secret")
    t.wait_ready(timeout=600)
    t.run("sc query hilagent").check()
    t.put(Path("hilagent.sys"), r"C:\\hil\\hilagent.sys")

Same method names as :class:`hil.transport.base.GuestTransport` (``run``, ``put``, ``get``,
``write_file``, ``read_file``, ``wait_ready``), plus ``run_cmd`` / ``run_ps`` as in pywinrm.
One WinRM shell is opened per transport and reused for every command (pywinrm's
``Session.run_cmd`` opens and closes one per call: four round trips more each time).

File copy: pywinrm has none, so ``write_file`` sends the data in chunks of ``chunk_size``
bytes, each a short PowerShell script (``WINRS_SKIP_CMD_SHELL``: no 8191-character cmd.exe
limit) appending base64-decoded bytes to ``<path>.hilpart``; the last step checks the SHA-256
of the whole file on the guest and renames it into place.  ``read_file`` does the reverse with
``[IO.File]::ReadAllBytes`` slices.  The scripts are fixed templates (:data:`PS_APPEND`, ...)
so the fake WS-Man server in the tests can emulate them.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from pathlib import Path

from hil.errors import EnvironmentProblem, GuestError
from hil.steps import step
from hil.transport.base import RunResult, Spawned

PS_APPEND = "$p='{path}.hilpart';$b=[Convert]::FromBase64String('{data}');$f=[IO.File]::Open($p,'{mode}','Write');$f.Write($b,0,$b.Length);$f.Close()"
PS_COMMIT = (
    "$p='{path}';$h=(Get-FileHash -Algorithm SHA256 -LiteralPath ($p+'.hilpart')).Hash.ToLower();"
    "if($h -ne '{sha256}'){{Remove-Item -LiteralPath ($p+'.hilpart');Write-Error \"hash mismatch $h\";exit 3}};"
    "Move-Item -Force -LiteralPath ($p+'.hilpart') -Destination $p"
)
PS_SIZE = "(Get-Item -LiteralPath '{path}').Length"
PS_READ = (
    "$f=[IO.File]::OpenRead('{path}');$f.Seek({offset},'Begin')|Out-Null;$b=New-Object byte[] {count};"
    "$n=$f.Read($b,0,{count});$f.Close();[Convert]::ToBase64String($b,0,$n)"
)
PS_MKDIR = "New-Item -ItemType Directory -Force -Path '{path}'|Out-Null"
# A background command: cmd.exe with delayed expansion writes the command's exit code to a file
# when it ends (WinRM cannot wait for a process it did not start in the same shell).
PS_SPAWN = (
    "$a='/v:on /c \"'+'{cmd}'+' & echo !errorlevel!> \"{rc}\"\"';"
    "(Start-Process -FilePath cmd.exe -ArgumentList $a -WindowStyle Hidden -PassThru).Id"
)
PS_SPAWN_RC = (
    "$p='{rc}';if(Test-Path -LiteralPath $p){{(Get-Content -LiteralPath $p -Raw).Trim();Remove-Item -LiteralPath $p}}"
)
SPAWN_DIR = r"C:\Windows\Temp"


def ps_quote(s: str) -> str:
    """Quote for a single-quoted PowerShell string."""
    return s.replace("'", "''")


class WinRMTransport:
    """host/port: where WinRM listens (a libvirt user-network hostfwd to the guest's 5985)
    user/password: a local administrator of the guest
    transport: pywinrm transport ("ntlm" for a real guest, "basic" for the fake server)
    scheme: "http" (lab images enable HTTP WinRM on the private forward only) or "https"
    chunk_size: bytes of file data per PowerShell call
    """

    kind = "winrm"

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        transport: str = "ntlm",
        scheme: str = "http",
        chunk_size: int = 6000,
        operation_timeout: int = 20,
    ):
        if not user:
            raise GuestError("WinRM needs a user name", "set [windows] winrm_user in hil.toml")
        if chunk_size <= 0 or chunk_size > 24000:
            raise ValueError("chunk_size must be in 1..24000 bytes (command line limit)")
        self.host, self.port, self.user, self.password = host, port, user, password
        self.transport = transport
        self.scheme = scheme
        self.chunk_size = chunk_size
        self.operation_timeout = operation_timeout
        self._protocol = None
        self._shell: str | None = None

    # ---- connection ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/wsman"

    def _proto(self):
        if self._protocol is None:
            try:
                from winrm.protocol import Protocol
            except ImportError as exc:  # pragma: no cover - declared dependency
                raise EnvironmentProblem("pywinrm is not installed", "pip install pywinrm") from exc
            self._protocol = Protocol(
                self.endpoint,
                transport=self.transport,
                username=self.user,
                password=self.password,
                server_cert_validation="ignore",
                operation_timeout_sec=self.operation_timeout,
                read_timeout_sec=self.operation_timeout + 10,
            )
        return self._protocol

    def _shell_id(self) -> str:
        if self._shell is None:
            self._shell = self._proto().open_shell()
        return self._shell

    def close(self) -> None:
        if self._shell is not None and self._protocol is not None:
            try:
                self._protocol.close_shell(self._shell)
            finally:
                self._shell = None

    def __enter__(self) -> WinRMTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 600.0, interval: float = 5.0) -> None:
        """Wait until a trivial command runs (WinRM comes up late in a Windows boot)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.run_cmd("echo ready").check()
                return
            except Exception as exc:  # connection refused, 5xx while the service starts, ...
                last = exc
                self._shell = None
                self._protocol = None
                time.sleep(interval)  # retrying a network service that is still booting
        raise GuestError(
            f"WinRM at {self.endpoint} did not answer within {timeout:g} s: {last}",
            "check the guest ran guests/windows/firstboot.ps1 (WinRM enabled)",
        )

    # ---- commands --------------------------------------------------------------------------

    def _execute(
        self, command: str, args: list[str], skip_cmd_shell: bool, shown: str, timeout: float = 600.0
    ) -> RunResult:
        from winrm.exceptions import WinRMOperationTimeoutError

        proto = self._proto()
        t0 = time.monotonic()
        deadline = t0 + timeout
        out, err = bytearray(), bytearray()
        with step("winrm-run", host=f"{self.host}:{self.port}", cmd=shown[:200]):
            shell = self._shell_id()
            cid = proto.run_command(shell, command, args, skip_cmd_shell=skip_cmd_shell)
            try:
                while True:
                    try:
                        o, e, code, done = proto.get_command_output_raw(shell, cid)
                    except WinRMOperationTimeoutError:
                        o, e, code, done = b"", b"", -1, False  # no output yet: poll again
                    out += o
                    err += e
                    if done:
                        break
                    if time.monotonic() > deadline:
                        raise GuestError(f"{shown[:200]!r} did not finish within {timeout:g} s on {self.endpoint}")
            finally:
                proto.cleanup_command(shell, cid)  # Signal terminate: also stops a timed-out command
        return RunResult(shown, code, bytes(out), bytes(err), time.monotonic() - t0)

    def run_cmd(self, command: str, args: list[str] | tuple[str, ...] = (), timeout: float = 600.0) -> RunResult:
        """A cmd.exe command line (``sc query x``)."""
        return self._execute(command, list(args), False, " ".join([command, *args]), timeout)

    def run_ps(self, script: str, timeout: float = 600.0) -> RunResult:
        """A PowerShell script, sent as ``-EncodedCommand`` (UTF-16LE base64)."""
        encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
        return self._execute(
            "powershell.exe",
            ["-NoProfile", "-NonInteractive", "-EncodedCommand", encoded],
            True,
            f"powershell: {script[:120]}",
            timeout,
        )

    def run(self, cmd: str, timeout: float = 60.0, input: bytes | None = None) -> RunResult:
        if input is not None:
            raise GuestError("WinRMTransport.run does not support stdin input")
        return self.run_cmd(cmd, timeout=timeout)

    def spawn(self, cmd: str) -> Spawned:
        """Start a cmd.exe command line in the background; ``wait`` returns its exit code."""
        rc_file = rf"{SPAWN_DIR}\hil-spawn-{uuid.uuid4().hex[:12]}.rc"
        res = self.run_ps(PS_SPAWN.format(cmd=ps_quote(cmd), rc=rc_file)).check()
        try:
            pid = int(res.stdout.decode(errors="replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise GuestError(f"starting {cmd!r} on {self.endpoint}: no process id in {res.text!r}") from None
        return Spawned(pid, cmd, lambda timeout: self._wait_spawned(cmd, rc_file, timeout))

    def _wait_spawned(self, cmd: str, rc_file: str, timeout: float, interval: float = 1.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            out = self.run_ps(PS_SPAWN_RC.format(rc=ps_quote(rc_file))).check().text.strip()
            if out:
                return int(out)
            if time.monotonic() >= deadline:
                raise GuestError(f"{cmd!r} still running on {self.endpoint} after {timeout:g} s")
            time.sleep(interval)  # each poll is a WinRM round trip: once a second is plenty

    def abort(self, reason: str) -> None:
        """The guest bug-checked: drop the shell (the next call fails instead of hanging)."""
        self._shell = None
        self._protocol = None

    # ---- files -----------------------------------------------------------------------------

    def mkdir(self, remote_dir: str) -> None:
        self.run_ps(PS_MKDIR.format(path=ps_quote(remote_dir))).check()

    def write_file(self, remote: str, data: bytes) -> None:
        path = ps_quote(remote)
        with step("winrm-put", path=remote, bytes=len(data)):
            chunks = [data[i : i + self.chunk_size] for i in range(0, len(data), self.chunk_size)] or [b""]
            for i, chunk in enumerate(chunks):
                script = PS_APPEND.format(
                    path=path, data=base64.b64encode(chunk).decode("ascii"), mode="Create" if i == 0 else "Append"
                )
                self.run_ps(script).check()
            self.run_ps(PS_COMMIT.format(path=path, sha256=hashlib.sha256(data).hexdigest())).check()

    def read_file(self, remote: str) -> bytes:
        path = ps_quote(remote)
        size_res = self.run_ps(PS_SIZE.format(path=path)).check()
        size = int(size_res.stdout.decode().strip() or "0")
        out = bytearray()
        while len(out) < size:
            count = min(self.chunk_size * 3, size - len(out))
            res = self.run_ps(PS_READ.format(path=path, offset=len(out), count=count)).check()
            piece = base64.b64decode(res.stdout.strip())
            if not piece:
                raise GuestError(f"reading {remote}: no data at offset {len(out)} of {size}")
            out += piece
        return bytes(out)

    def put(self, local: Path, remote: str) -> None:
        self.write_file(remote, Path(local).read_bytes())

    def get(self, remote: str, local: Path) -> None:
        Path(local).write_bytes(self.read_file(remote))
