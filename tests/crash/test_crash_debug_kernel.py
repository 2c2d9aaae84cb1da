"""The seeded bugs of ``hil_crash`` (drivers/linux/crashmod) on the debug kernel (issue 15).

Every ``data/debug-kernel-<command>.log`` is real output of the prototype debug flavour of the
guest kernel (6.1.176-hil-debug: KASAN, PROVE_LOCKING, DEBUG_ATOMIC_SLEEP, KMEMLEAK, UBSAN)
after ``echo <command> > /proc/hil_crash``: a console excerpt, and for ``leak`` the text of
``/sys/kernel/debug/kmemleak`` after two scans.  Each is named after the seeded function with
syzkaller's title: KASAN keeps the kernel's own bug word and the access (6.1 says
``use-after-free`` for a freed slab object, 6.3+ ``slab-use-after-free``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from console_chunks import streamed_reports  # tests/crash is on sys.path

from hil.crash import parse_all
from hil.crash.kinds import CrashKind

DATA = Path(__file__).parent / "data"

# command -> (kind, guilty function, title)
SEEDED = {
    "uaf": (CrashKind.KASAN, "hil_crash_use_after_free", "KASAN: use-after-free Read in hil_crash_use_after_free"),
    "oob": (CrashKind.KASAN, "hil_crash_out_of_bounds", "KASAN: slab-out-of-bounds Read in hil_crash_out_of_bounds"),
    "double_free": (CrashKind.KASAN, "hil_crash_double_free", "KASAN: invalid-free in hil_crash_double_free"),
    "abba": (CrashKind.LOCKDEP, "hil_crash_abba", "possible deadlock in hil_crash_abba"),
    "sleep_atomic": (
        CrashKind.ATOMIC_SLEEP,
        "hil_crash_sleep_in_atomic",
        "BUG: sleeping function called from invalid context in hil_crash_sleep_in_atomic",
    ),
    "leak": (CrashKind.LEAK, "hil_crash_leak", "memory leak in hil_crash_leak"),
    "ubsan_index": (
        CrashKind.UBSAN,
        "hil_crash_array_index",
        "UBSAN: array-index-out-of-bounds in hil_crash_array_index",
    ),
}


def _log(command: str) -> str:
    return (DATA / f"debug-kernel-{command}.log").read_text()


@pytest.mark.parametrize("command", sorted(SEEDED))
def test_seeded_bug_is_named_after_its_function(command):
    kind, function, title = SEEDED[command]
    reports = parse_all(_log(command))
    assert [(r.title, r.kind, r.function) for r in reports] == [(title, kind, function)]
    assert not reports[0].corrupted
    assert not reports[0].fatal, "the debug kernel reports these and carries on"
    # the same whatever the console's chunking (the monitor reads it as it comes)
    assert [r.title for r in streamed_reports(_log(command), 97)] == [title]


def test_kasan_titles_are_syzkallers_with_each_kernels_own_word():
    """The bug as the kernel names it, the access, the function: 6.1 says "use-after-free",
    6.3+ "slab-use-after-free" for the same bug; "double-free" (6.1) and the older "double-free
    or invalid-free" are syzkaller's "invalid-free" (the corpus and a team's dashboards agree)."""
    text = _log("uaf")
    assert "BUG: KASAN: use-after-free in hil_crash_use_after_free" in text  # 6.1's words
    newer = text.replace("BUG: KASAN: use-after-free in", "BUG: KASAN: slab-use-after-free in")  # 6.3+
    assert [r.title for r in parse_all(newer)] == ["KASAN: slab-use-after-free Read in hil_crash_use_after_free"]
    old = _log("double_free").replace("BUG: KASAN: double-free in", "BUG: KASAN: double-free or invalid-free in")
    assert [r.title for r in parse_all(old)] == ["KASAN: invalid-free in hil_crash_double_free"]


# After the KASAN report, lockdep turning itself off in one of its own messages: written after
# print_lockdep_off() (kernel/locking/lockdep.c: the message, then "turning off the locking
# correctness validator.", then the stack); the first line is the real one that followed.
LOCKDEP_OFF = """[  112.763596] Disabling lock debugging due to kernel taint
[  112.770001] BUG: MAX_LOCKDEP_CHAIN_HLOCKS too low!
[  112.770002] turning off the locking correctness validator.
[  112.770003] CPU: 0 PID: 139 Comm: sh Tainted: G    B      O       6.1.176-hil-debug #1
[  112.770004] Call Trace:
[  112.770005]  <TASK>
[  112.770006]  dump_stack_lvl+0x4c/0x63
[  112.770007]  __lock_acquire+0x2af8/0x6510
[  112.770008]  lock_acquire+0x188/0x490
[  112.770009]  hil_crash_run+0x109/0x190 [hil_crash]
[  112.770010]  hil_crash_write+0xb5/0x10f [hil_crash]
[  112.770011]  </TASK>
[  112.770012] INFO: lockdep is turned off.
"""


@pytest.mark.parametrize("command", ["oob", "uaf", "double_free"])
def test_kasan_report_keeps_its_title_when_lockdep_turns_off_after_it(command):
    kind, function, title = SEEDED[command]
    text = _log(command) + LOCKDEP_OFF
    for reports in (parse_all(text), streamed_reports(text, 61)):
        assert (reports[0].title, reports[0].kind, reports[0].function) == (title, kind, function)
        assert "turning off the locking correctness validator" not in reports[0].text
        assert [r.kind for r in reports[1:]] == [CrashKind.BUG]  # lockdep's own message, apart


def test_the_turning_off_line_alone_changes_nothing():
    text = _log("oob").replace(
        "Disabling lock debugging due to kernel taint", "turning off the locking correctness validator."
    )
    assert [r.title for r in parse_all(text)] == [SEEDED["oob"][2]]


def test_kmemleak_listing_gives_one_report_per_object():
    one = _log("leak")
    other = one.replace("0xffff888008527f00", "0xffff888008527e00").replace(
        "hil_crash_leak+0x11/0x20", "hil_crash_leak_again+0x11/0x20"
    )
    reports = parse_all(one + other)
    assert [r.title for r in reports] == ["memory leak in hil_crash_leak", "memory leak in hil_crash_leak_again"]
    assert all(r.kind is CrashKind.LEAK and not r.corrupted for r in reports)


def test_kmemleak_report_after_syzkallers_bug_line_is_one_report():
    """syzkaller prints ``BUG: memory leak`` before the listing's object: one report, not two."""
    reports = parse_all("BUG: memory leak\n" + _log("leak"))
    assert [(r.title, r.kind) for r in reports] == [("memory leak in hil_crash_leak", CrashKind.LEAK)]
    assert reports[0].text.startswith("BUG: memory leak\nunreferenced object")
