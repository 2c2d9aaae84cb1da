"""The Linux frame helpers other modules share (the crash monitor names hangs with them)."""

from __future__ import annotations

from pathlib import Path

from hil.crash import linux

SIGNALS = Path(__file__).parent / "data"


def test_rip_function():
    assert linux.rip_function(["Code: 0f 0b", "RIP: 0010:hil_crash_bug+0x12/0x20 [hil_crash]"]) == "hil_crash_bug"
    assert linux.rip_function(["RIP: 0033:0x7f1234567890"]) is None
    assert linux.rip_function([]) is None


def test_interrupted_function_skips_the_clock_read():
    text = (SIGNALS / "nmi-panic-frozen-cpu-in-clock-read.log").read_text()
    assert linux.interrupted_function(text) == "hil_crash_freeze_cpu"


def test_interrupted_function_is_the_rip_when_it_is_not_generic():
    assert linux.interrupted_function((SIGNALS / "nmi_panic.log").read_text()) == "hil_crash_freeze_cpu"


def test_interrupted_function_of_an_idle_cpu_and_of_nothing():
    idle = "[   5.1] RIP: 0010:default_idle+0x5/0x10\n[   5.1]  </NMI>\n[   5.1]  <TASK>\n[   5.1]  do_idle+0x1/0x2\n"
    assert linux.interrupted_function(idle) == "default_idle"  # all generic: the first
    assert linux.interrupted_function("nothing here\n") == ""


def test_interrupted_function_looks_through_a_retpoline_thunk():
    """A real console (fresh-machine run): the NMI caught the CPU in the retpoline thunk of the
    clock read, so the unwinder found nothing reliable after ``</NMI>``; the stack's ``? f``
    frames from the top name the thunk's callers, the frozen function two frames down."""
    text = (SIGNALS / "nmi-panic-frozen-cpu-in-retpoline-thunk.log").read_text()
    assert linux.interrupted_function(text) == "hil_crash_freeze_cpu"


def test_interrupted_function_prefers_reliable_frames_to_questionable_ones():
    text = "RIP: 0010:read_tsc+0x1/0x2\n </NMI>\n <TASK>\n ? stale_garbage+0x1/0x2\n real_caller+0x3/0x4\n </TASK>\n"
    assert linux.interrupted_function(text) == "real_caller"
