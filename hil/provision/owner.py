"""Who owns a guest: the identity written into every domain and runtime folder we create.

A guest belongs to one process (a pytest session or an xdist worker).  Its owner record holds
that process's PID and kernel start time (so a recycled PID is not mistaken for the owner),
the worker name and a session id.  The leak sweep removes exactly what belongs to owners that
no longer exist, and never a live session's guests.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

DOMAIN_PREFIX = "hil-"


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None
    when there is no such process.  A zombie (killed, not yet reaped by its parent: an xdist
    worker right after ``kill -9``) counts as gone: it will never remove its guests."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


@dataclass(frozen=True)
class Owner:
    session: str
    worker: str
    pid: int
    start: str
    host: str

    @classmethod
    def current(cls, worker: str | None = None, session: str | None = None) -> Owner:
        pid = os.getpid()
        worker = worker or os.environ.get("PYTEST_XDIST_WORKER", "main")
        return cls(
            session=session or uuid.uuid4().hex[:8],
            worker=worker,
            pid=pid,
            start=process_start_time(pid) or "0",
            host=socket.gethostname(),
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "session": self.session,
            "worker": self.worker,
            "pid": str(self.pid),
            "start": self.start,
            "host": self.host,
        }

    def prefix(self) -> str:
        """Every domain name this owner creates starts with this."""
        return f"{DOMAIN_PREFIX}{self.session}-{self.worker}-"

    @staticmethod
    def is_alive(record: dict[str, str]) -> bool:
        """Is the process that wrote this owner record still running (on this host)?"""
        if record.get("host") not in (None, socket.gethostname()):
            return True  # another machine's guest on a shared libvirt: never ours to judge
        if record.get("keep") == "1":
            return True  # kept on purpose (--hil-keep-failed): removed only by `hil sweep --kept`
        try:
            pid = int(record.get("pid", ""))
        except ValueError:
            return False
        return process_start_time(pid) == record.get("start")
