"""Linux guest transport over qemu-guest-agent, through libvirt (``qemuAgentCommand``).

Commands run with ``guest-exec`` (``/bin/sh -c``) under the guest's own ``timeout`` so a
runaway command is killed inside the guest; files move with ``guest-file-*`` in chunks.
Every agent exchange is appended to a transcript that becomes a test artifact.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

from hil.errors import GuestError
from hil.transport.base import RunResult, Spawned

# Measured limits of one agent message through libvirt 9.0 and qemu-ga 7.2: reads of 1 MiB
# (1.4 MB of base64 in the reply) work at about 3 MB/s under TCG, 4 MiB fail to encode; writes
# above 64 KiB make libvirt report the agent "not available".
READ_CHUNK = 1 << 20
WRITE_CHUNK = 64 << 10
POLL_MIN, POLL_MAX = 0.005, 0.1


class AgentTranscript:
    """A bounded, human-readable record of agent exchanges (payloads abbreviated)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()

    def write(self, direction: str, text: str) -> None:
        if self.path is None:
            return
        if len(text) > 400:
            text = text[:400] + f"... ({len(text)} chars)"
        with self._lock, open(self.path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {direction} {text}\n")


class QgaTransport:
    """Implements :class:`~hil.transport.base.GuestTransport` for a libvirt domain."""

    def __init__(self, domain, guest_name: str, transcript: Path | None = None):
        self.domain = domain
        self.guest_name = guest_name
        self.transcript = AgentTranscript(transcript)
        self.aborted: str | None = None  # set by the crash monitor: why every call fails now
        self._aborted = threading.Event()  # wakes a caller whose agent exchange is in flight
        self.last_reply = 0.0  # time.monotonic() of the last agent answer (a sign of life)
        # How long one agent exchange may take by default.  A crashed guest's call ends at once
        # anyway (the crash monitor aborts the transport), so this only bounds a silent agent;
        # the lab raises it further while a guest boots.  One timed-out exchange makes libvirt
        # refuse the agent afterwards ("not available for now"), and under TCG on a loaded
        # 2-core host (CI: two workers, one running nested suites) 10 s was seen to be too short.
        self.agent_timeout = 30.0

    def abort(self, reason: str) -> None:
        """The guest crashed: make waits end now (an exchange in flight too) and errors name
        ``reason``."""
        self.aborted = reason
        self._aborted.set()

    def _check_aborted(self, what: str) -> None:
        if self.aborted:
            raise GuestError(
                f"guest {self.guest_name} crashed while {what}: {self.aborted}",
                "see the crash report (crash.txt) and the console log",
            )

    # --- raw agent access -------------------------------------------------------------
    def command(
        self, execute: str, arguments: dict | None = None, timeout: float | None = None, what: str | None = None
    ) -> Any:
        """The command's ``return`` member: a dict for most commands, an int handle for guest-file-open."""
        import libvirt
        import libvirt_qemu

        msg: dict[str, object] = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        text = json.dumps(msg)
        self.transcript.write(">", text)
        doing = f"waiting for agent command {execute}" + (f" for {what!r}" if what else "")
        self._check_aborted(doing)
        timeout = self.agent_timeout if timeout is None else timeout
        # The exchange runs on a helper thread so that a crash ends the wait at once: a dead
        # guest's agent never answers, and libvirt would hold the caller for the whole timeout.
        outcome: dict[str, Any] = {}
        finished = threading.Event()

        def exchange() -> None:
            try:
                outcome["reply"] = libvirt_qemu.qemuAgentCommand(self.domain, text, max(1, int(timeout + 0.999)), 0)
            except libvirt.libvirtError as exc:
                outcome["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=exchange, name=f"qga-{self.guest_name}", daemon=True).start()
        while not finished.wait(0.05):
            if self._aborted.is_set():
                self.transcript.write("!", f"abandoned: {self.aborted}")
                self._check_aborted(doing)
        try:
            if "error" in outcome:
                raise outcome["error"]
            reply = outcome["reply"]
        except libvirt.libvirtError as exc:
            self.transcript.write("!", exc.get_error_message())
            self._check_aborted(doing)
            raise GuestError(
                f"guest {self.guest_name}: agent command {execute}"
                + (f" for {what!r}" if what else "")
                + f" failed: {exc.get_error_message()}",
                "the guest may have crashed or hung: look at its console log",
            ) from None
        self.transcript.write("<", reply)
        self.last_reply = time.monotonic()
        return json.loads(reply)["return"]

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            self.command("guest-ping", timeout=timeout)
            return True
        except GuestError:
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping(timeout=min(2.0, max(0.5, deadline - time.monotonic()))):
                return
            time.sleep(0.1)
        raise GuestError(
            f"guest {self.guest_name}: qemu-guest-agent did not answer within {timeout:.0f}s",
            "look at the console log: did the guest boot, and is qemu-guest-agent installed?",
        )

    # --- commands ---------------------------------------------------------------------
    def _exec(self, cmd: str, capture: bool, input: bytes | None = None, timeout: float | None = None) -> int:
        argv = ["-c", cmd]
        if timeout is not None:
            # the guest kills the command itself; our own deadline below is a little later
            argv = ["-c", f'exec timeout -s KILL {max(1, int(timeout + 0.999))} /bin/sh -c "$0"', cmd]
        args: dict = {"path": "/bin/sh", "arg": argv, "capture-output": capture}
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        return self.command("guest-exec", args, what=cmd)["pid"]

    def exec_status(self, pid: int, what: str | None = None) -> dict:
        return self.command("guest-exec-status", {"pid": pid}, what=what)

    def run(self, cmd: str, timeout: float = 60.0, input: bytes | None = None) -> RunResult:
        t0 = time.monotonic()
        pid = self._exec(cmd, capture=True, input=input, timeout=timeout)
        deadline = t0 + timeout + 5.0
        delay = POLL_MIN
        while True:
            st = self.exec_status(pid, what=cmd)
            if st.get("exited"):
                break
            self._check_aborted(f"running {cmd!r}")
            if time.monotonic() > deadline:
                raise GuestError(
                    f"guest {self.guest_name}: command {cmd!r} did not finish within {timeout:.0f}s",
                    "raise its timeout, or look at the console log for a hang",
                )
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
        code = st.get("exitcode")
        if code is None:  # killed by a signal: report it like a shell would
            code = 128 + int(st.get("signal", 0))
        if code == 137 and time.monotonic() - t0 >= timeout:
            raise GuestError(
                f"guest {self.guest_name}: command {cmd!r} was killed after its {timeout:.0f}s timeout",
                "raise its timeout, or look at the console log for a hang",
            )
        return RunResult(
            command=cmd,
            exit_code=code,
            stdout=base64.b64decode(st.get("out-data", "")),
            stderr=base64.b64decode(st.get("err-data", "")),
            duration=time.monotonic() - t0,
        )

    def spawn(self, cmd: str) -> Spawned:
        """Start ``cmd`` in the background (output discarded)."""
        pid = self._exec(f"exec >/dev/null 2>&1 </dev/null; {cmd}", capture=False)
        return Spawned(pid, cmd, lambda timeout: self.wait(pid, timeout))

    def wait(self, pid: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        delay = POLL_MIN
        while time.monotonic() < deadline:
            st = self.exec_status(pid)
            if st.get("exited"):
                return st.get("exitcode", 128 + int(st.get("signal", 0)))
            self._check_aborted(f"waiting for background process {pid}")
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
        raise GuestError(f"guest {self.guest_name}: background process {pid} still running after {timeout:.0f}s")

    # --- files ------------------------------------------------------------------------
    def _open(self, remote: str, mode: str) -> int:
        return self.command("guest-file-open", {"path": remote, "mode": mode}, what=remote)

    def write_file(self, remote: str, data: bytes) -> None:
        self._write_chunks(remote, (data[i : i + WRITE_CHUNK] for i in range(0, len(data), WRITE_CHUNK)))

    def _write_chunks(self, remote: str, chunks) -> None:
        handle = self._open(remote, "w")
        try:
            for chunk in chunks:
                done = self.command(
                    "guest-file-write",
                    {"handle": handle, "buf-b64": base64.b64encode(chunk).decode()},
                    timeout=30,
                    what=remote,
                )
                if done["count"] != len(chunk):
                    raise GuestError(
                        f"guest {self.guest_name}: short write to {remote} ({done['count']} of {len(chunk)} bytes)",
                        "is the guest's disk full?",
                    )
        finally:
            self.command("guest-file-close", {"handle": handle}, what=remote)

    def read_file(self, remote: str) -> bytes:
        out = bytearray()
        for chunk in self._read_chunks(remote):
            out += chunk
        return bytes(out)

    def _read_chunks(self, remote: str):
        handle = self._open(remote, "r")
        try:
            while True:
                r = self.command("guest-file-read", {"handle": handle, "count": READ_CHUNK}, timeout=30, what=remote)
                if r["count"]:
                    yield base64.b64decode(r["buf-b64"])
                if r.get("eof") or not r["count"]:
                    return
        finally:
            self.command("guest-file-close", {"handle": handle}, what=remote)

    def put(self, local: Path, remote: str) -> None:
        def chunks():
            with open(local, "rb") as f:
                while chunk := f.read(WRITE_CHUNK):
                    yield chunk

        self._write_chunks(remote, chunks())

    def get(self, remote: str, local: Path) -> None:
        with open(local, "wb") as f:
            for chunk in self._read_chunks(remote):
                f.write(chunk)

    def close(self) -> None:
        """Nothing to release: libvirt owns the agent channel."""

    def set_time(self) -> None:
        """After a restore the guest clock is as old as the save file: set it to now.

        Not ``guest-set-time``: after setting the clock it runs ``hwclock -w``, which waits for
        the RTC's next second edge (seconds under TCG, measured).  ``date`` sets only the system
        clock, which is what tests read.  Executed directly, not through ``sh`` and ``timeout``
        as :meth:`run` does: one process start instead of four (they cost most under TCG).
        """
        ns = time.time_ns()
        stamp = f"@{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"
        pid = self.command("guest-exec", {"path": "/bin/date", "arg": ["-u", "-s", stamp]}, what="date -s")["pid"]
        if self.wait(pid, timeout=10) != 0:
            raise GuestError(f"guest {self.guest_name}: setting the clock with date -s {stamp} failed")
