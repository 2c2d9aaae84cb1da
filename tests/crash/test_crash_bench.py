"""``hil bench crash-corpus`` on a tiny corpus built from this folder's logs."""

from __future__ import annotations

import argparse
from pathlib import Path

from hil.bench import crash_corpus

DATA = Path(__file__).parent / "data"


def _corpus(tmp_path: Path) -> Path:
    oops = (DATA / "debian12-6.1-null-deref-oops.log").read_text()
    clean = (DATA / "debian12-bookworm-6.1-qemu-q35-clean-boot.log").read_text()
    (tmp_path / "0").write_text(
        "TITLE: BUG: unable to handle kernel NULL pointer dereference in hil_demo_rx_complete\n"
        "ALT: bad-access in hil_demo_rx_complete\nTYPE: NULL-POINTER-DEREFERENCE\n\n"
        + oops
        + "\nREPORT:\nBUG: kernel NULL pointer dereference, address: 0000000000000010\n"
    )
    (tmp_path / "1").write_text("\n" + clean)
    (tmp_path / "2").write_text("TITLE: WARNING in somewhere_else\nTYPE: WARNING\n\n" + oops)
    return tmp_path


def test_load_case_reads_header_and_strips_expected_report(tmp_path):
    case = crash_corpus.load_case(_corpus(tmp_path) / "0")
    assert case.crash and case.titles[1] == "bad-access in hil_demo_rx_complete"
    assert "REPORT:" not in case.log and case.log.startswith("[   14.512313]")
    assert not crash_corpus.load_case(tmp_path / "1").crash


def test_figures_and_misses(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    crash_corpus.add_arguments(parser)
    assert crash_corpus.run(parser.parse_args(["--corpus", str(_corpus(tmp_path)), "-v"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert "files: 3" in out
    assert "crash_detect_accuracy: 1.0000" in out
    assert "kind_accuracy: 0.5000" in out  # file 2 expects a WARNING
    assert "function_accuracy: 0.5000" in out
    assert [line.split(":")[0] for line in out if line.startswith("miss")] == ["miss 2 [kind,function]"]
