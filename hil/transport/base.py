"""The capability a suite asks for: run a command, move files, start background work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from hil.errors import GuestError


@dataclass(frozen=True)
class RunResult:
    command: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def check(self) -> RunResult:
        if self.exit_code != 0:
            err = self.stderr.decode(errors="replace").strip()[-2000:]
            raise GuestError(f"command {self.command!r} exited {self.exit_code}" + (f": {err}" if err else ""))
        return self


@runtime_checkable
class GuestTransport(Protocol):
    def run(self, cmd: str, timeout: float = 60.0, input: bytes | None = None) -> RunResult: ...

    def spawn(self, cmd: str) -> int: ...

    def write_file(self, remote: str, data: bytes) -> None: ...

    def read_file(self, remote: str) -> bytes: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def wait_ready(self, timeout: float) -> None: ...
