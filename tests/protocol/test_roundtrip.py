"""Property-based round trips of the Python codec (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hil.protocol import (
    MAX_PATH,
    End,
    Hello,
    ProtocolError,
    Records,
    Request,
    StreamDecoder,
    decode_record,
    decode_stream,
    encode_batch,
    encode_hello,
    encode_process_record,
    encode_raw_record,
    encode_request,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text255 = st.text(min_size=1, max_size=60).filter(lambda s: len(s.encode()) <= 255)

process = st.builds(
    lambda kind, pid, path, size, sha: (kind, pid, path, size, sha),
    st.sampled_from(["created", "exited"]),
    u32,
    st.binary(max_size=300) | st.binary(min_size=MAX_PATH, max_size=MAX_PATH),
    u64,
    st.binary(min_size=32, max_size=32),
)
unknown = st.tuples(st.integers(3, 0xFFFF), st.binary(max_size=100))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(process, unknown), max_size=60), u32, u32, st.lists(st.integers(1, 5000), max_size=30))
def test_batch_roundtrip_any_chunking(items, rid, dropped, cuts):
    raws = [encode_process_record(*i) if len(i) == 5 else encode_raw_record(*i) for i in items]
    data = encode_batch(rid, raws, dropped)
    dec = StreamDecoder()
    frames = []
    pos = 0
    for cut in cuts:  # arbitrary TCP segmentation
        frames.extend(dec.feed(data[pos : pos + cut]))
        pos += cut
    frames.extend(dec.feed(data[pos:]))
    dec.close()
    assert isinstance(frames[-1], End) and frames[-1] == End(rid, len(items), dropped)
    got_procs = [decode_record(r) for f in frames[:-1] for r in f.records]
    got_skipped = [s for f in frames[:-1] for s in f.skipped]
    want_procs = [i for i in items if len(i) == 5]
    assert [(r.kind, r.pid, r.image_path_bytes, r.image_size, r.sha256) for r in got_procs] == want_procs
    assert got_skipped == [(i[0], len(i[1])) for i in items if len(i) == 2]
    assert all(isinstance(f, Records) for f in frames[:-1])


@settings(max_examples=100, deadline=None)
@given(text255, st.text(max_size=40), text255, u32)
def test_hello_request_roundtrip(kind, os_, host, rid):
    frames = decode_stream(encode_hello(kind, os_, host) + encode_request(rid))
    assert frames == [Hello(kind, os_, host, 1), Request(rid)]


@settings(max_examples=100, deadline=None)
@given(text255, text255, st.binary(max_size=255), u32)
def test_hello_with_token_roundtrip(kind, host, token, rid):
    frames = decode_stream(encode_hello(kind, "os", host, token=token) + encode_request(rid))
    assert frames == [Hello(kind, "os", host, 1, token), Request(rid)]
    assert frames[0].token == token


def test_hello_token_is_not_shown():
    hello = Hello("k", "os", "h", 1, b"s3cret")
    assert "s3cret" not in repr(hello) and "s3cret" not in str(hello)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_only_protocol_errors(data):
    try:
        decode_stream(data)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(process, min_size=1, max_size=5), st.data())
def test_mutated_frames_raise_only_protocol_errors(items, data):
    raw = bytearray(encode_batch(1, [encode_process_record(*i) for i in items]))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        decode_stream(bytes(raw))
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(process, min_size=2, max_size=6), st.integers(1, 60), st.binary(max_size=100))
def test_a_record_cut_by_its_frame_is_named_the_same_whatever_follows(items, cut, after):
    """The payload alone or followed by more bytes (the rest of a read): the same error, at
    the cut record's own offset."""
    from hil.protocol.codec import decode_records

    payload = b"".join(encode_process_record(*i) for i in items)
    payload = payload[: max(0, len(payload) - cut)]
    problems = []
    for buf, off in ((payload, 0), (b"\0" * 9 + payload + after, 9)):
        try:
            decode_records(buf, off, off + len(payload), [], [])
            problems.append(None)
        except ProtocolError as exc:
            problems.append(exc.problem)
    assert problems[0] == problems[1]
