"""What every guest is, whatever runs it: a state machine, a transport, a deployer, crashes.

Three kinds derive from :class:`Guest` (made by :class:`hil.lab.Lab`, never directly):

- :class:`hil.guest.linux.LinuxGuest` — a libvirt domain reached through qemu-guest-agent;
- :class:`hil.guest.windows_lab.WindowsLabGuest` — a libvirt domain reached through WinRM;
- :class:`hil.guest.wine.WineGuest` — a Wine prefix on the host.

Labgrid's split is the model: the *resource* is the thing (a domain, a prefix), the
*transport* is how we reach inside it (:class:`hil.transport.base.GuestTransport`: ``run``,
``spawn``, ``put``, ``get``... with the same return types everywhere), the *deployer* is how a
driver gets in and out (:class:`hil.deploy.deployers.Deployer`), and the guest itself is the
*strategy*: it knows its :class:`~hil.guest.state.GuestState` and refuses what that state
forbids.

Crash bookkeeping lives here once: a kind's watcher (the libvirt crash monitor, or the Wine
log) hands every crash to :meth:`Guest.on_crash` (fatal: every later call fails at once,
naming it) or :meth:`Guest.on_taint` (non-fatal), and the pytest plugin fails the test from
:meth:`Guest.unexpected_crashes` — the one path from any crash to a failed test.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hil.errors import GuestError
from hil.guest.state import GuestKind, GuestState, check_transition
from hil.steps import step
from hil.transport.base import GuestTransport, RunResult, Spawned
from hil.waiting import wait_until

if TYPE_CHECKING:
    from hil.crash.monitor import Crash, CrashMonitor, ExpectedCrash
    from hil.crash.report import Report
    from hil.deploy.deployers import Deployer

log = logging.getLogger("hil.guest")


class Guest(abc.ABC):
    """name: unique within the host (a libvirt domain name, a prefix label);
    folder: where this guest's logs and evidence go (the lab's runtime folder)."""

    kind: ClassVar[GuestKind]

    def __init__(self, name: str, folder: Path):
        self.name = name
        self.folder = Path(folder)
        self.state = GuestState.DEFINED
        self.transport: GuestTransport | None = None
        self.deployer: Deployer | None = None
        self.monitor: CrashMonitor | None = None  # the libvirt kinds' crash watcher
        self.kept = False
        self._own_crashes: list[Crash] = []  # declared by hand, or found by the kind itself

    # --- what a kind implements ---------------------------------------------------------------
    @abc.abstractmethod
    def boot(self) -> None:
        """DEFINED -> BOOTED (and READY where the kind waits for its agent)."""

    @abc.abstractmethod
    def destroy(self) -> None:
        """Any state -> DESTROYED; idempotent, never raises for a guest that is already gone."""

    @abc.abstractmethod
    def console_text(self) -> str:
        """Everything the guest printed (serial console, Wine's debug log)."""

    @property
    @abc.abstractmethod
    def console_path(self) -> Path:
        """The file :meth:`console_text` reads."""

    @property
    def instance(self) -> str:
        """Names this guest's files (differs from :attr:`name` for restored copies)."""
        return self.name

    def is_running(self) -> bool:
        return self.state in (GuestState.BOOTED, GuestState.READY)

    def keep(self) -> None:
        """Keep this guest after the session (for debugging): the leak sweep then skips it."""
        self.kept = True

    def console_barrier(self, timeout: float = 5.0) -> bool:
        """Wait until everything the guest printed so far is in :attr:`console_path` (a kind
        whose console lags behind, like a serial line, overrides this); True when synced."""
        return True

    # --- state machine ------------------------------------------------------------------------
    def _set_state(self, new: GuestState) -> None:
        check_transition(self.name, self.state, new)
        self.state = new

    def _require(self, *states: GuestState) -> None:
        if self.state not in states:
            if self.state is GuestState.CRASHED:
                what = f": {self.crash.title}" if self.crash is not None else ""
                raise GuestError(
                    f"guest {self.name} has crashed{what}; it cannot be used any more",
                    f"see its console log {self.console_path}",
                )
            raise GuestError(f"guest {self.name} is {self.state.value}, not " + " or ".join(s.value for s in states))

    def __enter__(self) -> Guest:
        if self.state is GuestState.DEFINED:
            self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # --- crashes ------------------------------------------------------------------------------
    @property
    def crashes(self) -> list[Crash]:
        """Every :class:`hil.crash.monitor.Crash` seen on this guest, first first."""
        seen = list(self._own_crashes) + (list(self.monitor.crashes) if self.monitor is not None else [])
        return sorted(seen, key=lambda c: c.detected_at)

    @property
    def crash(self) -> Report | None:
        """The first crash's :class:`~hil.crash.report.Report` (title, kind, function, text), or None."""
        crashes = self.crashes
        return crashes[0].report if crashes else None

    def unexpected_crashes(self) -> list[Crash]:
        """Crashes no test expected (a repeat of an expected one, such as the next report of
        the same soft lockup, counts as expected)."""
        crashes = self.crashes
        expected = {c.title for c in crashes if c.expected}
        return [c for c in crashes if not c.expected and c.title not in expected]

    def add_crash(self, report: Report, source: str) -> Crash | None:
        """Record a crash found outside the monitor's view (Wine's log, a kernel complaint only
        dmesg showed) and act on it like the monitor would; None when it is already known."""
        from hil.crash.monitor import Crash, is_fatal

        if self.monitor is not None:
            return self.monitor.add_report(report, source)
        if any(c.title == report.title for c in self._own_crashes):
            return None
        now = time.monotonic()
        crash = Crash(report=report, source=source, detected_at=now, final_at=now)
        self._own_crashes.append(crash)
        (self.on_crash if is_fatal(report) else self.on_taint)(crash)
        return crash

    def mark_crashed(self, report: Report | None = None) -> None:
        """The guest is dead: every later call fails at once, naming the crash."""
        if report is not None and self.crash is None:
            from hil.crash.monitor import Crash

            now = time.monotonic()
            self._own_crashes.append(Crash(report=report, source="manual", detected_at=now, final_at=now))
        if self.state in (GuestState.BOOTED, GuestState.READY):
            self._set_state(GuestState.CRASHED)
        if self.transport is not None:
            self.transport.abort(self.crash.title if self.crash else "the guest has crashed")

    def on_crash(self, crash: Crash) -> None:
        """A fatal crash arrived (from the monitor's thread, or the kind's own watcher)."""
        self.mark_crashed()

    def on_taint(self, crash: Crash) -> None:
        """A non-fatal report (WARNING...): usable, but not clean any more."""
        log.warning("guest %s is tainted: %s", self.name, crash.title)

    @contextlib.contextmanager
    def expect_crash(
        self, kind: str | None = None, function: str | None = None, timeout: float = 10.0
    ) -> Iterator[ExpectedCrash]:
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

    def _raise_if_crashed(self, doing: str) -> None:
        """After a transport error: if the guest crashed meanwhile, say so instead."""
        if self.state is GuestState.CRASHED:
            title = self.crash.title if self.crash is not None else "the guest crashed"
            raise GuestError(
                f"guest {self.name} crashed while {doing}: {title}",
                f"console log {self.console_path}:\n{self.console_tail()}",
            )

    # --- console ------------------------------------------------------------------------------
    def console_tail(self, lines: int = 25) -> str:
        return "\n".join("    " + line for line in self.console_text().splitlines()[-lines:])

    # --- what tests use -------------------------------------------------------------------------
    def _transport(self) -> GuestTransport:
        self._require(GuestState.READY)
        assert self.transport is not None
        return self.transport

    def run(self, cmd: Any, timeout: float = 60.0, input: bytes | None = None, check: bool = False) -> RunResult:
        """Run a command (a shell line; a Wine guest also takes ``[program, arg...]``)."""
        try:
            result = self._transport().run(cmd, timeout=timeout, input=input)
        except GuestError:
            self._raise_if_crashed(f"running {cmd!r}")
            raise
        return result.check() if check else result

    def spawn(self, cmd: Any) -> Spawned:
        """Start a command in the background; ``.wait(timeout)`` gives its exit code."""
        return self._transport().spawn(cmd)

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

    def wait_until(self, predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
        """Poll ``predicate()`` until truthy (returned) or raise a GuestError naming this guest."""
        return wait_until(predicate, timeout, f"{what} on guest {self.name}", interval, GuestError)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state.value}>"
