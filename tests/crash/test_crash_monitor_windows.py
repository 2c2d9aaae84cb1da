"""The crash monitor on a Windows lab guest, without Windows: the Windows detector at the event
and parser level.

Under KVM a bug check with the ``hyperv`` panic device makes QEMU raise GUEST_PANICKED and
libvirt write ``panic hyper-v: arg1=...`` to the domain log, then emit the CRASHED/PANICKED
lifecycle event.  Here the domain log is a file written like libvirt 9.0 writes it (the
start-up lines are a real domain log's, with the Windows guest's options), the event goes
through the real dispatcher with libvirt's real constants, and the connection, domain and
guest are small fakes.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

libvirt = pytest.importorskip("libvirt")

from monitor_fakes import FakeGuest  # noqa: E402

from hil.crash import events  # noqa: E402
from hil.crash.detectors import WindowsDetector  # noqa: E402
from hil.crash.kinds import CrashKind  # noqa: E402
from hil.crash.monitor import CrashMonitor, ExpectedCrash, windows_monitor_options  # noqa: E402

WAIT = 5.0

DOMAIN_LOG_START = """\
2026-11-27 14:35:59.752+0000: starting up libvirt version: 9.0.0, package: 9.0.0-4+deb12u2 (Debian), qemu version: 7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3, kernel: 6.18.44-fc-v595, hostname: vm
LC_ALL=C \\
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
HOME=/var/lib/libvirt/qemu/domain-371-hil-win-3f2a9c1d \\
/usr/bin/qemu-system-x86_64 \\
-name guest=hil-win-3f2a9c1d,debug-threads=on \\
-S \\
-machine pc-q35-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram \\
-accel kvm \\
-cpu host,migratable=on,hv-time=on,hv-relaxed=on,hv-vapic=on,hv-spinlocks=0x1fff,hv-vpindex=on,hv-runtime=on,hv-synic=on,hv-stimer=on,hv-frequencies=on,hv-crash \\
-m 4096 \\
-smp 2,sockets=2,cores=1,threads=1 \\
-no-shutdown \\
-msg timestamp=on
2026-11-27 14:38:02.625+0000: Domain id=371 is tainted: custom-argv
"""
PANIC_D1 = (
    "2026-11-27 14:41:17.204+0000: panic hyper-v: arg1='0xd1', arg2='0x0', arg3='0x2', "
    "arg4='0x0', arg5='0xfffff80312345678'\n"
)
PANIC_3B = (
    "2026-11-27 14:20:03.118+0000: panic hyper-v: arg1='0x3b', arg2='0xc0000005', "
    "arg3='0xfffff80312345678', arg4='0xffffa0012345c000', arg5='0x0'\n"
)
# What Windows writes on its serial port at a bug check when EMS is on (bcdedit /ems on).
EMS_BLUESCREEN = """\
<?xml version="1.0"?>
<BP>
<INSTANCE CLASSNAME="BLUESCREEN">
<PROPERTY NAME="STOPCODE" TYPE="string"><VALUE>"0xD1"</VALUE></PROPERTY><machine-info>
<name>HIL-WIN</name>
<processor-architecture>AMD64</processor-architecture>
<os-version>10.0</os-version>
<os-build-number>20348</os-build-number>
</machine-info>
</INSTANCE>
</BP>
"""


class FakeWindowsDomain:
    """A crashed (paused) domain: it can be dumped, and must not be resumed."""

    def __init__(self, fail_dump=False):
        self.dumps: list[tuple[str, int, int]] = []
        self.resumed = 0
        self.fail_dump = fail_dump

    def state(self):
        return [libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED]

    def resume(self):
        self.resumed += 1

    def injectNMI(self, flags):
        pass

    def coreDumpWithFormat(self, path, fmt, flags):
        if self.fail_dump:
            raise libvirt.libvirtError("cannot dump: no space left on device")
        self.dumps.append((path, fmt, flags))
        Path(path).write_bytes(b"\0" * 4096)


class FakeWindowsGuest(FakeGuest):
    """A ``MonitoredGuest`` like the Windows lab guest: a serial log, WinRM (no ping: no hang
    check), a folder for evidence."""

    def __init__(self, tmp_path: Path, domain=None):
        super().__init__(
            tmp_path / "lab",
            name="hil-win-3f2a9c1d",
            domain=domain or FakeWindowsDomain(),
            transport=SimpleNamespace(abort=lambda reason: None),
            console_name="hil-win-3f2a9c1d-serial.log",
        )


@pytest.fixture(autouse=True)
def event_loop():
    assert events.ensure_event_loop()


@pytest.fixture
def windows(tmp_path):
    made = []

    def make(domain_log_text: str = DOMAIN_LOG_START, guest=None, **kw):
        log = tmp_path / "hil-win-3f2a9c1d.log"
        log.write_text(domain_log_text)
        g = guest or FakeWindowsGuest(tmp_path)
        kw.setdefault("poll_s", 0.01)
        g.monitor = CrashMonitor(g, **windows_monitor_options(log), **kw).start()
        made.append(g.monitor)
        return g, g.monitor, log

    yield make
    for m in made:
        m.stop()


def test_panic_event_is_named_from_the_domain_log(windows):
    g, m, log = windows()
    with open(log, "a") as f:  # libvirt writes the line, then emits the event
        f.write(PANIC_D1)
    g.conn.panicked(g.name)
    crash = m.wait(WAIT)
    assert crash is not None and crash.final and crash.source == "event"
    r = crash.report
    assert (r.title, r.kind, r.function) == ("0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL", CrashKind.BSOD, "")
    assert r.parameters == ("0x0", "0x2", "0x0", "0xfffff80312345678")
    assert g.dead.wait(WAIT)
    assert [s.what for s in crash.signals] == ["panicked"]


def test_a_bug_check_leaves_a_memory_dump_in_the_guest_folder(windows):
    g, m, log = windows()
    with open(log, "a") as f:
        f.write(PANIC_D1)
    g.conn.panicked(g.name)
    crash = m.wait(WAIT)
    m.quiesce()  # returns once the evidence is written
    dump = g.folder / f"{g.name}.memory.dump"
    assert crash.evidence == [dump] and dump.stat().st_size == 4096
    assert g.domain.dumps == [(str(dump), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW, libvirt.VIR_DUMP_MEMORY_ONLY)]
    assert g.domain.resumed == 0  # a crashed Windows guest stays paused for its dump
    text = crash.describe(g.console_text())
    assert "title: 0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL" in text and "kind: BSOD" in text
    assert "parameters: 0x0, 0x2, 0x0, 0xfffff80312345678" in text and f"evidence: {dump}" in text


def test_the_event_before_the_log_line_gets_a_provisional_title_then_the_bug_check(windows):
    g, m, log = windows(grace_s=WAIT)
    g.conn.panicked(g.name)
    crash = m.wait(WAIT)
    assert crash.title == "bug check (libvirt PANICKED event)" and crash.report.kind == "BSOD"
    assert not crash.final and g.dead.wait(WAIT)
    with open(log, "a") as f:
        f.write(PANIC_D1)
    crash = m.wait_settled(WAIT)
    assert crash.final and crash.title == "0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL"
    assert len(m.crashes) == 1


def test_an_earlier_runs_bug_check_in_the_domain_log_is_not_this_one(windows):
    """libvirt appends to the domain log at every start: only what follows the monitor's
    start belongs to this guest."""
    g, m, log = windows(DOMAIN_LOG_START + PANIC_3B + DOMAIN_LOG_START, grace_s=0.2)
    g.conn.panicked(g.name)
    crash = m.wait_settled(WAIT)
    assert crash.final and crash.title == "bug check (libvirt PANICKED event)"


def test_ems_bug_check_on_the_serial_console(windows):
    g, m, log = windows()
    with open(g.console_path, "a") as f:
        f.write("\r\nSAC>\r\n" + EMS_BLUESCREEN)
    crash = m.wait(WAIT)
    assert crash.source == "console" and crash.title == "0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL"
    assert crash.report.kind == CrashKind.BSOD and g.dead.wait(WAIT)
    # the event that follows is recorded on the same crash, not a second one
    with open(log, "a") as f:
        f.write(PANIC_D1)
    g.conn.panicked(g.name)
    deadline = time.monotonic() + WAIT
    while not crash.signals and time.monotonic() < deadline:
        m.poll()
        time.sleep(0.01)
    assert [s.what for s in crash.signals] == ["panicked"] and len(m.crashes) == 1


def test_the_console_repeating_an_event_named_bug_check_is_one_crash(windows):
    g, m, log = windows()
    with open(log, "a") as f:
        f.write(PANIC_D1)
    g.conn.panicked(g.name)
    assert m.wait(WAIT).source == "event"
    with open(g.console_path, "a") as f:
        f.write(EMS_BLUESCREEN)
    m.quiesce()
    assert [c.title for c in m.crashes] == ["0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL"]
    assert [r.title for r in m.reports] == ["0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL"]


def test_a_failed_dump_keeps_the_report(windows, tmp_path):
    g, m, log = windows(guest=FakeWindowsGuest(tmp_path, FakeWindowsDomain(fail_dump=True)))
    with open(log, "a") as f:
        f.write(PANIC_D1)
    g.conn.panicked(g.name)
    crash = m.wait(WAIT)
    m.quiesce()
    assert crash.title == "0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL" and crash.evidence == []


def test_expect_crash_of_kind_bsod(windows):
    g, m, log = windows()
    exp = ExpectedCrash(g, kind="BSOD", timeout=WAIT)
    with open(log, "a") as f:
        f.write(PANIC_D1)
    g.conn.panicked(g.name)
    exp.finish()
    assert exp.report.title == "0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL" and m.crash.expected


def test_default_domain_log_is_libvirts():
    d = WindowsDetector()
    d.attach(SimpleNamespace(name="hil-win-0"))
    assert d.domain_log == Path("/var/log/libvirt/qemu/hil-win-0.log")
