"""Streaming: the same title whatever the chunking, and a report as soon as it is complete."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hil.crash import ConsoleWatcher, parse, parse_all
from hil.paths import CORPUS_HINT, linux_crash_corpus

DATA = Path(__file__).parent / "data"
OOPS = (DATA / "debian12-6.1-null-deref-oops.log").read_text()
CORPUS = linux_crash_corpus()
# A few corpus logs of different shapes: task-context KASAN, stall, lockdep, hung task, arm64.
CORPUS_SAMPLES = ["130", "264", "558", "1000", "734", "12"]


def _chunks(text: str, sizes) -> list[str]:
    out, pos = [], 0
    for size in sizes:
        if pos >= len(text):
            break
        out.append(text[pos : pos + size])
        pos += size
    if pos < len(text):
        out.append(text[pos:])
    return out


def _stream(chunks) -> ConsoleWatcher:
    w = ConsoleWatcher()
    for chunk in chunks:
        w.feed(chunk)
    w.flush()
    return w


def _corpus_log(name: str) -> str:
    from hil.bench.crash_corpus import load_case

    return load_case(CORPUS / name).log


def test_oops_title():
    rep = parse(OOPS)
    assert rep.title == "BUG: unable to handle kernel NULL pointer dereference in hil_demo_rx_complete"
    assert rep.kind == "BUG" and rep.function == "hil_demo_rx_complete" and not rep.corrupted
    assert OOPS[rep.start :].startswith("[   15.210113] BUG: kernel NULL pointer dereference")
    assert "Call Trace:" in rep.text and "hil_demo_poll" in rep.text


def test_one_byte_at_a_time_gives_the_same_report():
    w = _stream(OOPS)  # iterating a str feeds one character at a time
    assert [(r.title, r.start, r.end) for r in w.reports] == [(r.title, r.start, r.end) for r in parse_all(OOPS)]


@pytest.mark.parametrize("seed", range(5))
def test_random_chunks_give_the_same_report(seed):
    rng = random.Random(seed)
    chunks = _chunks(OOPS, [rng.randint(1, 200) for _ in range(len(OOPS))])
    assert _stream(chunks).first == parse(OOPS)


def test_bytes_and_crlf_are_accepted():
    rep = _stream([OOPS.replace("\n", "\r\n").encode()]).first
    assert rep is not None and rep.title == parse(OOPS).title


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared crash corpus not found at {CORPUS}: {CORPUS_HINT}")
@pytest.mark.parametrize("name", CORPUS_SAMPLES)
def test_corpus_log_chunking_invariance(name):
    text = _corpus_log(name)
    expected = parse(text)
    assert expected is not None
    rng = random.Random(name)
    chunks = _chunks(text, [rng.choice([1, 2, 3, 7, 64, 500, 4096]) for _ in range(len(text))])
    got = _stream(chunks).first
    assert got == expected


def test_report_arrives_before_the_stream_ends():
    seen = []
    w = ConsoleWatcher(on_report=seen.append)
    lines = OOPS.splitlines(keepends=True)
    fed = 0
    for line in lines:
        w.feed(line)
        fed += len(line)
        if seen:
            break
    assert seen and seen[0].title.endswith("in hil_demo_rx_complete")
    # Named once its stack trace ended: well before the tail of the log was written.
    assert fed < len(OOPS) - 200
    assert fed <= seen[0].end + 200


def test_partial_line_is_held_until_its_end():
    w = ConsoleWatcher()
    w.feed("[   15.210113] BUG: kernel NULL pointer deref")
    assert not w.busy and w.first is None  # the header is not complete yet
    w.feed("erence, address: 0000000000000010\n")
    assert w.busy


def test_flush_names_an_unfinished_report():
    head = OOPS[: OOPS.index("Call Trace:")]
    w = ConsoleWatcher()
    w.feed(head)
    assert w.first is None and w.busy
    rep = w.flush()
    assert rep is not None and rep.title.endswith("in hil_demo_rx_complete")
    assert rep.corrupted  # no stack trace seen


def test_parse_all_finds_each_report():
    reports = parse_all(OOPS + OOPS.replace("15.2", "25.2"))
    assert len(reports) == 2 and reports[0].title == reports[1].title
    assert reports[1].start > reports[0].end


def test_utf8_split_between_byte_chunks():
    text = "[   15.000000] hil-agent[702]: caf\u00e9 \u2713\n" + OOPS
    data = text.encode()
    w = _stream([data[i : i + 1] for i in range(len(data))])
    assert w.first == parse(text)
