"""The bugs the debug kernel flavour exists to catch, seeded on command in ``hil_crash``
(drivers/linux/crashmod): each is detected, titled as syzkaller would, and fails the test that
caused it.  Runs on the debug flavour only (``--hil-kernel debug``, ``[linux] flavour =
"debug"``, the ``prerelease`` profile); on the stock kernel these bugs pass unseen, which is
the point of the flavour.

The KASAN bugs get a guest each (KASAN reports only a boot's first bug, and turns lockdep off
after it); the leak is found by the kmemleak scan the module session runs after unload.
"""

from __future__ import annotations

import pytest

from hil.images.debug_kernel import BUILD_TIME

pytestmark = [pytest.mark.hil_linux, pytest.mark.debug_kernel]

DETECT_S = 60.0  # a KASAN kernel under TCG prints a report with its stacks in seconds, not ms

# command -> (kind, guilty function, title)
SEEDED = {
    "uaf": ("KASAN", "hil_crash_use_after_free", "KASAN: use-after-free Read in hil_crash_use_after_free"),
    "oob": ("KASAN", "hil_crash_out_of_bounds", "KASAN: slab-out-of-bounds Read in hil_crash_out_of_bounds"),
    "double_free": ("KASAN", "hil_crash_double_free", "KASAN: invalid-free in hil_crash_double_free"),
    "abba": ("LOCKDEP", "hil_crash_abba", "possible deadlock in hil_crash_abba"),
    "sleep_atomic": (
        "ATOMIC_SLEEP",
        "hil_crash_sleep_in_atomic",
        "BUG: sleeping function called from invalid context in hil_crash_sleep_in_atomic",
    ),
    "ubsan_index": ("UBSAN", "hil_crash_array_index", "UBSAN: array-index-out-of-bounds in hil_crash_array_index"),
}


@pytest.fixture(autouse=True)
def _debug_flavour_only(hil_config):
    if hil_config.linux.flavour != "debug":
        pytest.skip(f"needs the debug kernel flavour: --hil-kernel debug (built once: {BUILD_TIME})")


@pytest.mark.parametrize("command", list(SEEDED))
def test_seeded_bug_is_detected_and_titled(crashmod, command):
    kind, function, title = SEEDED[command]
    with crashmod.expect_crash(kind=kind, function=function, timeout=DETECT_S) as crash:
        crashmod.run(f"echo {command} > /proc/hil_crash", timeout=60)
    assert crash.report.title == title


def test_a_leak_is_reported_after_unload(crashmod, kmod):
    # eight objects: kmemleak misses one whose address a stale word still holds (seen: 7 of 8)
    crashmod.run("echo leak > /proc/hil_crash", timeout=60).check()
    with crashmod.expect_crash(kind="LEAK", function="hil_crash_leak", timeout=DETECT_S) as crash:
        kmod.unload("hil_crash")
        kmod.check_leaks()  # kmemleak's scans after the unload (also run at every session's end)
    assert crash.report.title == "memory leak in hil_crash_leak"
