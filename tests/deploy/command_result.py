"""What a faked guest command returns in the deploy tests (the shape of ``guest.run``'s result)."""

from __future__ import annotations

from dataclasses import dataclass

from hil.errors import GuestError


@dataclass
class CommandResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""

    def check(self):
        if self.exit_code:
            raise GuestError(f"exit {self.exit_code}")
        return self
