"""No crash in a clean boot: benign 'WARNING', 'error', 'BUG' words must not be reports."""

from __future__ import annotations

from pathlib import Path

from hil.crash import ConsoleWatcher, parse_all

CLEAN = Path(__file__).parent / "data" / "debian12-bookworm-6.1-qemu-q35-clean-boot.log"


def test_clean_debian_boot_has_no_crash():
    text = CLEAN.read_text()
    assert "WARNING" in text and "BUG" in text and "error" in text  # the log is a real test
    assert parse_all(text) == []


def test_clean_boot_streamed_has_no_crash():
    w = ConsoleWatcher()
    text = CLEAN.read_text()
    for i in range(0, len(text), 97):
        w.feed(text[i : i + 97])
    assert w.flush() is None and not w.busy


REAL_BOOT = Path(__file__).parent / "data" / "hil-guest-real-cold-boot.log"


def test_real_cold_boot_of_our_guest_has_no_crash():
    """The serial console of a real cold boot of the embedded Debian guest (captured under TCG
    with `Lab` and `snapshot = false`): the detector must stay silent on it."""
    text = REAL_BOOT.read_text()
    assert "Linux version 6.1" in text and "Run /init as init process" in text
    assert parse_all(text) == []
    w = ConsoleWatcher()
    for i in range(0, len(text), 61):
        w.feed(text[i : i + 61])
    assert w.flush() is None
