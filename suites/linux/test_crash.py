"""Crash detection on a real guest: each kind of kernel crash is seen, named and cleaned up.

Every crash test loads ``hil_crash`` (drivers/linux/crashmod), makes the kernel fail one way,
and asserts through ``expect_crash`` that the crash monitor reported it with the right kind and
guilty function within 10 s of the trigger.  The test after each one gets a fresh guest from
the snapshot and checks that it is clean: a crashed (or, after a WARNING, tainted) guest is
always discarded.

The watchdogs are made fast at test time, not in the image: ``kernel.watchdog_thresh=1``
(soft lockup after 2 s) and ``kernel.hung_task_timeout_secs=2``.  Kinds and functions are the
detector's (:mod:`hil.crash`): a soft lockup is named after the stalled kernel thread's
function, a hung task after the first frame that is not scheduler/wait plumbing, and a sysrq
panic has no guilty function (the panic message names it).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.hil_linux

DETECT_S = 10.0


def _trigger(guest, command: str, background: bool = False) -> None:
    line = f"echo {command} > /proc/hil_crash"
    if background:  # the writer will sleep in D state: do not wait for it
        guest.spawn(line)
    else:
        guest.run(line, timeout=30)


# (command, kind, function, sysctls set before the trigger, trigger in the background)
CASES = {
    "null_deref": ("null", "BUG", "hil_crash_null_deref", "", False),
    "bug": ("bug", "BUG", "hil_crash_bug", "", False),
    "warn_on": ("warn", "WARNING", "hil_crash_warn", "", False),
    "soft_lockup": ("lockup", "LOCKUP", "hil_crash_soft_lockup", "kernel.watchdog_thresh=1", False),
    "hung_task": ("hung", "HANG", "hil_crash_hung_task", "kernel.hung_task_timeout_secs=2", True),
}


def _assert_healthy(guest) -> None:
    assert guest.run("echo ok").check().text.strip() == "ok"
    assert guest.run("cat /proc/sys/kernel/tainted").check().text.strip() == "0"
    assert guest.crash is None, f"fresh guest reports a crash: {guest.crash}"
    assert "hil_crash" not in guest.console_text()


def _make_tests(name: str, case) -> None:
    command, kind, function, sysctl, background = case

    def test_crash(crashmod):
        guest = crashmod
        if sysctl:
            guest.run(f"sysctl -w {sysctl}").check()
        with guest.expect_crash(kind=kind, function=function, timeout=DETECT_S) as crash:
            _trigger(guest, command, background)
        print(f"{name}: {crash.report.title!r} after {crash.seconds:.2f}s")
        assert crash.seconds < DETECT_S
        assert function in crash.report.text
        if kind == "WARNING":
            # the kernel carried on: the guest still answers, but it is tainted and goes
            assert guest.run("cat /proc/sys/kernel/tainted").check().text.strip() != "0"
        else:
            assert guest.state.value == "crashed"

    def test_after(linux_guest):
        _assert_healthy(linux_guest)

    test_crash.__name__ = f"test_{name}_detected"
    test_after.__name__ = f"test_after_{name}_guest_is_clean"
    globals()[test_crash.__name__] = test_crash
    globals()[test_after.__name__] = test_after


for _name, _case in CASES.items():
    _make_tests(_name, _case)


def test_sysrq_panic_detected(linux_guest):
    """``echo c > /proc/sysrq-trigger``: the console report and libvirt's PANICKED event."""
    with linux_guest.expect_crash(kind="PANIC", timeout=DETECT_S) as crash:
        linux_guest.run("echo c > /proc/sysrq-trigger", timeout=30)
    assert crash.report.title == "kernel panic: sysrq triggered crash"
    assert crash.seconds < DETECT_S
    assert linux_guest.state.value == "crashed"
    # a command on the dead guest fails at once and names the crash
    with pytest.raises(Exception, match="sysrq triggered crash"):
        linux_guest.run("true", timeout=30)


def test_after_sysrq_panic_guest_is_clean(linux_guest):
    _assert_healthy(linux_guest)


@pytest.mark.smoke
@pytest.mark.expect_crash(kind="BUG", function="hil_crash_bug")
def test_expect_crash_marker(crashmod):
    """The marker form: the GuestError the crash causes in the test body is expected too."""
    crashmod.run("echo bug > /proc/hil_crash", timeout=30)
    crashmod.run("true")  # fails at once: the guest has crashed
