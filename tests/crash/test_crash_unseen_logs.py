"""Reports the shared corpus half does not show (issue 15): unexpected reboots, hung tasks,
lockdep reports, and headers named by what they mean rather than by an exact string.

The logs in data/ and below are written here after the kernel's own printk formats (Debian 6.1
guests, syzbot-style symbolized 6.x consoles, a 4.14 console); none is taken from a corpus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from console_chunks import streamed_reports  # tests/crash is on sys.path

from hil.crash import parse, parse_all
from hil.crash.kinds import CrashKind

DATA = Path(__file__).parent / "data"


# --- (1) unexpected reboots ------------------------------------------------------------------
@pytest.mark.parametrize("log", ["reboot-no-panic-direct-kernel.log", "reboot-no-panic-seabios.log"])
def test_a_guest_that_boots_again_without_a_panic_has_crashed(log):
    text = (DATA / log).read_text()
    reports = parse_all(text)
    assert [(r.title, r.kind) for r in reports] == [("unexpected kernel reboot", CrashKind.REBOOT)]
    rep = reports[0]
    assert rep.fatal and rep.function == ""
    # the report points at the first sign of the new boot: the firmware, else the kernel banner
    first = text[rep.start : rep.end]
    assert "SeaBIOS (version" in first or "Linux version 6.1.0-18-amd64" in first
    assert [r.title for r in streamed_reports(text, 53)] == ["unexpected kernel reboot"]


def test_the_first_boot_is_not_a_reboot():
    for log in ("debian12-bookworm-6.1-qemu-q35-clean-boot.log", "hil-guest-real-cold-boot.log"):
        assert parse_all((DATA / log).read_text()) == []
    # the decompressor's banner at the start of a log, and the same words inside another line
    assert parse("Decompressing Linux... Parsing ELF... done.\nBooting the kernel.\n") is None
    assert parse("[ 1164.176368][T16664] xfs: Unknown parameter '   Booting the kernel.   '\n") is None
    # a kernel line late in a boot that merely mentions the command line
    assert parse("[   12.884183] systemd[1]: Starting Generate network units from Kernel command line...\n") is None


def test_a_reboot_after_a_panic_is_the_panics_doing():
    panic = (DATA / "sysrq_panic.log").read_text()
    reboot = (DATA / "reboot-no-panic-direct-kernel.log").read_text().split("[   16.388950]")[1]
    text = panic + "[   16.388950]" + reboot
    assert [r.title for r in parse_all(text)] == ["kernel panic: sysrq triggered crash"]


def test_a_warning_then_a_reboot_is_both():
    warn = (DATA / "warn_on.log").read_text()
    boot = "[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP\n"
    assert [r.kind for r in parse_all(warn + boot)] == [CrashKind.WARNING, CrashKind.REBOOT]


# --- (2) hung tasks ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("log", "title"),
    [
        # 4.14: the task waits for mmap_sem in the page-fault handler, which names it
        ("hung-task-4.14-waits-in-page-fault.log", "INFO: task hung in do_page_fault"),
        # 6.6 with caller ids and inlined frames: inode_lock/rwsem/scheduler frames skipped
        ("hung-task-6.6-symbolized-fuse.log", "INFO: task hung in fuse_file_write_iter"),
    ],
)
def test_hung_task_is_named_after_what_the_task_waits_in(log, title):
    rep = parse((DATA / log).read_text())
    assert rep is not None and (rep.title, rep.kind) == (title, CrashKind.HANG)
    assert not rep.corrupted


# --- (3) lockdep ---------------------------------------------------------------------------------
def test_inconsistent_lock_state_is_named_after_the_lock_site_not_lockdep():
    rep = parse((DATA / "lockdep-inconsistent-lock-state-6.5-symbolized.log").read_text())
    assert rep is not None
    assert (rep.title, rep.kind) == ("inconsistent lock state in hilnet_timer_fn", CrashKind.LOCKDEP)


OLD_TRACE = """Call Trace:
 [<ffffffff834b6b49>] dump_stack+0x2ee/0x3f1 lib/dump_stack.c:15
 [<ffffffff8156e4a5>] __lock_acquire+0x2a15/0x3390 kernel/locking/lockdep.c:3338
 [<ffffffff81570d22>] lock_acquire+0x2a2/0x790 kernel/locking/lockdep.c:3749
 [<ffffffff88199b0e>] _raw_spin_lock_nested+0x3e/0x50 kernel/locking/spinlock.c:362
 [<ffffffff81a8e1e2>] hil_demo_walk+0x2a2/0x640 drivers/misc/hil_demo.c:331
 [<ffffffff81a8e9f0>] hil_demo_ioctl+0x1b2/0x2f0 drivers/misc/hil_demo.c:512
"""


def test_old_bracketed_lockdep_header_is_named():
    text = "=============================\n[ BUG: Nested lock was not taken ]\n4.9.0-rc5+ #43 Not tainted\n"
    text += "-----------------------------\nhil-agent/731 is trying to lock:\n" + OLD_TRACE
    rep = parse("".join(f"[   64.1{i:05d}] {line}\n" for i, line in enumerate(text.splitlines())))
    assert rep is not None
    assert (rep.title, rep.kind) == ("BUG: nested lock was not taken in hil_demo_walk", CrashKind.LOCKDEP)


# --- (4) headers by what they mean -------------------------------------------------------------
TRACE = """Call Trace:
 <TASK>
 dump_stack_lvl+0x44/0x5c
 hil_demo_rx+0x4e/0x120 [hil_demo]
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
 __x64_sys_ioctl+0x90/0xd0
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>
"""

MEANING = {
    # arm64: every "Unable to handle kernel <fault>" that is not a NULL dereference is a paging request
    "arm64_permission_fault": (
        """Unable to handle kernel read from unreadable memory at virtual address ffff000012345678
Mem abort info:
  ESR = 0x000000009600000f
  EC = 0x25: DABT (current EL), IL = 32 bits
Internal error: Oops: 000000009600000f [#1] PREEMPT SMP
pc : hil_demo_rx+0x4e/0x120 [hil_demo]
lr : hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
Call trace:
 hil_demo_rx+0x4e/0x120 [hil_demo]
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
 __arm64_sys_ioctl+0xac/0xf0
""",
        "BUG: unable to handle kernel paging request in hil_demo_rx",
    ),
    # powerpc's wording of the same fault
    "ppc_instruction_fetch": (
        """BUG: Unable to handle kernel instruction fetch
Faulting instruction address: 0xc000000000abcdef
Oops: Kernel access of bad area, sig: 11 [#1]
NIP [c000000000abcdef] hil_demo_rx+0x4e/0x120 [hil_demo]
LR [c000000000abcd00] hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
"""
        + TRACE,
        "BUG: unable to handle kernel paging request in hil_demo_rx",
    ),
    # mm teardown counters, whatever the counter is called
    "non_zero_on_freeing_mm": (
        "BUG: non-zero pgtables_bytes on freeing mm: 4096\n",
        "BUG: non-zero pgtables_bytes on freeing mm",
    ),
    "lockdep_capacity": (
        "BUG: MAX_LOCKDEP_CHAIN_HLOCKS too low!\nturning off the locking correctness validator.\n" + TRACE,
        "BUG: MAX_LOCKDEP_CHAIN_HLOCKS too low!",
    ),
    # any "Bad page <what>" report of the page allocator
    "bad_page_cache": (
        "BUG: Bad page cache in process hil-agent  pfn:0x1a2b3\npage:ffffea000068ac0 refcount:3 mapcount:1\n" + TRACE,
        "BUG: Bad page cache in hil_demo_rx",
    ),
    # an INFO: report nobody listed, with a stack: a crash named by its text
    "unknown_info_with_stack": (
        "INFO: hil_demo: ring stalled for 12 seconds\n" + TRACE,
        "INFO: hil_demo: ring stalled for NUM seconds",
    ),
}


@pytest.mark.parametrize("name", sorted(MEANING))
def test_header_is_named_by_its_meaning(name):
    log, title = MEANING[name]
    text = "[  100.000000] hil-agent[702]: running test\n" + "".join(
        f"[  101.000000] {line}\n" for line in log.splitlines()
    )
    rep = parse(text)
    assert rep is not None and rep.title == title


def test_unknown_info_line_without_a_stack_is_not_a_crash():
    assert parse("[   42.000000] INFO: hil_demo: 3 rings configured\n[   42.000100] hil_demo: ready\n") is None
