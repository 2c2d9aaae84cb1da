"""One guest and the state it is in: defined → booted → ready → saved / crashed → destroyed.

Like labgrid's strategies, the object knows its state and refuses what the state forbids (no
command on a crashed guest, no second boot), so a failure says what happened instead of
hanging on an agent that will never answer.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import time
from pathlib import Path

from hil.errors import GuestError
from hil.provision.domain_xml import HIL_NS, NETDEV_ID, domain_xml
from hil.provision.spec import GuestSpec
from hil.steps import step
from hil.transport.base import RunResult
from hil.transport.qga import QgaTransport
from hil.waiting import wait_until

log = logging.getLogger("hil.guest")


class GuestState(enum.Enum):
    DEFINED = "defined"
    BOOTED = "booted"
    READY = "ready"
    SAVED = "saved"
    CRASHED = "crashed"
    DESTROYED = "destroyed"


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """A libvirt guest with a transport.  Created by :class:`hil.lab.Lab`, not directly."""

    def __init__(
        self,
        conn,
        spec: GuestSpec,
        transcript: Path | None = None,
        kernel_release: str | None = None,
        kbuild_dir: Path | None = None,
    ):
        self.conn = conn
        self.spec = spec
        self.name = spec.name
        self.domain = None
        self.state = GuestState.DEFINED
        self.kept = False
        self.restored = False
        self.transcript_path = transcript
        self.transport: QgaTransport | None = None
        self.kernel_release = kernel_release
        self.kbuild_dir = kbuild_dir
        self.forwards: dict[int, int] = dict((g, h) for h, g in spec.forwards)
        self.monitor = None  # hil.crash.monitor.CrashMonitor while the domain lives
        self.hang_timeout_s: float | None = None  # see CrashMonitor; set before boot/restore
        self._manual_crash = None

    # --- lifecycle ----------------------------------------------------------------------
    def _attach(self, domain) -> None:
        from hil.crash.monitor import CrashMonitor

        self.domain = domain
        self.transport = QgaTransport(domain, self.name, self.transcript_path)
        self._stop_monitor()
        self.monitor = CrashMonitor(self, hang_timeout_s=self.hang_timeout_s).start()

    def _stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def boot(self) -> None:
        self._require(GuestState.DEFINED)
        import libvirt

        with step("boot", guest=self.name, accel=self.spec.accel):
            try:
                self._attach(self.conn.createXML(domain_xml(self.spec), 0))
            except libvirt.libvirtError as exc:
                raise GuestError(
                    f"libvirt refused to start guest {self.name}: {exc.get_error_message()}",
                    "run `hil doctor`; the domain XML is in the debug log",
                ) from None
        self.state = GuestState.BOOTED

    def restore(self, save_file: Path, xml: str) -> None:
        """Become a running copy of a saved guest (see :class:`hil.lab.Snapshot`)."""
        self._require(GuestState.DEFINED)
        import libvirt

        with step("restore", guest=self.name):
            try:
                self.conn.restoreFlags(str(save_file), xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)
                self._attach(self.conn.lookupByName(self.name))
            except libvirt.libvirtError as exc:
                raise GuestError(
                    f"restoring guest {self.name} from {save_file} failed: {exc.get_error_message()}",
                    "the snapshot may be stale: delete the session's run folder and retry",
                ) from None
        self.state = GuestState.BOOTED

    def wait_ready(self, timeout: float = 180.0) -> None:
        self._require(GuestState.BOOTED, GuestState.READY)
        with step("wait-ready", guest=self.name):
            try:
                self.transport.wait_ready(timeout)
            except GuestError:
                self._raise_if_crashed("waiting for the guest agent")
                raise GuestError(
                    f"guest {self.name} did not become ready within {timeout:.0f}s",
                    f"look at its console log {self.spec.console_log}:\n{self.console_tail()}",
                ) from None
        self.state = GuestState.READY

    def save(self, save_file: Path) -> str:
        """Save memory state to ``save_file`` (the domain stops); returns the saved XML."""
        self._require(GuestState.READY)
        import libvirt

        with step("save", guest=self.name):
            self._stop_monitor()
            self.domain.save(str(save_file))
            xml = self.conn.saveImageGetXMLDesc(str(save_file), libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)
        self.state = GuestState.SAVED
        self.domain = None
        return xml

    def destroy(self) -> None:
        if self.state in (GuestState.DESTROYED,):
            return
        import libvirt

        self._stop_monitor()
        if self.domain is not None:
            with step("destroy", guest=self.name):
                try:
                    self.domain.destroy()
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                        raise
        self.state = GuestState.DESTROYED
        self.domain = None

    def keep(self) -> None:
        """Keep this guest after the session (for debugging): the leak sweep then skips it."""
        import libvirt

        self.kept = True
        if self.domain is not None:
            owner = {**self.spec.owner, "keep": "1"}
            attrs = " ".join(f'{k}="{v}"' for k, v in owner.items())
            self.domain.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, f"<owner {attrs}/>", "hil", HIL_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE
            )

    def mark_crashed(self, report=None) -> None:
        """The guest is dead: every later call fails at once, naming the crash."""
        if report is not None and self.crash is None:
            from hil.crash.monitor import Crash

            self._manual_crash = Crash(
                report=report, source="manual", detected_at=time.monotonic(), final_at=time.monotonic()
            )
        if self.state not in (GuestState.DESTROYED, GuestState.SAVED):
            self.state = GuestState.CRASHED
        if self.transport is not None:
            self.transport.abort(self.crash.title if self.crash else "the guest has crashed")

    # --- crashes (see hil.crash.monitor) --------------------------------------------------
    def _crashed(self, crash) -> None:
        """Monitor thread: a fatal crash signal arrived."""
        self.mark_crashed()

    def _tainted(self, crash) -> None:
        """Monitor thread: a non-fatal report (WARNING...): usable, but not clean any more."""
        log.warning("guest %s is tainted: %s", self.name, crash.title)

    def is_running(self) -> bool:
        return self.state in (GuestState.BOOTED, GuestState.READY) and self.domain is not None

    @property
    def crashes(self) -> list:
        """Every :class:`hil.crash.monitor.Crash` seen on this guest, first first."""
        if self._manual_crash is not None:
            return [self._manual_crash] + (self.monitor.crashes if self.monitor else [])
        return list(self.monitor.crashes) if self.monitor else []

    @property
    def crash(self):
        """The first crash's :class:`~hil.crash.report.Report` (title, kind, function, text), or None."""
        crashes = self.crashes
        return crashes[0].report if crashes else None

    def unexpected_crashes(self) -> list:
        """Crashes no test expected (a repeat of an expected one, such as the next report of
        the same soft lockup, counts as expected)."""
        crashes = self.crashes
        expected = {c.title for c in crashes if c.expected}
        return [c for c in crashes if not c.expected and c.title not in expected]

    @contextlib.contextmanager
    def expect_crash(self, kind: str | None = None, function: str | None = None, timeout: float = 10.0):
        """Declare that the block crashes the guest::

            with guest.expect_crash(kind="BUG", function="hil_crash_bug", timeout=10) as crash:
                guest.run("echo bug > /proc/hil_crash")
            assert crash.seconds < 10

        On leaving the block, waits up to ``timeout`` seconds (counted from entering it) for a
        crash with the given kind and guilty function; raises :class:`AssertionError` when none
        or another one comes.  The matching crash is marked expected: it does not fail the test.
        A :class:`GuestError` the crash caused inside the block is swallowed.
        """
        from hil.crash.monitor import ExpectedCrash

        exp = ExpectedCrash(self, kind=kind, function=function, timeout=timeout)
        try:
            yield exp
        except GuestError as exc:
            exp.finish(error=exc)
        else:
            exp.finish()

    def _require(self, *states: GuestState) -> None:
        if self.state not in states:
            if self.state is GuestState.CRASHED:
                what = f": {self.crash.title}" if self.crash is not None else ""
                raise GuestError(
                    f"guest {self.name} has crashed{what}; it cannot be used any more",
                    f"see its console log {self.spec.console_log}",
                )
            raise GuestError(f"guest {self.name} is {self.state.value}, not " + " or ".join(s.value for s in states))

    def domain_state(self) -> tuple[int, int] | None:
        import libvirt

        if self.domain is None:
            return None
        try:
            state, reason = self.domain.state()
            return state, reason
        except libvirt.libvirtError:
            return None

    def _raise_if_crashed(self, doing: str) -> None:
        import libvirt

        if self.monitor is not None:
            self.monitor.poll()
        st = self.domain_state()
        if st and st[0] == libvirt.VIR_DOMAIN_CRASHED and self.state is not GuestState.CRASHED:
            self.mark_crashed()
        if self.state is GuestState.CRASHED:
            title = self.crash.title if self.crash is not None else "libvirt state crashed/panicked"
            raise GuestError(
                f"guest {self.name} crashed while {doing}: {title}",
                f"console log {self.spec.console_log}:\n{self.console_tail()}",
            )

    # --- console ------------------------------------------------------------------------
    def console_text(self) -> str:
        try:
            return self.spec.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 25) -> str:
        return "\n".join("    " + line for line in self.console_text().splitlines()[-lines:])

    # --- what tests use ---------------------------------------------------------------------
    def _transport(self) -> QgaTransport:
        self._require(GuestState.READY)
        return self.transport

    def run(self, cmd: str, timeout: float = 60.0, input: bytes | None = None, check: bool = False) -> RunResult:
        try:
            result = self._transport().run(cmd, timeout=timeout, input=input)
        except GuestError:
            self._raise_if_crashed(f"running {cmd!r}")
            raise
        return result.check() if check else result

    def spawn(self, cmd: str) -> int:
        return self._transport().spawn(cmd)

    def wait(self, pid: int, timeout: float = 60.0) -> int:
        return self._transport().wait(pid, timeout)

    def write_file(self, remote: str, data: bytes) -> None:
        self._transport().write_file(remote, data)

    def read_file(self, remote: str) -> bytes:
        return self._transport().read_file(remote)

    def put(self, local: Path, remote: str) -> None:
        with step("put", guest=self.name, remote=remote):
            self._transport().put(Path(local), remote)

    def get(self, remote: str, local: Path) -> None:
        with step("get", guest=self.name, remote=remote):
            self._transport().get(remote, Path(local))

    def forward_port(self, guest_port: int) -> int:
        """Forward a fresh 127.0.0.1 port on the host to ``guest_port``; returns the host port.

        Connections through it reach the guest from 10.0.2.2 (QEMU user networking).
        """
        if guest_port in self.forwards:
            return self.forwards[guest_port]
        import libvirt_qemu

        self._require(GuestState.READY, GuestState.BOOTED)
        last = ""
        for _ in range(8):
            host_port = free_local_port()
            last = libvirt_qemu.qemuMonitorCommand(
                self.domain,
                f"hostfwd_add {NETDEV_ID} tcp:127.0.0.1:{host_port}-:{guest_port}",
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP,
            ).strip()
            if not last:
                self.forwards[guest_port] = host_port
                return host_port
        raise GuestError(f"guest {self.name}: cannot forward a host port to guest port {guest_port}: {last}")

    def sync_clock(self) -> None:
        self._transport().set_time()

    def wait_until(self, predicate, timeout: float, what: str, interval: float = 0.1):
        """Poll ``predicate()`` until truthy (returned) or raise a GuestError naming this guest."""
        return wait_until(predicate, timeout, f"{what} on guest {self.name}", interval, GuestError)
