"""The collector's C fast path (the drivers' hil_proto.c through ctypes) against the Python
codec: the same frames, records and errors for every input, however the bytes are cut."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.protocol import (
    MAX_PATH,
    End,
    ProtocolError,
    Records,
    Request,
    StreamDecoder,
    encode_batch,
    encode_hello,
    encode_process_record,
    encode_raw_record,
    encode_request,
    native,
)
from hil.protocol.codec import SMALL_FRAME, RawRecords, RunRecords

VECTOR_DIR = Path(__file__).resolve().parents[2] / "drivers" / "protocol" / "vectors"
VECTORS = sorted(p.stem for p in VECTOR_DIR.glob("*.bin"))
u32 = st.integers(0, 2**32 - 1)
process = st.tuples(
    st.sampled_from(["created", "exited"]),
    u32,
    st.binary(max_size=200) | st.binary(min_size=MAX_PATH, max_size=MAX_PATH),
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=8) | st.just(b""),
)  # last: future fields after the path
unknown = st.tuples(st.integers(3, 0xFFFF), st.binary(max_size=60))
plain = st.tuples(  # a v1 process record of exactly its size: the C codec indexes these
    st.sampled_from(["created", "exited"]), u32, st.binary(max_size=40), st.just(7), st.just(bytes(32)), st.just(b"")
)


def outcome(data: bytes, cuts: list[int], native_codec: bool):
    """Frames (records as plain lists) and the error, as a decoder fed in those pieces sees them."""
    dec = StreamDecoder(native=native_codec)
    frames, pos = [], 0
    try:
        for cut in [*cuts, len(data)]:
            for f in dec.feed(data[pos : pos + cut]):
                frames.append(Records(list(f.records), f.skipped) if isinstance(f, Records) else f)
            pos += cut
        dec.close()
    except ProtocolError as exc:
        return frames, (type(exc).__name__, str(exc))
    return frames, None


def test_the_native_codec_is_built_and_loaded():
    assert native.status().startswith("on"), native.status()


def test_a_collector_decoder_uses_it():
    recs = [encode_process_record("created", pid, "/bin/true") for pid in range(20)]
    frame = next(iter(StreamDecoder(native=True).feed(encode_batch(1, recs))))
    assert isinstance(frame.records, RawRecords) and frame.records == recs
    # a view costs more than a few copies: small frames get a plain list
    small = next(iter(StreamDecoder(native=True).feed(encode_batch(1, recs[:SMALL_FRAME]))))
    assert type(small.records) is list and small.records == recs[:SMALL_FRAME]


@pytest.mark.parametrize("chunk", [None, 1, 7, 4096])
@pytest.mark.parametrize("name", VECTORS)
def test_golden_vectors_decode_the_same(name, chunk):
    data = (VECTOR_DIR / f"{name}.bin").read_bytes()
    cuts = [] if chunk is None else [chunk] * (len(data) // chunk)
    assert outcome(data, cuts, True) == outcome(data, cuts, False)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.one_of(process, unknown), max_size=40), min_size=1, max_size=4),
    st.lists(st.integers(1, 70000), max_size=8),
)
def test_any_batches_any_cuts_decode_the_same(batches, cuts):
    data = encode_hello("k", "linux", "h") + encode_request(1)
    for items in batches:
        data += encode_batch(1, [encode_process_record(*i) if len(i) == 6 else encode_raw_record(*i) for i in items])
    assert outcome(data, cuts, True) == outcome(data, cuts, False)


@settings(max_examples=300, deadline=None)
@given(st.lists(process, min_size=1, max_size=30), st.data())
def test_mutated_frames_fail_the_same_way(items, data):
    raw = bytearray(encode_batch(1, [encode_process_record(*i) for i in items]))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cuts = data.draw(st.lists(st.integers(1, 5000), max_size=4))
    assert outcome(bytes(raw), cuts, True) == outcome(bytes(raw), cuts, False)


class Arena:
    """A read buffer as the collector's ReadArena is: what the decoder is fed starts it."""

    def __init__(self, size: int):
        self.write = memoryview(bytearray(size))
        self.view = self.write.toreadonly()
        self.start = 0
        self.nbytes = sys.getsizeof(self.write.obj)
        self.used = False


def flattened(frames) -> list:
    """Records one by one, skipped records, other frames: the same whatever frames were merged."""
    out: list = []
    for f in frames:
        if isinstance(f, Records):
            out += [("record", bytes(r)) for r in f.records] + [("skipped", s) for s in f.skipped]
        else:
            out.append(f)
    return out


def arena_outcome(data: bytes, cuts: list[int], size: int):
    """What the collector's decoder keeps reading ``data`` in pieces of ``cuts`` bytes into
    read buffers of ``size`` bytes: a fresh buffer once one is kept, a buffer not kept
    scribbled over before the next read (a record viewing it would change)."""
    dec = StreamDecoder(native=True)
    frames: list = []
    kept = pos = 0
    arena = Arena(size)
    error = None
    try:
        for cut in [*cuts, len(data)]:
            while pos < len(data) and cut:
                piece = data[pos : pos + min(cut, size)]
                arena.write[: len(piece)] = piece
                frames += dec.feed(arena.write[: len(piece)], arena)
                pos += len(piece)
                cut -= len(piece)
                if arena.used:
                    kept += 1
                    arena = Arena(size)
                else:
                    arena.write[:] = b"\xee" * size
        dec.close()
    except ProtocolError as exc:
        error = (type(exc).__name__, str(exc))
    return flattened(frames), error, dec.frames, kept, frames


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(plain, min_size=2, max_size=40) | st.lists(st.one_of(process, unknown), max_size=10),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.integers(1, 4096), max_size=6),
    st.sampled_from([1, 2, 3]),
)
def test_reads_kept_whole_decode_the_same(batches, cuts, reads):
    data = encode_hello("k", "linux", "h") + encode_request(1)
    for items in batches:
        data += encode_batch(1, [encode_process_record(*i) if len(i) == 6 else encode_raw_record(*i) for i in items])
    records, error, n_frames, _, _ = arena_outcome(data, cuts, max(256, len(data) // reads))  # ~reads reads
    frames, python_error = outcome(data, cuts, False)
    assert (records, error) == (flattened(frames), python_error)
    assert n_frames == len(frames)  # frames merged into one batch still count one by one


@settings(max_examples=300, deadline=None)
@given(st.lists(plain | process, min_size=1, max_size=60), st.data())
def test_mutated_reads_kept_whole_fail_the_same_way(items, data):
    raw = bytearray(encode_request(1) + encode_batch(1, [encode_process_record(*i) for i in items]) * 3)
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cuts = data.draw(st.lists(st.integers(1, 5000), max_size=4))
    size = max(256, len(raw) // data.draw(st.sampled_from([1, 2, 3])))
    records, error, n_frames, _, _ = arena_outcome(bytes(raw), cuts, size)
    frames, python_error = outcome(bytes(raw), cuts, False)
    assert (records, error, n_frames) == (flattened(frames), python_error, len(frames))


def test_a_read_mostly_records_is_kept_whole_as_one_batch():
    recs = [encode_process_record("created", pid, f"/p/{pid:05d}" + "x" * 50) for pid in range(250)]
    data = encode_request(1) + encode_batch(1, recs[:200]) + encode_batch(2, recs[200:])
    assert len(data) < 32768  # one read
    records, error, n_frames, kept, frames = arena_outcome(data, [], 32768)
    assert error is None and n_frames == 5
    assert records == [
        Request(1),
        *(("record", r) for r in recs[:200]),
        End(1, 200),
        *(("record", r) for r in recs[200:]),
        End(2, 50),
    ]
    first, second = [f.records for f in frames if isinstance(f, Records)]
    assert kept == 1 and isinstance(first, RunRecords) and isinstance(second, RunRecords)
    assert first._data.obj is not second._data  # over half the read: kept in it; the next run: copied
    assert list(first) == recs[:200] and first[-1] == recs[199] and first[1:3] == recs[1:3]
    assert first.nbytes > 32768 and second.nbytes < 5700 + 512  # charged what they hold


def test_raw_records_behave_like_the_list_they_stand_for():
    recs = [encode_process_record("exited", pid, f"/p/{pid}" * pid) for pid in range(1, 6)]
    payload = b"".join(recs)
    data = b"head" + payload + b"tail"
    view = RawRecords(data, 4, 4 + len(payload), native.indexer().index(data, 4, 4 + len(payload)))
    assert len(view) == 5 and list(view) == recs and view == recs and view != recs[:4]
    assert view[0] == recs[0] and view[-1] == recs[-1] and view[1:3] == recs[1:3]
    with pytest.raises(IndexError):
        view[5]


def test_it_can_be_switched_off():
    code = (
        "from hil.protocol import native, StreamDecoder, encode_batch;"
        "print(native.status());"
        "print(len(list(StreamDecoder(native=True).feed(encode_batch(1, [])))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"HIL_NATIVE_CODEC": "0", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("off (HIL_NATIVE_CODEC=0)") and out.split()[-1] == "1"
