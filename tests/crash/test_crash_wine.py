"""Wine's unhandled exceptions as crash reports (hil.crash.wine), on real Wine 8.0 logs.

The logs in data/wine/ are real (see its README): drivers crashing in a prefix started the way
hil.wine.guest starts it, and a console program crashing with winedbg's full report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.crash import wine
from hil.crash.kinds import CrashKind
from hil.crash.monitor import is_fatal

DATA = Path(__file__).parent / "data" / "wine"


def read(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize(
    "log, title",
    [
        ("driver-read-fault.log", "Wine: unhandled page fault on read access"),
        ("driver-write-fault.log", "Wine: unhandled page fault on write access"),
        ("driver-illegal-instruction.log", "Wine: unhandled illegal instruction"),
        ("driver-breakpoint.log", "Wine: unhandled breakpoint"),
        (
            "driver-unimplemented-function.log",
            "Wine: unhandled call to unimplemented function ntoskrnl.exe.ExRaiseStatus",
        ),
        ("driver-read-fault-loaddll.log", "Wine: unhandled page fault on read access in hilcrash1g!+0x1067"),
        ("program-read-fault-winedbg.log", "Wine: unhandled page fault on read access in ucrash!+0x7c37"),
        ("program-read-fault-winedbg-symbols.log", "Wine: unhandled page fault on read access in ucrash4!KspOpFinish"),
    ],
)
def test_real_logs_are_named(log, title):
    reports = wine.parse(read(log))
    assert [r.title for r in reports] == [title]
    r = reports[0]
    assert r.kind is CrashKind.WINE and r.kind == "WINE" and is_fatal(r)
    text = read(log)
    assert text[r.start : r.end] == r.text and r.text.startswith(("wine: ", "Unhandled exception: "))


def test_a_log_without_a_crash_has_no_report():
    assert wine.parse(read("driver-no-crash.log")) == []
    assert wine.parse("") == []


def test_function_is_the_symbol_or_the_module_offset():
    [sym] = wine.parse(read("program-read-fault-winedbg-symbols.log"))
    [off] = wine.parse(read("program-read-fault-winedbg.log"))
    [dll] = wine.parse(read("driver-read-fault-loaddll.log"))
    [bare] = wine.parse(read("driver-read-fault.log"))
    assert (sym.function, off.function, dll.function, bare.function) == (
        "KspOpFinish",
        "ucrash+0x7c37",
        "hilcrash1g+0x1067",
        "",
    )


def test_excerpt_is_the_fault_registers_and_backtrace():
    [r] = wine.parse(read("program-read-fault-winedbg-symbols.log"))
    lines = r.text.splitlines()
    assert lines[0].startswith("wine: Unhandled page fault on read access to 0000000000000000")
    assert lines[1].startswith("Unhandled exception: page fault on read access")
    assert "Register dump:" in lines and "Backtrace:" in lines
    assert any("KspOpFinish+0x7()" in line for line in lines)
    assert not any(line.startswith(("Modules:", "Threads:", "System information:")) for line in lines)
    [stub] = wine.parse(read("driver-unimplemented-function.log"))
    assert stub.text.splitlines()[0].startswith("wine: Call from 000000007B013D7E to unimplemented function")


def test_same_bug_same_title_whatever_the_addresses():
    """Another run loads the driver elsewhere: the title and function do not change."""
    text = read("driver-read-fault-loaddll.log")
    moved = text.replace("00000003BF3D0000", "0000000212340000").replace("00000003BF3D1067", "0000000212341067")
    assert moved != text
    assert [r.title for r in wine.parse(moved)] == [r.title for r in wine.parse(text)]


# What winedbg prints for a driver in winedevice.exe when the prefix's stdout reaches the log
# too: Wine's line and the winedbg block of the real program crash above, with a driver's
# frames (module hilsockc, the caller in ntoskrnl and winedevice).
DRIVER_WITH_BACKTRACE = """\
0134:warn:debugstr:vDbgPrintExWithPrefix 00000000:00000001: [hilsockc] connecting
wine: Unhandled page fault on read access to 0000000000000000 at address 00000001400011A3 (thread 0134), starting debugger...
Unhandled exception: page fault on read access to 0x0000000000000000 in 64-bit code (0x000001400011a3).
Register dump:
 rip:00000001400011a3 rsp:000000000061fd18 rbp:0000000000c812e0 eflags:00010202 (  R- --  I   - - - )
 rax:0000000000000000 rbx:000000000000003e rcx:0000000228307698 rdx:0000000228307120
Stack dump:
0x0000000061fd18:  00000001400015c4 000000007b60fcfc
Backtrace:
=>0 0x000001400011a3 in hilsockc (KspOpFinish+0x23) (0x0000000000000000)
  1 0x000001400015c4 in hilsockc (+0x15c4) (0x00000000c812e0)
  2 0x0000031ca95e11 IoCallDriver+0x51(device=000000000012E5A0, irp=0000000000135A30) [Z:\\build\\dlls\\ntoskrnl.exe\\ntoskrnl.c:1048] in ntoskrnl (0x00000000c812e0)
  3 0x0000014000a3c2 in winedevice (+0xa3c2) (0000000000000000)
0x000001400011a3 hilsockc+0x11a3: movl	(%rax),%eax
Modules:
Module	Address					Debug info	Name (3 modules)
PE	0000000140000000-000000014003e000	Deferred        hilsockc
PE	000000031ca90000-000000031cb95000	Dwarf-4         ntoskrnl
Threads:
process  tid      prio    name (all IDs are in hex)
"""


def test_driver_frames_name_the_driver_not_wine():
    [r] = wine.parse(DRIVER_WITH_BACKTRACE)
    assert r.title == "Wine: unhandled page fault on read access in hilsockc!KspOpFinish"
    assert r.function == "KspOpFinish"
    assert "IoCallDriver" in r.text and "Modules:" not in r.text


def test_a_fault_inside_wine_is_blamed_on_the_driver_frame_below_it():
    text = DRIVER_WITH_BACKTRACE.replace(
        "=>0 0x000001400011a3 in hilsockc (KspOpFinish+0x23) (0x0000000000000000)",
        "=>0 0x0000031ca91234 RtlCopyMemory+0x14() [Z:\\build\\dlls\\ntoskrnl.exe\\rtl.c:88] in ntoskrnl (0x0)",
    )
    [r] = wine.parse(text)
    assert r.title == "Wine: unhandled page fault on read access in hilsockc!+0x15c4"


def test_winedbg_block_alone_and_several_crashes():
    block_only = read("program-read-fault-winedbg-symbols.log").replace(
        "wine: Unhandled page fault on read access to 0000000000000000 at address 0000000140001599 "
        "(thread 0024), starting debugger...\n",
        "",
    )
    assert [r.title for r in wine.parse(block_only)] == [
        "Wine: unhandled page fault on read access in ucrash4!KspOpFinish"
    ]
    two = read("driver-breakpoint.log") + read("driver-illegal-instruction.log")
    reports = wine.parse(two)
    assert [r.title for r in reports] == ["Wine: unhandled breakpoint", "Wine: unhandled illegal instruction"]
    assert reports[0].end <= reports[1].start


@pytest.mark.parametrize(
    "what, phrase",
    [
        ("Unhandled page fault on read access to 0000000000000000", "page fault on read access"),
        ("page fault on execute access to 0x0000000000001234", "page fault on execute access"),
        ("Unhandled page fault", "page fault"),
        ("Unhandled division by zero", "divide by zero"),
        ("divide by zero", "divide by zero"),
        ("Unhandled stack overflow", "stack overflow"),
        ("Unhandled privileged instruction", "privileged instruction"),
        ("Unhandled exception 0xc0000409 in thread 1a4", "stack buffer overrun"),
        ("Unhandled exception 0xe0001234 in thread 1a4", "exception 0xE0001234"),
        ("0x80000003", "breakpoint"),
        ("C++ exception(object = 0x00000000002ffd70, type = 0x0000000140012345)", "C++ exception"),
        (
            "unimplemented function ntoskrnl.exe.ExRaiseStatus called",
            "call to unimplemented function ntoskrnl.exe.ExRaiseStatus",
        ),
    ],
)
def test_exception_phrases_drop_addresses(what, phrase):
    assert wine.describe_exception(what) == phrase
