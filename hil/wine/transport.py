"""The transport into a Wine prefix: programs run by ``wine``, files under ``drive_c``.

Implements :class:`hil.transport.base.GuestTransport`, so helpers written for a guest work on
a prefix too.  Only drive ``C:`` is mapped; ``..`` is refused in guest paths.
"""

from __future__ import annotations

import ntpath
import os
import subprocess
import time
import uuid
from pathlib import Path

from hil.errors import GuestError
from hil.steps import step
from hil.transport.base import RunResult, Spawned
from hil.wine import prefix as wprefix

Command = str | list[str]


def _argv(cmd: Command) -> list[str]:
    """``cmd /c <line>`` for a string, the program and its arguments for a list."""
    return [wprefix.wine_binary()] + (["cmd", "/c", cmd] if isinstance(cmd, str) else list(cmd))


def _shown(cmd: Command) -> str:
    return cmd if isinstance(cmd, str) else " ".join(cmd)


class WineTransport:
    """prefix: the prefix folder; name: the guest's label for errors and step records."""

    def __init__(self, prefix: Path, name: str):
        self.prefix = Path(prefix)
        self.name = name
        self.aborted: str | None = None

    @property
    def env(self) -> dict[str, str]:
        return wprefix.base_env(self.prefix)

    def unix_path(self, remote: str) -> Path:
        r"""``C:\x\y`` -> ``<prefix>/drive_c/x/y``."""
        drive, rest = ntpath.splitdrive(remote)
        if drive.upper() != "C:":
            raise GuestError(f"only C: paths are supported in a Wine guest, got {remote!r}")
        parts = [p for p in rest.replace("/", "\\").split("\\") if p]
        if any(p == ".." for p in parts):
            raise GuestError(f"'..' is not allowed in guest paths: {remote!r}")
        return self.prefix / "drive_c" / Path(*parts) if parts else self.prefix / "drive_c"

    def run(self, cmd: Command, timeout: float = 60.0, input: bytes | None = None) -> RunResult:
        """A Windows command line through ``cmd /c`` (str) or a program with arguments
        (list: ``[r"C:\\hil\\hilsvc.exe", "query", "x"]``)."""
        shown = _shown(cmd)
        t0 = time.monotonic()
        with step("wine-run", guest=self.name, cmd=shown):
            try:
                proc = subprocess.run(_argv(cmd), env=self.env, input=input, capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise GuestError(f"{shown!r} did not finish within {timeout:g} s in {self.name}") from exc
        return RunResult(shown, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)

    def spawn(self, cmd: Command) -> Spawned:
        proc = subprocess.Popen(_argv(cmd), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def wait(timeout: float) -> int:
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise GuestError(f"{_shown(cmd)!r} still running in {self.name} after {timeout:g} s") from None

        return Spawned(proc.pid, _shown(cmd), wait)

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

    def wait_ready(self, timeout: float) -> None:
        """A started prefix is ready: ``wineboot`` returned."""

    def close(self) -> None:
        """Nothing held open: each command is its own process."""

    def abort(self, reason: str) -> None:
        self.aborted = reason
