"""The run report: verdict and counts, failures with their crash history and console, flaky
tests, trend plots, latency histograms and timeline inline, hostile test strings made inert; and
the page loads in a real headless Chromium without a console error."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hil.errors import EnvironmentProblem
from hil.qualify import browser
from hil.qualify.model import (
    Artifact,
    CrashSeen,
    CrashSignature,
    Figure,
    Run,
    TestResult,
    TrendPoint,
)
from hil.qualify.report import trend_plots, write_report
from hil.qualify.verdict import verdict
from hil.report import histogram, timeline
from hil.steps import StepRecord

RUN_ID = "20261127T020000-lab1-dd04"
NEW_CRASH = "BUG: kernel NULL pointer dereference in kserver_recv"
KNOWN_CRASH = "WARNING in hil_agent_flush"
EXPECTED_CRASH = "BUG: kernel NULL pointer dereference in sysrq_handle_crash"
EVIL = '<script>console.error("xss in name")</script>'
STORM = "suites/stress/test_process_storm.py::test_process_storm"

CONSOLE = """\
[   41.201331] kserver: accepted connection from 10.0.2.2:51234
[   41.203877] BUG: kernel NULL pointer dereference, address: 0000000000000010
[   41.204112] #PF: supervisor read access in kernel mode
[   41.204700] Oops: 0000 [#1] PREEMPT SMP NOPTI
[   41.204951] CPU: 1 PID: 812 Comm: kworker/1:2 Tainted: G           O       6.1.0-27-amd64 #1
[   41.205400] RIP: 0010:kserver_recv+0x3c/0x1a0 [kserver]
[   41.205800] Call Trace:
[   41.206000]  kserver_work+0x61/0x110 [kserver]
[   41.206100]  process_one_work+0x1c7/0x380
[   41.206600] ---[ end trace 0000000000000000 ]---
"""

KNOWN = {
    KNOWN_CRASH: CrashSignature(KNOWN_CRASH, "20261120T020000-lab1-aa01", "20261126T020000-lab1-cc03", 4),
    EXPECTED_CRASH: CrashSignature(EXPECTED_CRASH, "20261101T020000-lab1-0001", "20261126T020000-lab1-cc03", 12),
}


def sample_run(folder: Path) -> Run:
    """A nightly with one of everything: a new crash, a known one, an expected one, a flaky
    test, a skip, an erroring test, a test whose name and console are hostile."""
    t0 = datetime(2026, 11, 27, 2, 0, 0)
    kserver = "suites/linux/test_kserver.py::test_echo_under_load"
    results = [
        TestResult("suites/linux/test_smoke.py::test_boot", "passed", 4.2, ["passed"]),
        TestResult(
            STORM,
            "passed",
            61.0,
            ["passed"],
            artifacts={"console": "suites_stress_test_process_storm/linux.console.log"},
        ),
        TestResult(
            "suites/linux/test_crash.py::test_sysrq_crash_is_named",
            "passed",
            9.8,
            ["passed"],
            crash_title=EXPECTED_CRASH,
            crash_kind="BUG",
            crash_expected=True,
        ),
        TestResult(
            kserver,
            "failed",
            12.5,
            ["failed", "failed"],
            message=NEW_CRASH,
            crash_title=NEW_CRASH,
            crash_kind="BUG",
            console_excerpt=CONSOLE,
            artifacts={
                "console": "suites_linux_test_kserver/linux.console.log",
                "crash": "suites_linux_test_kserver/crash.txt",
            },
            deployed={"kserver": ("build/kserver.ko", "ab" * 32)},
        ),
        TestResult(
            "suites/linux/test_agent.py::test_flush_on_unload",
            "error",
            3.1,
            ["error"],
            message=f"teardown: {KNOWN_CRASH}",
            crash_title=KNOWN_CRASH,
            crash_kind="WARNING",
            console_excerpt="[ 3.0] WARNING: CPU: 0 PID: 1 at hil_agent.c:88 hil_agent_flush+0x1/0x2\n",
        ),
        TestResult(
            f"suites/linux/test_evil.py::test_name[{EVIL}]",
            "failed",
            0.4,
            ["failed"],
            message="<img src=x onerror=\"console.error('xss in message')\"> & more",
            console_excerpt="\x1b[31mred\x1b[0m</pre><script>console.error('xss in console')</script>\x00\r\n",
            artifacts={"odd name #1": "suites_linux_test_evil/a b#c?.log"},
        ),
        TestResult(
            "suites/linux/test_agent.py::test_storm_reconnect",
            "flaky",
            20.0,
            ["failed", "passed"],
            message="collector saw 9998 of 10000 records",
        ),
        TestResult(
            "suites/windows/test_wsk.py::test_lab_guest",
            "skipped",
            0.0,
            [],
            message="no Windows image configured ([windows] image)",
        ),
    ]
    return Run(
        RUN_ID,
        "nightly",
        "lab1",
        "0.1.0",
        "6.1.0-27-amd64",
        t0,
        t0 + timedelta(minutes=42, seconds=7),
        folder=str(folder),
        results=results,
        crashes=[
            CrashSeen(NEW_CRASH, "BUG", kserver, False),
            CrashSeen(KNOWN_CRASH, "WARNING", "suites/linux/test_agent.py::test_flush_on_unload", False),
            CrashSeen(EXPECTED_CRASH, "BUG", "suites/linux/test_crash.py::test_sysrq_crash_is_named", True),
        ],
        figures=[
            Figure("exec_to_sent_p99_ms", 0.93, STORM),
            Figure("restore_s", 1.15),
            Figure("records_per_second_at_collector", float("nan"), STORM),
        ],
        artifacts=[
            Artifact("kserver", "build/kserver.ko", "ab" * 32, "hil.toml"),
            Artifact("linux_agent", "hil/drivers/linux/agent/hil_agent.ko", "cd" * 32, "reference"),
        ],
    )


def sample_trends(run: Run) -> list[TrendPoint]:
    day = timedelta(days=1)
    return [
        TrendPoint(
            "20261125T020000-lab1-bb02",
            run.started - 2 * day,
            1.0,
            1,
            {"exec_to_sent_p99_ms": 0.41, "latency_p99_ms": 3.1, "restore_s": 1.12},
        ),
        TrendPoint(
            "20261126T020000-lab1-cc03", run.started - day, 0.9375, 2, {"exec_to_sent_p99_ms": 0.44, "restore_s": 1.08}
        ),
        TrendPoint(
            run.run_id,
            run.started,
            run.pass_rate,
            3,
            {"exec_to_sent_p99_ms": 0.93, "latency_p99_ms": 3.4, "restore_s": 1.15},
        ),
    ]


def sample_folder(folder: Path) -> tuple[Path, Path]:
    """A run folder with a real ``timeline.html`` and ``latency.html`` (and its SVG)."""
    folder.mkdir(parents=True, exist_ok=True)
    for worker, start in (("gw0", 1000.0), ("gw1", 1000.5)):
        timeline.dump(
            [
                StepRecord("boot", {"guest": f"hil-{worker}"}, start, 20.0),
                StepRecord("restore", {"guest": f"hil-{worker}"}, start + 21, 1.1),
                StepRecord("put", {"file": "kserver.ko"}, start + 23, 0.2, error="EIO <x>"),
            ],
            worker,
            folder / f"timeline-{worker}.json",
        )
    histogram.write(
        folder / "suites_stress_test_process_storm",
        "exec_to_sent",
        [0.1 + 0.01 * (i % 50) for i in range(500)] + [0.93, 4.0],
        "process storm: exec to sent",
    )
    pages = (
        timeline.render(sorted(folder.glob("timeline-*.json")), folder / "timeline.html"),
        histogram.render_index(folder, folder / "latency.html"),
    )
    assert pages[0] is not None and pages[1] is not None, "the sample folder has lanes and histograms"
    return pages[0], pages[1]


def write_sample(folder: Path) -> Path:
    run = sample_run(folder)
    tl, lat = sample_folder(folder)
    return write_report(
        run, folder / "report.html", known_crashes=KNOWN, trends=sample_trends(run), timeline=tl, latency=lat
    )


class Elements(HTMLParser):
    """Each element's attributes and text content, in document order (enough to query the page)."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "circle", "line", "rect", "polyline", "path"}

    def __init__(self, text: str):
        super().__init__()
        self.found: list[tuple[str, dict, list[str]]] = []
        self.open: list[list[str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        parts: list[str] = []
        self.found.append((tag, dict(attrs), parts))
        if tag not in self.VOID:
            self.open.append(parts)

    def handle_startendtag(self, tag, attrs):
        self.found.append((tag, dict(attrs), []))

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.open:
            self.open.pop()

    def handle_data(self, data):
        for parts in self.open:
            parts.append(data)

    def all(self, **attrs) -> list[tuple[str, dict, str]]:
        return [
            (t, a, "".join(p))
            for t, a, p in self.found
            if all(
                a.get(k.replace("_", "-")) == v or (v is True and k.replace("_", "-") in a) for k, v in attrs.items()
            )
        ]

    def text(self, **attrs) -> str:
        hits = self.all(**attrs)
        assert len(hits) == 1, (attrs, hits)
        return hits[0][2].strip()


FETCHING = {"link", "iframe", "img", "object", "embed", "audio", "video", "source", "frame", "image", "use"}


def counts(page: Elements) -> dict[str, int]:
    return {a["data-count"]: int(text) for _, a, text in page.all(data_count=True)}


# --- the verdict -------------------------------------------------------------------------------


def test_the_verdict_says_why(tmp_path):
    run = sample_run(tmp_path)
    assert verdict(run, KNOWN).word == "FAIL"
    assert verdict(run, KNOWN).reason == "3 product failures, 1 new crash title; 1 flaky test"
    every_crash_known = dict(KNOWN, **{NEW_CRASH: CrashSignature(NEW_CRASH, "r0", "r0", 1)})
    assert verdict(run, every_crash_known).reason == "3 product failures; 1 flaky test"

    green = replace(
        run, results=[r for r in run.results if not r.product_failure], crashes=[c for c in run.crashes if c.expected]
    )
    assert (verdict(green, KNOWN).word, verdict(green, KNOWN).reason) == ("PASS", "passed; 1 flaky test")
    # an expected crash never seen before does not fail the run; an unexpected one does
    assert verdict(green, {}).passed
    unexpected = replace(green, crashes=[CrashSeen("WARNING in x", "WARNING", "t", False)])
    assert verdict(unexpected, KNOWN).reason == "1 new crash title; 1 flaky test"
    nothing = replace(run, results=[r for r in run.results if r.outcome == "skipped"], crashes=[])
    assert (verdict(nothing, KNOWN).word, verdict(nothing, KNOWN).reason) == ("FAIL", "no test ran")


# --- the page ----------------------------------------------------------------------------------


@pytest.fixture
def report(tmp_path) -> Path:
    return write_sample(tmp_path / "run")


def test_the_top_shows_verdict_counts_and_what_was_qualified(report):
    page = Elements(report.read_text())
    assert page.text(id="verdict") == "FAIL" and page.all(id="verdict")[0][1]["data-verdict"] == "FAIL"
    assert page.text(id="reason") == "3 product failures, 1 new crash title; 1 flaky test"
    assert counts(page) == {"passed": 3, "failed": 2, "error": 1, "flaky": 1, "skipped": 1, "total": 8}
    facts = {a["data-fact"]: text for _, a, text in page.all(data_fact=True)}
    assert facts == {
        "run": RUN_ID,
        "profile": "nightly",
        "host": "lab1",
        "kernel-hil": "0.1.0",
        "guest kernel": "6.1.0-27-amd64",
        "started": "2026-11-27 02:00:00",
        "duration": "42 min 07 s",
    }
    drivers = {a["data-driver"]: text for _, a, text in page.all(data_driver=True)}
    assert set(drivers) == {"kserver", "linux_agent"}
    assert "build/kserver.ko" in drivers["kserver"] and "ab" * 6 in drivers["kserver"]
    assert "ab" * 7 not in drivers["kserver"]  # the short hash; the full one is its tooltip


def test_each_failure_has_its_crash_history_console_and_artifacts(report):
    page = Elements(report.read_text())
    failures = {a["data-nodeid"]: text for t, a, text in page.all(data_outcome=True) if t == "section"}
    assert len(failures) == 3
    kserver = failures["suites/linux/test_kserver.py::test_echo_under_load"]
    assert f"crash: {NEW_CRASH} new" in kserver and "failed → failed" in kserver
    assert "kserver_work+0x61/0x110" in kserver  # the console excerpt
    agent = failures["suites/linux/test_agent.py::test_flush_on_unload"]
    assert "known (first seen 20261120T020000-lab1-aa01, seen 4 times)" in agent
    html_text = report.read_text()
    # the crash header is marked in the console; links are relative to the run folder
    assert re.search(r'<mark class="crash-line">\[ +41\.203877\] BUG: kernel NULL pointer', html_text)
    hrefs = {text: a["href"] for t, a, text in page.all(href=True) if t == "a"}
    assert hrefs["crash"] == "suites_linux_test_kserver/crash.txt"
    assert hrefs["odd name #1"] == "suites_linux_test_evil/a%20b%23c%3F.log"
    assert hrefs["timeline.html"] == "timeline.html" and hrefs["latency.html"] == "latency.html"


def test_flaky_tests_and_every_crash_of_the_run(report):
    page = Elements(report.read_text())
    flaky = page.text(data_flaky="suites/linux/test_agent.py::test_storm_reconnect")
    assert "failed → passed" in flaky and "9998 of 10000" in flaky
    crashes = {a["data-crash"]: (a["data-expected"], text) for _, a, text in page.all(data_crash=True)}
    assert set(crashes) == {NEW_CRASH, KNOWN_CRASH, EXPECTED_CRASH}
    assert crashes[NEW_CRASH][0] == "false" and crashes[NEW_CRASH][1].endswith("new")
    assert crashes[EXPECTED_CRASH][0] == "true"
    assert "known (first seen 20261101T020000-lab1-0001, seen 12 times) expected" in crashes[EXPECTED_CRASH][1]


def test_trends_latency_and_timeline_are_inline_svg(report):
    text = report.read_text()
    svgs = re.findall(r"<svg\b.*?</svg>", text, re.S)
    for svg in svgs:
        ET.fromstring(svg)  # every picture is well-formed
    trends = {ET.fromstring(s).get("data-trend"): ET.fromstring(s) for s in svgs if 'data-trend="' in s}
    assert set(trends) == {"pass_rate", "crash_titles", "exec_to_sent_p99_ms", "latency_p99_ms", "restore_s"}
    ns = "{http://www.w3.org/2000/svg}"
    assert len(trends["pass_rate"].findall(f"{ns}circle")) == 3
    assert trends["pass_rate"].find(f"{ns}polyline") is not None
    assert len(trends["crash_titles"].findall(f"{ns}rect")) == 3
    # a run without the figure breaks the line: two points, no segment of two
    assert trends["latency_p99_ms"].get("data-points") == "2" and trends["latency_p99_ms"].find(f"{ns}polyline") is None
    assert "this run: 0.93 ms" in "".join(trends["exec_to_sent_p99_ms"].itertext())
    captions = [body for tag, _, body in Elements(text).all() if tag == "figcaption"]
    assert len(captions) == 1 and STORM in captions[0]  # the histogram, captioned by the test that drew it
    assert "process storm: exec to sent" in text
    assert "Time per step kind" in text and "hil-gw1" in text  # the timeline's picture and table


def test_one_run_of_history_still_draws(tmp_path):
    run = sample_run(tmp_path)
    only = [TrendPoint(run.run_id, run.started, run.pass_rate, 3, {"restore_s": 1.15})]
    plots = {ET.fromstring(s).get("data-trend"): ET.fromstring(s) for s in trend_plots(only)}
    assert set(plots) == {"pass_rate", "crash_titles", "restore_s"}
    for svg in plots.values():
        assert svg.find("{http://www.w3.org/2000/svg}polyline") is None
        assert "only this run so far" in "".join(svg.itertext())
    assert len(plots["restore_s"].findall("{http://www.w3.org/2000/svg}circle")) == 1
    once = {NEW_CRASH: CrashSignature(NEW_CRASH, "r0", "r0", 1)}
    page = write_report(run, tmp_path / "r.html", known_crashes=once, trends=[]).read_text()
    assert "no history yet" in page and "no timeline recorded" in page
    assert "known (first seen r0, seen 1 time)" in page


def test_hostile_test_strings_stay_text_and_the_page_is_self_contained(report):
    text = report.read_text()
    assert text.count("<script") == 1  # the report's own, nothing a test wrote
    assert "<img" not in text and "</pre><script>" not in text
    assert "&lt;script&gt;console.error(&quot;xss in name&quot;)&lt;/script&gt;" in text
    assert "\x1b" not in text and "\x00" not in text and "[31m" not in text
    page = Elements(text)
    assert not [(t, a) for t, a, _ in page.found if any(k.startswith("on") for k in a)]  # no handler
    # nothing fetched: no external script, style, image or frame
    assert not [(t, a) for t, a, _ in page.found if t in FETCHING or "src" in a]
    styles = [a["style"] for _, a, _ in page.all(style=True)] + [body for t, _, body in page.all() if t == "style"]
    assert not [s for s in styles if "url(" in s or "@import" in s]
    assert set(re.findall(r"https?://[^\"'\s<>]+", text)) <= {"http://www.w3.org/2000/svg"}


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def chromium() -> str:
    """CI installs Chromium: a missing one is a failure naming the package, never a skip."""
    try:
        return browser.find_chromium()
    except EnvironmentProblem as e:
        pytest.fail(str(e))


def test_the_report_loads_cleanly_in_chromium(chromium, report, tmp_path):
    shot = tmp_path / "report.png"
    loaded = browser.load(report, screenshot=shot)
    assert loaded.errors == []
    # read out of the DOM after the page's script ran, not out of the file
    assert loaded.verdict == "FAIL"
    assert loaded.counts == {"passed": 3, "failed": 2, "error": 1, "flaky": 1, "skipped": 1, "total": 8}
    assert Elements(loaded.dom).text(id="reason") == "3 product failures, 1 new crash title; 1 flaky test"
    assert set(loaded.crash_marks) == {
        "new",
        "known (first seen 20261120T020000-lab1-aa01, seen 4 times)",
        "known (first seen 20261101T020000-lab1-0001, seen 12 times)",
    }
    assert loaded.trend_points == 3
    assert EVIL in loaded.text  # the hostile test name is shown as text, not run
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_the_console_check_catches_a_broken_page(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><title>broken</title><p id=x>x</p><script>"
        "console.log('just a log line'); console.warn('a warning is not an error');"
        "console.error('deliberate console.error');"
        "setTimeout(() => { throw new TypeError('deferred throw'); }, 0);"
        "Promise.reject(new Error('unhandled rejection'));"
        "document.getElementById('x').textContent = 'rendered';"
        "</script><script>undefinedFunction();</script>"
    )
    loaded = browser.load(page)
    errors = "\n".join(str(e) for e in loaded.errors)
    for expected in (
        "deliberate console.error",
        "ReferenceError: undefinedFunction",
        "TypeError: deferred throw",
        "unhandled rejection",
    ):
        assert expected in errors
    assert "just a log line" not in errors and "a warning" not in errors
    assert {m.level for m in loaded.console} >= {"info", "warning", "error"}
    assert '<p id="x">rendered</p>' in loaded.dom


def test_without_chromium_the_error_names_the_apt_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HIL_CHROMIUM", raising=False)
    with pytest.raises(EnvironmentProblem) as e:
        browser.find_chromium()
    assert "apt-get install -y chromium" in str(e.value)


def test_a_browser_that_dies_is_an_error_not_a_hang(monkeypatch, tmp_path):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("HIL_CHROMIUM", str(fake))
    with pytest.raises(EnvironmentProblem) as e:
        browser.load(tmp_path / "page.html", timeout=20)
    assert "died loading" in str(e.value) and "cannot open display" in str(e.value)
