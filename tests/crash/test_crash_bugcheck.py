"""Windows bug checks: names, titles, libvirt's Hyper-V panic line."""

from __future__ import annotations

import pytest

from hil.crash import bugcheck

LINE = (
    "2024-09-30 16:30:49.506+0000: panic hyper-v: arg1='0x3b', arg2='0xc0000005', "
    "arg3='0xfffff80312345678', arg4='0xffffa0012345c000', arg5='0x0'"
)


@pytest.mark.parametrize(
    "code, name",
    [
        (0x0A, "IRQL_NOT_LESS_OR_EQUAL"),
        (0x1E, "KMODE_EXCEPTION_NOT_HANDLED"),
        (0x3B, "SYSTEM_SERVICE_EXCEPTION"),
        (0x50, "PAGE_FAULT_IN_NONPAGED_AREA"),
        (0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
        (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"),
        (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION"),
        (0x133, "DPC_WATCHDOG_VIOLATION"),
        (0xEF, "CRITICAL_PROCESS_DIED"),
        (0x9F, "DRIVER_POWER_STATE_FAILURE"),
        (0x139, "KERNEL_SECURITY_CHECK_FAILURE"),
        (0x1000007E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"),
    ],
)
def test_common_names(code, name):
    assert bugcheck.name(code) == name


def test_table_is_large_and_names_are_symbols():
    assert len(bugcheck.BUGCHECKS) >= 60
    assert all(n.isupper() and " " not in n for n in bugcheck.BUGCHECKS.values())


def test_title_format():
    assert bugcheck.title(0x3B) == "0x0000003B SYSTEM_SERVICE_EXCEPTION"
    assert bugcheck.title(0x12345) == "0x00012345 UNKNOWN_BUGCHECK"


def test_parse_libvirt_panic_line():
    rep = bugcheck.parse_panic_line(LINE)
    assert rep.kind == "BSOD"
    assert rep.title == "0x0000003B SYSTEM_SERVICE_EXCEPTION"
    assert rep.parameters == ("0xc0000005", "0xfffff80312345678", "0xffffa0012345c000", "0x0")


@pytest.mark.parametrize(
    "line",
    [
        "panic hyper-v: arg1='0x3b', arg2='0xc0000005', arg3='0xfffff80312345678', arg4='0xffffa0012345c000', arg5='0x0'",
        "panic hyper-v: arg1=0x3B, arg2=0xC0000005, arg3=0xFFFFF80312345678, arg4=0xFFFFA0012345C000, arg5=0x0",
        'panic hyper-v: arg1="0x3b" arg2="0xc0000005" arg3="0xfffff80312345678" arg4="0xffffa0012345c000"',
        "  PANIC  HYPER-V : arg1='59', arg2='3221225477', arg3='0xfffff80312345678', arg4='0xffffa0012345c000', arg5='0'",
    ],
)
def test_tolerates_variations(line):
    rep = bugcheck.parse_panic_line(line)
    assert rep is not None and rep.title == "0x0000003B SYSTEM_SERVICE_EXCEPTION"
    assert rep.parameters[0] == "0xc0000005"


def test_missing_parameters_are_zero_and_other_lines_ignored():
    assert bugcheck.parse_panic_line("panic hyper-v: arg1='0xd1'").parameters == ("0x0",) * 4
    assert bugcheck.parse_panic_line("panic s390: core='0' psw-mask='0x1'") is None
    assert bugcheck.parse_panic_line("2024-09-30 16:30:49.506+0000: shutting down, reason=crashed") is None


def test_domain_log_offsets():
    log = "2024-09-30 16:30:40.000+0000: starting up libvirt version: 9.0.0\n" + LINE + "\n"
    rep = bugcheck.parse_domain_log(log)
    assert rep.title.startswith("0x0000003B") and log[rep.start : rep.end].startswith("2024-09-30 16:30:49")
    assert bugcheck.parse_domain_log("nothing here\n") is None


def test_from_qemu_panic_event_info():
    rep = bugcheck.from_panic_info(
        {"type": "hyper-v", "arg1": 0xEF, "arg2": 0xFFFFC00012345080, "arg3": 0, "arg4": 0, "arg5": 0}
    )
    assert rep.title == "0x000000EF CRITICAL_PROCESS_DIED" and rep.parameters[0] == "0xffffc00012345080"
    assert bugcheck.from_panic_info({"type": "s390", "core": 0}) is None


# --- the serial console (EMS) ---------------------------------------------------------------
EMS = """\
<?xml version="1.0"?>
<BP>
<INSTANCE CLASSNAME="BLUESCREEN">
<PROPERTY NAME="STOPCODE" TYPE="string"><VALUE>"0xD1"</VALUE></PROPERTY><machine-info>
<name>HIL-WIN</name>
</machine-info>
</INSTANCE>
</BP>
"""


def test_console_stop_lines():
    rep = bugcheck.parse_console_line("*** STOP: 0x000000D1 (0x00000000,0x00000002,0x00000000,0xF86B5A89)")
    assert rep.title == "0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL" and rep.kind == "BSOD"
    assert rep.parameters == ("0x0", "0x2", "0x0", "0xf86b5a89")
    ems = bugcheck.parse_console_line('<PROPERTY NAME="STOPCODE" TYPE="string"><VALUE>"0xE2"</VALUE></PROPERTY>')
    assert ems.title == "0x000000E2 MANUALLY_INITIATED_CRASH" and ems.parameters == ("0x0",) * 4
    assert bugcheck.parse_console_line("SAC>") is None
    assert bugcheck.parse_console_line("STOP: nothing here") is None


def test_console_watcher_streams_one_report_per_bug_check():
    got = []
    w = bugcheck.ConsoleWatcher(on_report=got.append)
    text = "Computer is booting, SAC started and initialized.\r\n" + EMS + "*** STOP: 0x000000D1 (0x0,0x2,0x0,0x1)\r\n"
    for i in range(0, len(text), 7):  # chunks cut lines anywhere
        w.feed(text[i : i + 7].encode())
    w.flush()
    assert [r.title for r in got] == ["0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL"] and not w.busy
    assert text[got[0].start : got[0].end].startswith('<PROPERTY NAME="STOPCODE"')
