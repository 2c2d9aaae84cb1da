"""Frame encoder and incremental stream decoder for protocol v1 (sections 2-4 of
drivers/protocol/PROTOCOL.md).

Decoding speed matters (the collector must keep up with a kernel agent flushing a full
buffer): a RECORDS payload is walked with one ``struct.unpack_from`` of the fixed 56-byte
process-record prefix and one slice per record; anything unusual (unknown record types,
future fields) falls to a slower, fully checked path.  A decoder made with ``native=True``
(the collector's) indexes payloads with the drivers' C codec instead, when it can be loaded
(:mod:`hil.protocol.native`), and hands out :class:`RawRecords` views instead of copies.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast, overload

from hil.protocol.errors import (
    BadMagic,
    FrameTooLarge,
    MalformedFrame,
    MalformedRecord,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
)
from hil.protocol.records import MAX_PATH, PROCESS_CREATED, PROCESS_EXITED

if TYPE_CHECKING:
    from hil.protocol.native import FrameSplitter, RecordIndexer

UNINDEXED = 0xFFFFFFFF  # hil_split_frames: a frame the Python codec decodes

MAGIC = b"KH"
VERSION = 1
HEADER = struct.Struct("<2sBBI")
HEADER_LEN = HEADER.size  # 8
MAX_FRAME = 65536
MAX_PAYLOAD = MAX_FRAME - HEADER_LEN
MAX_HELLO_STRING = 255
MAX_TOKEN = 255  # HELLO's optional shared token (drivers/protocol/PROTOCOL.md 3.1), opaque bytes

HELLO = 1
REQUEST = 2
RECORDS = 3
END = 4
FRAME_NAMES = {HELLO: "HELLO", REQUEST: "REQUEST", RECORDS: "RECORDS", END: "END"}

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_END = struct.Struct("<III")
_REC_HDR = struct.Struct("<HH")
# the 56-byte process prefix with the values we do not need on the hot path skipped
_FAST = struct.Struct("<HHH4xH8xH32xH")
_FULL = struct.Struct("<HHHIHQH32sH")
SMALL_FRAME = 8  # records: up to this many, a RawRecords view would cost more than copies


class Hello(NamedTuple):
    """HELLO: the agent's identity and, optionally, the token shared with the collector
    (``b""``: none). The token is a secret: ``repr`` shows only whether there is one."""

    kind: str
    os: str
    host: str
    protocol_version: int = VERSION
    token: bytes = b""

    def encode(self) -> bytes:
        return encode_hello(self.kind, self.os, self.host, self.protocol_version, self.token)

    def __repr__(self) -> str:
        token = f", token=<{len(self.token)} bytes>" if self.token else ""
        return (
            f"Hello(kind={self.kind!r}, os={self.os!r}, host={self.host!r}, "
            f"protocol_version={self.protocol_version}{token})"
        )


class Request(NamedTuple):
    request_id: int

    def encode(self) -> bytes:
        return encode_request(self.request_id)


class RawRecords(Sequence[bytes]):
    """The raw process records of one RECORDS payload without a ``bytes`` object per record:
    a buffer, each record's start in it (counted from ``base``: ``data[base + starts[i]]``) and
    where the last one ends. Items are ``bytes``, as in the list the Python codec makes; equal
    to an equal list. The decoder gives it the frame's own bytes (never a larger read, which
    the view would keep alive; :class:`RunRecords` is the exception)."""

    __slots__ = ("_data", "_base", "_end", "_starts")

    def __init__(self, data: bytes, base: int, end: int, starts: Sequence[int]) -> None:
        self._data, self._base, self._end, self._starts = data, base, end, starts

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self._starts)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("record index out of range")
        return self._item(i)

    def _item(self, i: int) -> bytes:
        starts = self._starts
        stop = self._base + starts[i + 1] if i + 1 < len(starts) else self._end
        return self._data[self._base + starts[i] : stop]

    def __iter__(self) -> Iterator[bytes]:
        data, base, starts = self._data, self._base, self._starts
        for i in range(len(starts) - 1):
            yield data[base + starts[i] : base + starts[i + 1]]
        if starts:
            yield data[base + starts[-1] : self._end]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, RawRecords)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} records, {sum(map(len, self))} bytes)"

    @property
    def nbytes(self) -> int:
        """Memory this view holds: itself, its buffer and its offsets."""
        return sys.getsizeof(self) + sys.getsizeof(self._data) + sys.getsizeof(self._starts)


class Arena(Protocol):
    """A read buffer the collector may keep as the storage of the records read into it
    (``hil.collector.connection.ReadArena``): ``view`` is all of it, read-only, and the data
    fed starts at ``view[start]``; ``nbytes`` is the memory it takes. The decoder sets ``used``
    when it keeps records in it: the first records kept are charged the whole buffer, later
    ones (in later reads laid after them) nothing, until the store, evicting the last of
    them, clears ``used``."""

    view: memoryview
    start: int
    nbytes: int
    used: bool


class RunRecords(RawRecords):
    """The records of a run of consecutive RECORDS frames in one buffer, for the collector
    (``StreamDecoder.feed`` with an :class:`Arena`): the read buffer itself (no copy; ``owner``
    is the arena, which the collector reuses once its last view is gone), or one copy of the
    run. One store batch for many frames. Each record ends where its ``body_len`` says (all
    are v1 process records of exactly their size, checked in C), so the frame headers between
    them do not matter. ``nbytes`` counts ``size``: the copy, the whole arena for the first
    records kept in it, nothing for later ones (see ``hil.collector.store``)."""

    __slots__ = ("_owner", "_size")

    def __init__(
        self, data: bytes | memoryview, base: int, starts: Sequence[int], owner: Arena | None, size: int
    ) -> None:
        super().__init__(cast(bytes, data), base, 0, starts)
        self._owner, self._size = owner, size

    def _item(self, i: int) -> bytes:
        data = self._data
        start = self._base + self._starts[i]
        return bytes(data[start : start + 4 + (data[start + 2] | data[start + 3] << 8)])

    def __iter__(self) -> Iterator[bytes]:
        data, base = self._data, self._base
        for start in self._starts:
            start += base
            yield bytes(data[start : start + 4 + (data[start + 2] | data[start + 3] << 8)])

    @property
    def owner(self) -> Arena | None:
        """The arena the records are in, or None (a copy)."""
        return self._owner

    @property
    def size(self) -> int:
        """The part of :attr:`nbytes` that is the buffer."""
        return self._size

    @property
    def nbytes(self) -> int:
        """Memory this view is charged: itself, its offsets and ``size``."""
        return sys.getsizeof(self) + sys.getsizeof(self._starts) + self._size


class Records(NamedTuple):
    """A RECORDS frame: ``records`` are raw process records (see :mod:`hil.protocol.records`),
    ``skipped`` the (type, body_len) of records of unknown types."""

    records: list[bytes] | RawRecords
    skipped: list[tuple[int, int]]

    @property
    def count(self) -> int:  # type: ignore[override]  # a field-like count, not tuple.count()
        return len(self.records) + len(self.skipped)


class End(NamedTuple):
    request_id: int
    count: int  # type: ignore[assignment]  # the END frame's field shadows tuple.count()
    dropped: int = 0

    def encode(self) -> bytes:
        return encode_end(self.request_id, self.count, self.dropped)


Frame = Hello | Request | Records | End


# --------------------------------------------------------------------------- encoding


def encode_frame(ftype: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    return HEADER.pack(MAGIC, VERSION, ftype, len(payload)) + payload


def _str16(value: str, what: str, minimum: int) -> bytes:
    raw = value.encode("utf-8")
    if not minimum <= len(raw) <= MAX_HELLO_STRING:
        raise ValueError(f"HELLO {what} must be {minimum}..{MAX_HELLO_STRING} UTF-8 bytes: {value!r}")
    return _U16.pack(len(raw)) + raw


def encode_hello(kind: str, os: str, host: str, protocol_version: int = VERSION, token: bytes | str = b"") -> bytes:
    """HELLO; ``token`` (bytes, or text sent as UTF-8) is the optional shared secret, left out
    of the frame when empty (the frame is then exactly a HELLO without the field)."""
    payload = _U16.pack(protocol_version) + _str16(kind, "kind", 1) + _str16(os, "os", 0) + _str16(host, "host", 1)
    if token:
        raw = token_bytes(token)
        payload += _U16.pack(len(raw)) + raw
    return encode_frame(HELLO, payload)


def token_bytes(token: bytes | str) -> bytes:
    """The token as it goes on the wire: bytes as they are, text as UTF-8; at most 255 bytes."""
    raw = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    if len(raw) > MAX_TOKEN:
        raise ValueError(f"HELLO token must be 0..{MAX_TOKEN} bytes, got {len(raw)}")
    return raw


def encode_request(request_id: int) -> bytes:
    return encode_frame(REQUEST, _U32.pack(request_id))


def encode_end(request_id: int, count: int, dropped: int = 0) -> bytes:
    return encode_frame(END, _END.pack(request_id, count, dropped))


def encode_records_frames(records: Iterable[bytes]) -> list[bytes]:
    """Pack encoded records into as few RECORDS frames (<= 64 KiB each) as possible."""
    frames: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for rec in records:
        if size + len(rec) > MAX_PAYLOAD and chunk:
            frames.append(encode_frame(RECORDS, b"".join(chunk)))
            chunk, size = [], 0
        chunk.append(rec)
        size += len(rec)
    if chunk:
        frames.append(encode_frame(RECORDS, b"".join(chunk)))
    return frames


def encode_batch(request_id: int, records: list[bytes], dropped: int = 0) -> bytes:
    """The full reply to a REQUEST: RECORDS frames holding ``records``, then END."""
    return b"".join(encode_records_frames(records)) + encode_end(request_id, len(records), dropped)


# --------------------------------------------------------------------------- decoding


def decode_records(buf: bytes, off: int, end: int, out: list[bytes], skipped: list[tuple[int, int]]) -> None:
    """Validate the records in ``buf[off:end]``, appending raw process records to ``out``.

    ``buf`` must be a ``bytes`` object (slices of it become the stored records); it may extend
    beyond ``end`` (the rest of the stream). The hot loop handles well-formed process records
    with one unpack and no per-record bounds check: a record that runs past ``end`` can only be
    the last one walked, and is caught after the loop; anything else goes to the slow path.
    """
    unpack = _FAST.unpack_from
    append = out.append
    start = off  # errors name offsets in the payload
    while off < end:
        try:
            while off < end:
                t, blen, lp, ls, lh, ln = unpack(buf, off)
                if blen - ln != 52 or lp != 4 or ls != 8 or lh != 32 or ln > MAX_PATH or not 0 < t < 3:
                    break
                nxt = off + 56 + ln
                append(buf[off:nxt])
                off = nxt
        except struct.error:  # fewer than 56 bytes left in buf
            pass
        if off > end:  # the last record overran the payload: let the slow path say how
            out.pop()  # (a slice, cut short where buf ends: its length says nothing)
            off -= 56 + ln
        if off < end:
            off = _decode_record_slow(buf, off, end, out, skipped, start)


def _decode_record_slow(
    buf: bytes, off: int, end: int, out: list[bytes], skipped: list[tuple[int, int]], start: int
) -> int:
    left = end - off
    at = off - start  # in the payload
    if left < 4:
        raise MalformedRecord(f"record header at payload offset {at} needs 4 bytes, only {left} left")
    rtype, blen = _REC_HDR.unpack_from(buf, off)
    nxt: int = off + 4 + blen
    if nxt > end:
        raise MalformedRecord(
            f"record of type {rtype} at payload offset {at} has body_len {blen}, "
            f"only {left - 4} bytes left in the payload"
        )
    if rtype != PROCESS_CREATED and rtype != PROCESS_EXITED:
        skipped.append((rtype, blen))
        return nxt
    if blen < 52:
        raise MalformedRecord(f"process record at payload offset {at} has body_len {blen}; at least 52 needed")
    _, _, lp, _, ls, _, lh, _, ln = _FULL.unpack_from(buf, off)
    if (lp, ls, lh) != (4, 8, 32):
        raise MalformedRecord(
            f"process record at payload offset {at}: field lengths pid={lp} image_size={ls} "
            f"sha256={lh}; protocol v1 requires 4, 8 and 32"
        )
    if ln > MAX_PATH:
        raise MalformedRecord(
            f"process record at payload offset {at}: image path of {ln} bytes exceeds the {MAX_PATH}-byte limit"
        )
    if 52 + ln > blen:
        raise MalformedRecord(
            f"process record at payload offset {at}: image path of {ln} bytes overruns body_len {blen}"
        )
    out.append(buf[off:nxt])
    return nxt


def _decode_bytes16(payload: bytes, off: int, what: str, minimum: int) -> tuple[bytes, int]:
    if off + 2 > len(payload):
        raise MalformedFrame(f"HELLO payload ends before the length of {what}")
    (n,) = _U16.unpack_from(payload, off)
    off += 2
    if not minimum <= n <= MAX_HELLO_STRING:
        raise MalformedFrame(f"HELLO {what} is {n} bytes; allowed {minimum}..{MAX_HELLO_STRING}")
    if off + n > len(payload):
        raise MalformedFrame(f"HELLO {what} of {n} bytes overruns the payload")
    return payload[off : off + n], off + n


def _decode_str16(payload: bytes, off: int, what: str, minimum: int) -> tuple[str, int]:
    raw, off = _decode_bytes16(payload, off, what, minimum)
    return raw.decode("utf-8", "replace"), off


def decode_payload(ftype: int, payload: bytes) -> Frame:
    """Decode one frame's payload (``payload`` must be ``bytes``)."""
    if ftype == RECORDS:
        out: list[bytes] = []
        skipped: list[tuple[int, int]] = []
        decode_records(payload, 0, len(payload), out, skipped)
        return Records(out, skipped)
    if ftype == REQUEST:
        if len(payload) < 4:
            raise MalformedFrame(f"REQUEST payload is {len(payload)} bytes; 4 needed")
        return Request(_U32.unpack_from(payload, 0)[0])
    if ftype == END:
        if len(payload) < 12:
            raise MalformedFrame(f"END payload is {len(payload)} bytes; 12 needed")
        return End(*_END.unpack_from(payload, 0))
    if ftype == HELLO:
        if len(payload) < 2:
            raise MalformedFrame(f"HELLO payload is {len(payload)} bytes; at least 8 needed")
        (version,) = _U16.unpack_from(payload, 0)
        kind, off = _decode_str16(payload, 2, "kind", 1)
        os_, off = _decode_str16(payload, off, "os", 0)
        host, off = _decode_str16(payload, off, "host", 1)
        token = b""
        if off < len(payload):  # the optional token (MAX_TOKEN == MAX_HELLO_STRING)
            token, off = _decode_bytes16(payload, off, "token", 0)
        return Hello(kind, os_, host, version, token)  # bytes after it: future fields
    raise UnknownFrameType(f"frame type {ftype} is not defined in protocol v1")


def _check_header(magic: bytes, version: int, ftype: int, length: int, where: int) -> None:
    if magic != MAGIC:
        raise BadMagic(
            f"frame at stream offset {where} starts with {magic.hex()} instead of 4b48 ('KH'): "
            "the peer is not a kernel-hil agent or the stream lost sync"
        )
    if version != VERSION:
        raise UnsupportedVersion(
            f"frame at stream offset {where} is protocol version {version}; this side speaks {VERSION}"
        )
    if ftype not in FRAME_NAMES:
        raise UnknownFrameType(f"frame at stream offset {where} has unknown type {ftype}")
    if length > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"frame at stream offset {where} announces a {length}-byte payload; the limit is {MAX_PAYLOAD}"
        )


def _check_magic_prefix(partial: bytes | bytearray | memoryview, where: int) -> None:
    """Reject garbage as soon as its first bytes arrive, before a whole header is there."""
    head = bytes(partial[:2])
    if not MAGIC.startswith(head):
        raise BadMagic(
            f"frame at stream offset {where} starts with {head.hex()} instead of 4b48 ('KH'): "
            "the peer is not a kernel-hil agent or the stream lost sync"
        )


class StreamDecoder:
    """Incremental decoder: feed bytes as they arrive, iterate over complete frames.

    Buffers at most one incomplete frame (< 64 KiB). A bad frame raises a
    :class:`~hil.protocol.errors.ProtocolError` subclass from the iteration *after* every
    earlier frame has been yielded; the decoder is unusable afterwards.
    """

    __slots__ = ("_buf", "offset", "frames", "_indexer", "_splitter")

    def __init__(self, native: bool = False) -> None:
        self._buf = bytearray()
        self.offset = 0  # stream offset of the first byte not yet consumed
        self.frames = 0
        self._indexer: RecordIndexer | None = None
        self._splitter: FrameSplitter | None = None
        if native:
            from hil.protocol.native import indexer, splitter

            self._indexer = indexer()
            self._splitter = splitter()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held in the buffer."""
        return len(self._buf)

    def copy_pending(self, into: memoryview) -> int:
        """Copy the incomplete frame held (:attr:`pending`) to the start of ``into`` (to be
        fed back with ``replay``); how many bytes."""
        n = len(self._buf)
        if n:
            into[:n] = self._buf
        return n

    def feed(self, data: bytes | memoryview, arena: Arena | None = None, replay: int = 0) -> Iterator[Frame]:
        """Frames completed by ``data``. ``data`` may be a view of a buffer the caller reuses
        after the iteration: nothing yielded or kept refers to it.

        Unless ``arena`` is given (the collector's; a native decoder only): then each run of
        consecutive RECORDS frames of v1 process records comes as one :class:`Records` whose
        records are a :class:`RunRecords` in the arena itself (``arena.used`` is set) when the
        arena is already used or the run fills at least a quarter of it, else in one copy of
        the run. ``replay``: ``data`` starts with the incomplete frame this decoder holds (all of
        :attr:`pending`, laid in the arena right before the new bytes): it is walked in place.
        Records and errors are the same either way; ``frames`` still counts every frame."""
        buf = self._buf
        start = 0
        if replay:
            if replay != len(buf):
                raise ValueError(f"replay of {replay} bytes; {len(buf)} are pending")
            buf.clear()  # they are data[:replay]
        elif buf:
            # Complete the buffered frame with just the bytes it lacks, then walk the rest of
            # ``data`` in place: a peer trickling bytes costs O(1) per byte, and a frame split
            # across two reads costs one copy of that frame, not of the whole read.
            if len(buf) < HEADER_LEN:
                start = min(HEADER_LEN - len(buf), len(data))
                buf += data[:start]
                if len(buf) < HEADER_LEN:
                    _check_magic_prefix(buf, self.offset)
                    return
            magic, version, ftype, length = HEADER.unpack_from(buf, 0)
            if magic != MAGIC or version != VERSION or length > MAX_PAYLOAD or ftype not in FRAME_NAMES:
                _check_header(magic, version, ftype, length, self.offset)
            need = HEADER_LEN + length - len(buf)
            if len(data) - start < need:
                buf += memoryview(data)[start:]
                return
            whole = b"".join((buf, memoryview(data)[start : start + need]))  # one copy of each part
            start += need
            buf.clear()
            frame = self._decode(whole, HEADER_LEN, len(whole), ftype)  # (its records: views of it)
            self.frames += 1
            self.offset += len(whole)
            yield frame
        yield from self._walk(data, start, arena)

    def _walk(self, data: bytes | memoryview, off: int, arena: Arena | None = None) -> Iterator[Frame]:
        """Yield the whole frames in ``data[off:]``; keep an incomplete last one in the buffer.
        ``self.offset`` is the stream offset of ``data[off]`` throughout."""
        buf = self._buf
        unpack_header = HEADER.unpack_from
        splitter = self._splitter
        end = len(data)
        try:
            while end - off >= HEADER_LEN:
                if splitter is not None:
                    # the C codec splits what it can in one call: every whole frame up to an
                    # incomplete one or a bad header, RECORDS payloads indexed
                    table, starts = splitter.split(data, off, end)
                    base, i, n, s = off, 0, len(table), 0  # (offsets in table and starts: from base)
                    while i < n:
                        p = base + table[i] + HEADER_LEN
                        nxt = p + table[i + 2]
                        count = table[i + 3]
                        if count == UNINDEXED:  # (not a payload the C index takes: no second try)
                            frame: Frame = self._decode(data, p, nxt, table[i + 1], index=False)
                            i += 4
                        elif arena is not None:  # the run of indexed frames from here: one batch
                            j, total = i, 0
                            while j < n and table[j + 3] != UNINDEXED:
                                total += table[j + 3]
                                j += 4
                            run_end = base + table[j - 4] + HEADER_LEN + table[j - 2]
                            run = starts[s : s + total]
                            if total and (arena.used or 4 * (run_end - p) >= arena.nbytes):
                                size = 0 if arena.used else arena.nbytes  # charged once
                                arena.used = True  # kept where it was read: no copy
                                view, at = arena.view, arena.start + base
                                frame = Records(RunRecords(view, at, run, arena, size), [])
                            else:  # one copy of the run: its own bytes
                                copy = bytes(data[p:run_end])
                                frame = Records(RunRecords(copy, base - p, run, None, sys.getsizeof(copy)), [])
                            self.frames += (j - i) // 4 - 1
                            s += total
                            i = j
                            nxt = run_end
                        else:
                            frame = self._raw_records(data, p, nxt, starts[s : s + count], base)
                            s += count
                            i += 4
                        self.frames += 1
                        self.offset += nxt - off
                        off = nxt
                        yield frame
                    if n and end - off < HEADER_LEN:
                        break
                # one frame in Python: the only path without the C codec; with it, what it
                # leaves (an incomplete frame, a bad header, or a whole frame beyond its caps)
                magic, version, ftype, length = unpack_header(data, off)
                if magic != MAGIC or version != VERSION or length > MAX_PAYLOAD or ftype not in FRAME_NAMES:
                    _check_header(magic, version, ftype, length, self.offset)
                p = off + HEADER_LEN
                nxt = p + length
                if nxt > end:
                    break
                frame = self._decode(data, p, nxt, ftype)
                self.frames += 1
                self.offset += nxt - off
                off = nxt
                yield frame
            if off < end < off + HEADER_LEN:
                _check_magic_prefix(data[off:end], self.offset)
        finally:
            if off < end:
                buf += memoryview(data)[off:]

    def _raw_records(self, data: bytes | memoryview, p: int, nxt: int, starts: Sequence[int], base: int) -> Records:
        """The RECORDS frame ``data[p:nxt]`` the C codec indexed (all v1 process records; the
        records start at ``data[base + starts[i]]``)."""
        if len(starts) <= SMALL_FRAME:  # a view costs ~150 bytes: copies
            # (over a reused read buffer the items are views: bytes() copies them)
            view = RawRecords(cast(bytes, data), base, nxt, starts)
            return Records([bytes(r) for r in view], [])
        if p == HEADER_LEN and nxt == len(data) and type(data) is bytes:
            # data is this one frame (reassembled): its bytes are its own
            return Records(RawRecords(data, base, nxt, starts), [])
        # copied out: a view would keep the whole read alive
        return Records(RawRecords(bytes(data[p:nxt]), base - p, nxt - p, starts), [])

    def _decode(self, data: bytes | memoryview, p: int, nxt: int, ftype: int, index: bool = True) -> Frame:
        """The frame whose payload is ``data[p:nxt]``, decoded in Python (RECORDS indexed in C
        when the codec is loaded and ``index``); ``self.offset`` is where the frame starts in
        the stream."""
        if ftype != RECORDS:
            return decode_payload(ftype, bytes(data[p:nxt]))
        indexer = self._indexer if index else None
        starts = indexer.index(data, p, nxt) if indexer is not None else None
        if starts is not None:  # all v1 process records, checked in C
            return self._raw_records(data, p, nxt, starts, p)
        out: list[bytes] = []
        skipped: list[tuple[int, int]] = []
        try:
            if type(data) is bytes:  # slices of bytes are copies
                decode_records(data, p, nxt, out, skipped)
            else:  # a reused read buffer: slices would be views of it
                decode_records(bytes(data[p:nxt]), 0, nxt - p, out, skipped)
        except MalformedRecord as exc:
            exc.problem = f"{exc.problem} (RECORDS frame at stream offset {self.offset})"
            exc.args = (exc.problem,)
            raise
        return Records(out, skipped)

    def feed_all(self, data: bytes) -> list[Frame]:
        return list(self.feed(data))

    def close(self) -> None:
        """Declare end of stream: raises TruncatedFrame if a frame was left incomplete."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise TruncatedFrame(
                f"stream ended inside a frame at stream offset {self.offset} ({n} bytes of an incomplete frame)"
            )


def decode_stream(data: bytes) -> list[Frame]:
    """Decode a complete byte string; raises on bad or truncated input."""
    dec = StreamDecoder()
    frames = list(dec.feed(data))
    dec.close()
    return frames
