"""hello_hil in a real guest, with kernel-hil's public fixtures only.

``linux_guest``: a clean guest per test (restored from a snapshot in about a second).
``kmod``: builds the module against that guest's kernel, loads and unloads it; a kernel
report during a test (oops, WARNING...) fails the test with the report's title.
"""

from pathlib import Path

import pytest

from hil.errors import GuestError

MODULE_DIR = Path(__file__).resolve().parent.parent / "module"


@pytest.fixture
def hello_ko(kmod) -> Path:
    return kmod.build(MODULE_DIR)


def test_parameters_shape_what_proc_says(linux_guest, kmod, hello_ko):
    kmod.load(hello_ko, greeting="hi there", repeat=3)
    assert linux_guest.read_file("/proc/hello_hil") == b"hi there hi there hi there\nwrites: 0\n"
    assert kmod.param("hello_hil", "repeat") == "3"


def test_writes_are_counted_and_reported_on_unload(linux_guest, kmod, hello_ko):
    kmod.load(hello_ko)
    for _ in range(5):
        linux_guest.run("echo hi > /proc/hello_hil").check()
    assert linux_guest.read_file("/proc/hello_hil").endswith(b"writes: 5\n")
    event = kmod.unload("hello_hil")
    assert "hello_hil: unloaded after 5 writes" in event.kernel_log


def test_a_bad_parameter_is_refused(linux_guest, kmod, hello_ko):
    with pytest.raises(GuestError, match="Invalid parameters") as refused:
        kmod.load(hello_ko, repeat=99)
    assert "hello_hil: repeat=99 is out of range (1-16)" in str(refused.value)  # the kernel log


def test_a_deliberate_warning_is_caught(linux_guest, kmod, hello_ko):
    kmod.load(hello_ko)
    with linux_guest.expect_crash(kind="WARNING", function="hello_hil_warn") as crash:
        linux_guest.run("echo warn > /proc/hello_hil")
    assert crash.report.title == "WARNING in hello_hil_warn"
