"""Crash signal logic without a guest: event classification and routing, the console monitor
(console first, event first, grace, warnings, hangs), expect_crash, and the QGA abort.

The console logs in data/ are real: hil_crash and sysrq crashes on the embedded 6.1 guest.
libvirt's constants are the real ones; the connection and domains are small fakes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

libvirt = pytest.importorskip("libvirt")

from monitor_fakes import FakeConn, FakeGuest  # noqa: E402

from hil.crash import events  # noqa: E402
from hil.crash.events import EventDispatcher, Signal, classify  # noqa: E402
from hil.crash.monitor import CrashMonitor, ExpectedCrash  # noqa: E402
from hil.errors import GuestError  # noqa: E402

DATA = Path(__file__).parent / "data"
WAIT = 5.0  # upper bound for conditions that take milliseconds


@pytest.fixture(autouse=True)
def event_loop():
    assert events.ensure_event_loop()


@pytest.fixture
def monitor_of(tmp_path):
    made = []

    def make(guest=None, **kw):
        g = guest or FakeGuest(tmp_path)
        kw.setdefault("poll_s", 0.01)
        g.monitor = CrashMonitor(g, **kw).start()
        made.append(g.monitor)
        return g, g.monitor

    yield make
    for m in made:
        m.stop()


# --- events ---------------------------------------------------------------------------------
def test_classify_crash_events():
    assert classify(libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED) == "panicked"
    assert classify(libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED) == "crashloaded"
    assert classify(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED) == "stopped-crashed"
    assert classify(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) is None
    assert classify(libvirt.VIR_DOMAIN_EVENT_STARTED, 0) is None


def test_dispatch_goes_to_the_live_guest_of_a_name():
    conn = FakeConn()
    d = EventDispatcher(conn)
    got = []
    old = SimpleNamespace(name="snap", on_signal=lambda s: got.append(("old", s.what)))
    new = SimpleNamespace(name="snap", on_signal=lambda s: got.append(("new", s.what)))
    d.watch(old)
    assert len(conn.callbacks) == 2  # lifecycle + reboot
    d.watch(new)  # a restored copy of the same snapshot: same domain name
    d.unwatch(old)  # the old one's teardown must not unhook the new one
    conn.fire_lifecycle("snap", libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED)
    conn.fire_lifecycle("other", libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED)
    conn.fire_lifecycle("snap", libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
    assert got == [("new", "panicked")]
    assert [s.domain for s in d.received] == ["snap", "other"]
    d.unwatch(new)
    assert conn.callbacks == {}  # nobody left: deregistered


def test_event_loop_is_one_thread():
    assert events.ensure_event_loop() and events.ensure_event_loop()
    assert sum(t.name == "hil-libvirt-events" for t in threading.enumerate()) == 1


# --- monitor --------------------------------------------------------------------------------
def test_console_report_first(monitor_of):
    g, m = monitor_of()
    g.console("[    1.0] booting\n")
    g.console((DATA / "bug.log").read_text(), chunk=97)
    crash = m.wait(WAIT)
    assert crash is not None and crash.final and crash.source == "console"
    assert (crash.report.title, crash.report.kind, crash.report.function) == (
        "kernel BUG in hil_crash_bug",
        "BUG",
        "hil_crash_bug",
    )
    assert g.dead.wait(WAIT)
    assert g.transport.aborted == "kernel BUG in hil_crash_bug"


def test_event_first_then_console_names_it(monitor_of):
    g, m = monitor_of(grace_s=WAIT)
    t0 = time.monotonic()
    m.on_signal(Signal("panicked", g.name, t0))
    crash = m.wait(WAIT)
    assert crash.source == "event" and not crash.final
    assert crash.title == "kernel panic (libvirt PANICKED event)"
    assert g.dead.wait(WAIT)  # the event alone kills the guest at once
    g.console((DATA / "sysrq_panic.log").read_text())
    crash = m.wait_settled(WAIT)
    assert crash.final and crash.title == "kernel panic: sysrq triggered crash"
    assert [s.what for s in crash.signals] == ["panicked"]
    evidence = crash.describe(g.console_path.read_text())
    assert "title: kernel panic: sysrq triggered crash" in evidence and "sysrq_handle_crash" in evidence


def test_event_only_keeps_its_title_after_grace(monitor_of):
    g, m = monitor_of(grace_s=0.2)
    m.on_signal(Signal("panicked", g.name, time.monotonic()))
    crash = m.wait_settled(WAIT)
    assert crash.final and crash.title == "kernel panic (libvirt PANICKED event)"
    assert crash.final_at - crash.detected_at >= 0.2


def test_event_after_console_is_recorded_on_the_crash(monitor_of):
    g, m = monitor_of()
    g.console((DATA / "sysrq_panic.log").read_text())
    crash = m.wait(WAIT)
    m.on_signal(Signal("panicked", g.name, time.monotonic()))
    m.quiesce()
    for _ in range(int(WAIT / 0.01)):
        if crash.signals:
            break
        m.poll()
    assert crash.source == "console" and [s.what for s in crash.signals] == ["panicked"]
    assert len(m.crashes) == 1


def test_reboot_without_console_report_is_not_a_crash(monitor_of):
    g, m = monitor_of(grace_s=0.1)
    m.on_signal(Signal("reboot", g.name, time.monotonic()))
    assert m.quiesce() is None
    assert not g.dead.is_set()


def test_reboot_the_console_shows_kills_like_any_crash(monitor_of):
    """libvirt's REBOOT event alone proves nothing; the console booting again does."""
    g, m = monitor_of(grace_s=0.1)
    m.on_signal(Signal("reboot", g.name, time.monotonic()))
    g.console((DATA / "reboot-no-panic-direct-kernel.log").read_text(), chunk=97)
    crash = m.wait(WAIT)
    assert crash is not None and crash.source == "console" and crash.final
    assert (crash.title, crash.report.kind) == ("unexpected kernel reboot", "REBOOT")
    assert g.dead.wait(WAIT) and g.transport.aborted == "unexpected kernel reboot"
    assert len(m.crashes) == 1


def test_warning_taints_and_a_later_bug_kills(monitor_of):
    g, m = monitor_of()
    g.console((DATA / "warn_on.log").read_text())
    crash = m.wait(WAIT)
    assert crash.report.kind == "WARNING" and crash.report.function == "hil_crash_warn"
    assert g.tainted == [crash] and not g.dead.is_set() and g.transport.aborted is None
    g.console((DATA / "bug.log").read_text())
    assert g.dead.wait(WAIT)
    assert [c.report.kind for c in m.crashes] == ["WARNING", "BUG"]


def test_hang_injects_nmi_and_names_what_it_shows(monitor_of, tmp_path):
    g = FakeGuest(tmp_path, alive=False)
    g, m = monitor_of(g, hang_timeout_s=0.2, grace_s=WAIT)
    crash = m.wait(WAIT)
    assert crash is not None and crash.source == "hang" and crash.report.kind == "HANG"
    assert g.domain.nmis == 1 and g.transport.pings >= 1 and g.dead.is_set()
    # what an NMI shows with kernel.unknown_nmi_panic=1: a panic
    g.console((DATA / "nmi_panic.log").read_text())  # a frozen guest's, with unknown_nmi_panic=1
    crash = m.wait_settled(WAIT)
    assert crash.report.kind == "HANG"
    assert crash.title == "guest hung in hil_crash_freeze_cpu (NMI: kernel panic: NMI: Not continuing)"
    assert crash.report.function == "hil_crash_freeze_cpu"


@pytest.mark.parametrize("log", ["nmi_panic.log", "nmi-panic-frozen-cpu-in-clock-read.log"])
def test_hang_is_named_after_the_interrupted_function_not_the_clock_read(log):
    """Both real consoles of a frozen guest: in the second, the NMI caught the CPU reading the
    clock (RIP read_hpet) from inside the stuck function, one frame further down."""
    from hil.crash import parse
    from hil.crash.monitor import _hang_report

    text = (DATA / log).read_text()
    report = _hang_report(parse(text), text)
    assert report.function == "hil_crash_freeze_cpu"
    assert report.title == "guest hung in hil_crash_freeze_cpu (NMI: kernel panic: NMI: Not continuing)"


def test_no_hang_while_the_agent_answers(monitor_of, tmp_path):
    g, m = monitor_of(FakeGuest(tmp_path, alive=True), hang_timeout_s=0.05)
    deadline = time.monotonic() + WAIT
    while g.transport.pings < 3 and time.monotonic() < deadline:
        m.wait(0.05)
    assert g.transport.pings >= 3 and m.crash is None and g.domain.nmis == 0


# --- expect_crash ---------------------------------------------------------------------------
def test_expect_crash_matches_and_marks_expected(monitor_of):
    g, m = monitor_of()
    exp = ExpectedCrash(g, kind="BUG", function="hil_crash_bug", timeout=WAIT)
    g.console((DATA / "bug.log").read_text())
    exp.finish()
    assert exp.report.title == "kernel BUG in hil_crash_bug" and m.crash.expected
    assert 0 <= exp.seconds < WAIT


def test_expect_crash_wrong_kind(monitor_of):
    g, m = monitor_of()
    exp = ExpectedCrash(g, kind="PANIC", timeout=0.5)
    g.console((DATA / "warn_on.log").read_text())
    with pytest.raises(AssertionError, match="expected a crash \\(kind=PANIC\\), got WARNING in hil_crash_warn"):
        exp.finish()
    assert not m.crash.expected


def test_expect_crash_none_comes(monitor_of):
    g, m = monitor_of()
    exp = ExpectedCrash(g, kind="BUG", timeout=0.3)
    with pytest.raises(AssertionError, match="did not crash"):
        exp.finish()


# --- transport ------------------------------------------------------------------------------
def test_qga_run_ends_at_once_when_the_guest_crashes(monkeypatch):
    import json

    import libvirt_qemu

    from hil.transport.qga import QgaTransport

    def agent(dom, text, timeout, flags):
        cmd = json.loads(text)["execute"]
        return json.dumps({"return": {"pid": 7} if cmd == "guest-exec" else {"exited": False}})

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", agent)
    t = QgaTransport(object(), "g1")
    threading.Timer(0.2, t.abort, args=("kernel BUG in hil_crash_bug",)).start()
    t0 = time.monotonic()
    # the crash lands between two status polls, or during one (which it now ends at once)
    crashed = r"crashed while (running|waiting for agent command guest-exec-status for) 'sleep 100': kernel BUG in hil_crash_bug"
    with pytest.raises(GuestError, match=crashed):
        t.run("sleep 100", timeout=100)
    assert time.monotonic() - t0 < 2


def test_qga_agent_error_on_a_crashed_guest_names_the_crash(monkeypatch):
    import libvirt_qemu

    from hil.transport.qga import QgaTransport

    def agent(dom, text, timeout, flags):
        raise libvirt.libvirtError("Guest agent is not responding")

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", agent)
    t = QgaTransport(object(), "g1")
    t.abort("kernel panic: sysrq triggered crash")
    with pytest.raises(GuestError, match="crashed while waiting for agent command guest-ping: kernel panic"):
        t.command("guest-ping")


def test_a_crash_ends_an_agent_exchange_in_flight_at_once(monkeypatch):
    """A dead guest's agent never answers: the exchange in flight when the crash is declared
    must end then, not at the agent timeout (seen in CI: a panicked test blocked 30 s)."""
    import threading

    import libvirt_qemu

    from hil.transport.qga import QgaTransport

    release = threading.Event()

    def agent(dom, text, timeout, flags):
        release.wait(30)  # the agent of a panicked guest: silent until libvirt gives up
        raise libvirt.libvirtError("Guest agent is not responding")

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", agent)
    t = QgaTransport(object(), "g1")
    threading.Timer(0.3, t.abort, args=("kernel panic: sysrq triggered crash",)).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(GuestError, match="crashed while waiting for agent command guest-exec-status: kernel panic"):
            t.command("guest-exec-status", {"pid": 1})
        assert time.monotonic() - t0 < 2
    finally:
        release.set()


# --- the guest interface --------------------------------------------------------------------
def test_no_hang_check_without_a_ping(monitor_of, tmp_path):
    """A transport that cannot ping (WinRM) gets no hang check: no NMI on a silent guest."""
    g = FakeGuest(tmp_path)
    g.transport = SimpleNamespace(abort=lambda reason: None)
    g, m = monitor_of(g, hang_timeout_s=0.05)
    time.sleep(0.3)
    assert m.crash is None and g.domain.nmis == 0


def test_expect_crash_rejects_an_unknown_kind(monitor_of):
    g, m = monitor_of()
    with pytest.raises(ValueError, match="unknown crash kind 'PANC'.*PANIC"):
        ExpectedCrash(g, kind="PANC")


def test_polling_while_another_thread_stops_the_monitor(monitor_of):
    """The lab's reaper stops a guest's monitor while the plugin may be polling it for the
    test's teardown report (seen in CI: "ValueError: read of closed file")."""
    import threading

    for _ in range(50):
        g, m = monitor_of()
        g.console("[    1.0] booting\n")
        errors: list[BaseException] = []

        def poll_hard(m=m, errors=errors):
            try:
                for _ in range(200):
                    m.poll()
            except BaseException as exc:  # the failure under test
                errors.append(exc)

        t = threading.Thread(target=poll_hard)
        t.start()
        m.stop()
        t.join()
        assert errors == []
        assert m.poll() is None  # a stopped monitor answers from what it read


def test_a_report_that_ends_with_its_stack_is_named_when_the_console_goes_quiet(monitor_of):
    """lockdep's report has no end line: its last line is the stack's ``</TASK>``.  Real
    console of the debug kernel; nothing follows it, and the monitor still names it."""
    g, m = monitor_of()
    g.console((DATA / "debug-kernel-abba.log").read_text())
    crash = m.wait(WAIT)
    assert crash is not None and crash.report.title == "possible deadlock in hil_crash_abba"
    assert crash.source == "console" and not g.dead.is_set()
