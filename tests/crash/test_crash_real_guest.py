"""Crash signals on a real guest: libvirt's PANICKED event reaches the live guest's monitor,
and a frozen guest (every CPU spinning with interrupts off) is reported as hung after an NMI."""

from __future__ import annotations

import time

import pytest

from hil.crash.events import dispatcher_for
from hil.deploy import kmod, reference

pytestmark = pytest.mark.hil_linux


def _signals(crash, what: str, timeout: float) -> list:
    """The crash's libvirt signals named ``what`` (they may trail the console by a few ms)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in crash.signals if s.what == what]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_panicked_event_reaches_the_live_guest(linux_guest):
    import libvirt

    d = dispatcher_for(linux_guest.conn)
    assert d.watcher(linux_guest.name) is linux_guest.monitor
    with linux_guest.expect_crash(kind="PANIC", timeout=10) as exp:
        linux_guest.spawn("echo c > /proc/sysrq-trigger")
    assert exp.report.title == "kernel panic: sysrq triggered crash"
    assert _signals(exp.crash, "panicked", 5), "no CRASHED/PANICKED event from libvirt"
    assert linux_guest.domain.state() == [libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED]


def test_restored_guest_after_a_crash_gets_its_own_events(linux_guest):
    """The previous test's crashed copy of the snapshot had the same domain name: its monitor
    is gone and this guest's monitor is the one events go to."""
    d = dispatcher_for(linux_guest.conn)
    assert d.watcher(linux_guest.name) is linux_guest.monitor
    assert linux_guest.crash is None
    assert linux_guest.run("echo ok").check().text.strip() == "ok"


def test_frozen_guest_is_reported_hung_after_an_nmi(linux_guest):
    kmod.load_module(linux_guest, reference.build_crashmod(linux_guest.kbuild_dir), spin_s=120)
    # an unknown NMI then panics with the interrupted CPU's stack instead of "Dazed and confused"
    linux_guest.run("sysctl -w kernel.unknown_nmi_panic=1").check()
    linux_guest.monitor.hang_timeout_s = 3
    with linux_guest.expect_crash(kind="HANG", timeout=60) as exp:
        linux_guest.spawn("echo freeze > /proc/hil_crash")
    assert linux_guest.domain is not None
    print(exp.crash.describe(linux_guest.console_text()))
    assert exp.report.title.startswith("guest hung")
    assert "NMI" in exp.report.title, "the NMI made the kernel print nothing"
    assert exp.report.function == "hil_crash_freeze_cpu"
    assert linux_guest.state.value == "crashed"


def test_memory_dump_of_a_panicked_guest(linux_guest, tmp_path):
    """The Linux analogue of the Windows evidence path: a raw memory-only dump after a panic."""
    from hil.crash.monitor import dump_memory

    with linux_guest.expect_crash(kind="PANIC", timeout=10):
        linux_guest.spawn("echo c > /proc/sysrq-trigger")
    dump = dump_memory(linux_guest.domain, tmp_path / "memory.dump")
    size = dump.stat().st_size
    assert size >= linux_guest.spec.memory_mib * 1024 * 1024 * 0.9
    # the kernel's log buffer is in there
    with open(dump, "rb") as f:
        found = False
        while chunk := f.read(64 << 20):
            if b"sysrq triggered crash" in chunk:
                found = True
                break
    dump.unlink()
    assert found
