"""Latency histograms: well-formed SVG with every sample in a bar, and one page per run."""

from __future__ import annotations

import os
import random
import re
import xml.etree.ElementTree as ET

from hil.report import histogram

SVG = "{http://www.w3.org/2000/svg}"


def _bars(svg: str) -> list[int]:
    root = ET.fromstring(svg)
    return [int((rect.findtext(f"{SVG}title") or "").rsplit(": ", 1)[1]) for rect in root.iter(f"{SVG}rect")]


def test_every_sample_lands_in_a_bar_and_the_tail_is_marked():
    rng = random.Random(7)
    samples = [rng.lognormvariate(0, 1) for _ in range(5000)] + [0.0, 400.0]  # a zero and a stall
    svg = histogram.render_svg(samples, "exec to record")
    assert sum(_bars(svg)) == len(samples)
    text = "".join(ET.fromstring(svg).itertext())
    assert "n=5002" in text and "max=400 ms" in text
    for marker in ("p50", "p99", "max"):
        assert re.search(rf">{marker}<", svg)


def test_one_value_or_none_still_draws():
    assert sum(_bars(histogram.render_svg([3.0, 3.0, 3.0], "flat"))) == 3
    empty = histogram.render_svg([], "nothing")
    ET.fromstring(empty)
    assert "no samples" in empty


def test_titles_are_escaped():
    ET.fromstring(histogram.render_svg([1.0], "a <b> & c"))


def test_the_run_page_shows_this_runs_histograms_only(tmp_path):
    old = histogram.write(tmp_path / "old_test", "lat", [1.0], "old run")
    os.utime(old, (1, 1))
    histogram.write(tmp_path / "suites_stress_test_x", "exec_to_sent", [1.0, 2.0], "process storm")
    page = histogram.render_index(tmp_path, tmp_path / "latency.html", since=1000.0)
    body = page.read_text()
    assert "suites_stress_test_x" in body and "process storm" in body and "old run" not in body
    assert histogram.render_index(tmp_path / "old_test", tmp_path / "none.html", since=1000.0) is None


def test_a_pytest_run_links_its_latency_page(pytester):
    pytester.makepyfile("""
        from hil.report import histogram

        def test_storm(hil_artifacts):
            histogram.write(hil_artifacts, "exec_to_sent", [0.5, 1.0, 30.0], "storm")
    """)
    out = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess("--hil-artifacts", str(out))
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*kernel-hil latency histograms: *latency.html"])
    assert "storm" in (out / "latency.html").read_text()
