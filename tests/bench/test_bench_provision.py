"""``hil bench provision`` end to end at its smallest: every figure printed, each a number."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

pytestmark = pytest.mark.hil_linux

FIGURES = (
    "cold_boot_s",
    "restore_s",
    "destroy_s",
    "visible_reset_s",
    "reset_body_s",
    "visible_reset_starved_s",
    "one_test_run_s",
    "restore_over_cold",
    "visible_reset_over_cold",
)


def test_bench_provision_prints_every_figure(tmp_path):
    args = ["--cold-runs", "1", "--restore-runs", "1", "--reset-tests", "2", "--one-test-runs", "1", "--body-s", "0.5"]
    proc = subprocess.run(
        [sys.executable, "-m", "hil.cli", "bench", "provision", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    for name in FIGURES:
        value = float(figures[name])
        assert math.isfinite(value) and value > 0, (name, figures)
    assert float(figures["reset_body_s"]) >= 0.5
    assert figures["flavour"] == "stock"  # the configuration's default; --flavour debug measures the debug kernel
