"""``hil crash-scan`` prints one line per file."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.commands import crash_scan

DATA = Path(__file__).parent / "data"


def test_crash_scan_prints_title_or_no_crash(capsys):
    oops = DATA / "debian12-6.1-null-deref-oops.log"
    clean = DATA / "debian12-bookworm-6.1-qemu-q35-clean-boot.log"
    parser = argparse.ArgumentParser()
    crash_scan.add_arguments(parser)
    assert crash_scan.run(parser.parse_args([str(oops), str(clean)])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{oops}: BUG: unable to handle kernel NULL pointer dereference in hil_demo_rx_complete",
        f"{clean}: no crash",
    ]
