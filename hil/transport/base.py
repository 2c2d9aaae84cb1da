"""The capability a suite asks for: run a command, move files, start background work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Spawned:
    """A background process a transport started: its PID in the guest and how to wait for it.

    Every transport's ``spawn`` returns one, so ``guest.spawn(cmd).wait(timeout)`` reads the
    same on a Linux guest, a Windows lab guest and a Wine prefix.
    """

    pid: int
    command: str
    waiter: Callable[[float], int] = field(repr=False, compare=False)

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code, once the process has ended; :class:`GuestError` after ``timeout``."""
        return self.waiter(timeout)


@runtime_checkable
class GuestTransport(Protocol):
    """How the framework reaches inside one guest (qemu-guest-agent, WinRM, a Wine prefix)."""

    def run(self, cmd: str, timeout: float = 60.0, input: bytes | None = None) -> RunResult: ...

    def spawn(self, cmd: str) -> Spawned: ...

    def write_file(self, remote: str, data: bytes) -> None: ...

    def read_file(self, remote: str) -> bytes: ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def wait_ready(self, timeout: float) -> None: ...

    def close(self) -> None: ...

    def abort(self, reason: str) -> None:
        """The guest crashed: every later call fails at once naming ``reason``."""
        ...
