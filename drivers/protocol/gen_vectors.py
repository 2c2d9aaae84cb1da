#!/usr/bin/env python3
"""Generate the golden vectors in drivers/protocol/vectors/ (NAME.bin + NAME.json).

Usage: python drivers/protocol/gen_vectors.py [OUTDIR]   (default: the vectors/ folder here)

Each vector's JSON states what the bytes mean, written from the spec (PROTOCOL.md), not read
back from a decoder:

    {"description": ..., "canonical": true|false, "frames": [...], "error": null | "ClassName"}

``frames`` are the frames a correct decoder yields before ``error`` (if any). ``canonical`` says
whether re-encoding the decoded frames reproduces the bytes (false when the input carries
future fields, which decoders ignore). Record entries are either a process record
``{"kind", "pid", "image_size", "sha256" (hex), "image_path"}`` (``"image_path_hex"``
instead when the path bytes are not UTF-8) or an unknown record
``{"skipped_type", "body_len"}``. HELLO strings are given as text, the HELLO token (opaque
bytes, empty when the agent sent none) as ``"token_hex"``.

The Python and C test suites (tests/protocol/) decode every vector and compare; the test suite
also re-runs this script and checks the committed files are what it produces.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a checkout without installing

from hil.protocol import (  # noqa: E402
    encode_end,
    encode_frame,
    encode_hello,
    encode_process_record,
    encode_raw_record,
    encode_records_frames,
    encode_request,
)
from hil.protocol.codec import END, HELLO, RECORDS, REQUEST  # noqa: E402

VECTORS: dict[str, tuple[str, bytes, list, str | None, bool]] = {}


def vector(name, description, data, frames, error=None, canonical=True):
    VECTORS[name] = (description, data, frames, error, canonical if error is None else False)


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def proc(kind, pid, path, size=0, digest=bytes(32), extra=b""):
    """(wire bytes, JSON meaning) of one process record."""
    raw_path = path.encode("utf-8") if isinstance(path, str) else path
    data = encode_process_record(kind, pid, raw_path, size, digest, extra)
    meaning = {"kind": kind, "pid": pid, "image_size": size, "sha256": digest.hex()}
    try:
        meaning["image_path"] = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        meaning["image_path_hex"] = raw_path.hex()
    return data, meaning


def unknown(rtype, body):
    return encode_raw_record(rtype, body), {"skipped_type": rtype, "body_len": len(body)}


def records_frame(*recs):
    return encode_frame(RECORDS, b"".join(r[0] for r in recs)), {
        "type": "RECORDS", "records": [r[1] for r in recs]}


def hello(kind, os_, host, token=b""):
    return encode_hello(kind, os_, host, token=token), {
        "type": "HELLO", "protocol_version": 1, "kind": kind, "os": os_, "host": host,
        "token_hex": token.hex()}


def request(rid):
    return encode_request(rid), {"type": "REQUEST", "request_id": rid}


def end(rid, count, dropped=0):
    return encode_end(rid, count, dropped), {
        "type": "END", "request_id": rid, "count": count, "dropped": dropped}


def seq(*frames):
    return b"".join(f[0] for f in frames), [f[1] for f in frames]


def header(ftype, length, magic=b"KH", version=1):
    return magic + struct.pack("<BBI", version, ftype, length)


NOTEPAD = proc("created", 4242, "C:\\Windows\\System32\\notepad.exe", 201216, sha("notepad"))
NOTEPAD_EXIT = proc("exited", 4242, "C:\\Windows\\System32\\notepad.exe")
BASH = proc("created", 1337, "/usr/bin/bash", 1265648, sha("bash"))

# ------------------------------------------------------------------------------ valid
vector("hello", "HELLO from a Windows kernel agent",
       *seq(hello("win-kmdf", "windows-10-22h2", "win10-gw0")))
vector("hello_utf8_empty_os", "HELLO with a non-ASCII host name and an empty os",
       *seq(hello("py-ref", "", "게스트-1")))
vector("hello_token", "HELLO with the optional shared token after host",
       *seq(hello("linux-kmod", "linux-6.1.0-18-amd64", "deb12-gw0", b"s3cret-token")))
vector("hello_token_binary_max", "HELLO with a 255-byte token of arbitrary bytes",
       *seq(hello("win-wdm", "windows-10.0.19045", "win10", bytes(range(255)))))
vector("request", "REQUEST id 7", *seq(request(7)))
vector("end_empty", "END of an empty batch", *seq(end(1, 0)))
vector("batch_one", "one process-created record, then END",
       *seq(records_frame(NOTEPAD), end(1, 1)))
vector("batch_created_exited", "created then exited (exit record: size 0, zero sha256)",
       *seq(records_frame(NOTEPAD, NOTEPAD_EXIT), end(3, 2)))
vector("session", "HELLO, REQUEST, RECORDS, END with dropped records",
       *seq(hello("linux-kmod", "debian-12", "deb12-gw1"), request(1),
            records_frame(BASH, NOTEPAD, NOTEPAD_EXIT), end(1, 3, 2)))
vector("unknown_record_skipped", "a record of unknown type 99 between two process records "
       "is skipped by its length and still counted",
       *seq(records_frame(NOTEPAD, unknown(99, b"0123456789"), NOTEPAD_EXIT), end(1, 3)))
vector("unknown_record_empty_body", "unknown record type 0x7fff with an empty body",
       *seq(records_frame(unknown(0x7FFF, b"")), end(2, 1)))
vector("path_utf8", "image path with Korean and non-BMP characters",
       *seq(records_frame(proc("created", 7, "C:\\사용자\\테스트\\🦀.exe", 1, sha("x")))))
vector("path_invalid_utf8", "image path bytes that are not UTF-8 are kept, not rejected",
       *seq(records_frame(proc("created", 8, b"C:\\\xff\xfe\\a.exe"))))
vector("path_empty", "empty image path", *seq(records_frame(proc("exited", 9, ""))))
vector("path_max", "image path of exactly 4096 bytes",
       *seq(records_frame(proc("created", 10, "/" + "p" * 4095, 5, sha("max")))))
vector("records_empty_frame", "a RECORDS frame with no records", *seq(records_frame()))
vector("extreme_values", "u32/u64 maxima",
       *seq(request(0xFFFFFFFF),
            records_frame(proc("created", 0xFFFFFFFF, "/x", 2**64 - 1, b"\xff" * 32)),
            end(0xFFFFFFFF, 1, 0xFFFFFFFF)))

_many = [proc("created", 1000 + i, f"/opt/app/bin/worker-{i:04d}-" + "d" * 3300, i, sha(str(i)))
         for i in range(20)]
_frames = encode_records_frames([r[0] for r in _many])
assert len(_frames) == 2, len(_frames)
_split = len(_frames[0]) - 8
_n0 = sum(1 for _ in range(20) if sum(len(r[0]) for r in _many[:_ + 1]) <= _split)
vector("batch_two_frames", "20 records split into two RECORDS frames (64 KiB limit), then END",
       b"".join(_frames) + encode_end(5, 20),
       [{"type": "RECORDS", "records": [r[1] for r in _many[:_n0]]},
        {"type": "RECORDS", "records": [r[1] for r in _many[_n0:]]},
        end(5, 20)[1]])

_hello = hello("py-ref", "linux", "future-host")
_p = proc("created", 11, "/bin/true", 3, sha("t"), extra=b"\x02\x00\xaa\xbb")
vector("future_fields", "bytes after the known fields (HELLO, END, record body) are ignored",
       encode_frame(HELLO, _hello[0][8:] + b"\x00\x00") + encode_frame(RECORDS, _p[0])
       + encode_frame(END, struct.pack("<III", 4, 1, 0) + b"\x01\x02\x03\x04"),
       [_hello[1], {"type": "RECORDS", "records": [_p[1]]}, end(4, 1)[1]],
       canonical=False)

_hello = hello("py-ref", "linux", "future-host", b"tok")
vector("hello_token_future_fields", "bytes after the token are future fields, ignored",
       encode_frame(HELLO, _hello[0][8:] + b"\x07\x00later"), [_hello[1]], canonical=False)

# ------------------------------------------------------------------------------ invalid
vector("bad_magic_http", "an HTTP request instead of a frame",
       b"GET / HTTP/1.1\r\nHost: 10.0.2.2\r\n\r\n", [], "BadMagic")
vector("bad_magic_one_byte", "garbage is rejected from its first byte", b"X", [], "BadMagic")
vector("bad_magic_after_frames", "a valid HELLO, then a desynchronised stream",
       *seq(hello("py-ref", "linux", "h")), error="BadMagic")
VECTORS["bad_magic_after_frames"] = (
    VECTORS["bad_magic_after_frames"][0],
    VECTORS["bad_magic_after_frames"][1] + b"\x00KH\x01\x04\x0c\x00\x00\x00",
    *VECTORS["bad_magic_after_frames"][2:])
vector("unsupported_version", "header version 2", header(REQUEST, 4, version=2) + b"\0" * 4,
       [], "UnsupportedVersion")
vector("unknown_frame_type", "frame type 9", header(9, 0), [], "UnknownFrameType")
vector("unknown_frame_type_zero", "frame type 0", header(0, 0), [], "UnknownFrameType")
vector("frame_too_large", "payload length 65529 (one over the limit), rejected from the header",
       header(RECORDS, 65529), [], "FrameTooLarge")
vector("frame_too_large_huge", "payload length 0xffffffff", header(RECORDS, 0xFFFFFFFF), [],
       "FrameTooLarge")
vector("truncated_header", "stream ends inside a header", b"KH\x01", [], "TruncatedFrame")
vector("truncated_payload", "stream ends one byte before the end of a HELLO",
       hello("py-ref", "linux", "h")[0][:-1], [], "TruncatedFrame")
vector("truncated_after_frames", "a REQUEST, then half an END",
       request(3)[0] + end(3, 0)[0][:13], [request(3)[1]], "TruncatedFrame")
vector("hello_short", "HELLO payload of 1 byte", header(HELLO, 1) + b"\x01", [],
       "MalformedFrame")
vector("hello_empty_host", "HELLO with an empty host name",
       encode_frame(HELLO, struct.pack("<HH", 1, 2) + b"ab" + struct.pack("<H", 0)
                    + struct.pack("<H", 0)), [], "MalformedFrame")
vector("hello_string_overrun", "HELLO kind length overruns the payload",
       encode_frame(HELLO, struct.pack("<HH", 1, 50) + b"abc"), [], "MalformedFrame")
vector("hello_string_too_long", "HELLO kind of 256 bytes",
       encode_frame(HELLO, struct.pack("<HH", 1, 256) + b"k" * 256 + struct.pack("<H", 0)
                    + struct.pack("<H", 1) + b"h"), [], "MalformedFrame")
_hello = hello("py-ref", "linux", "h")[0][8:]
vector("hello_token_length_cut", "one byte after host: a token length cut short",
       encode_frame(HELLO, _hello + b"\x05"), [], "MalformedFrame")
vector("hello_token_overrun", "HELLO token length overruns the payload",
       encode_frame(HELLO, _hello + struct.pack("<H", 10) + b"abc"), [], "MalformedFrame")
vector("hello_token_too_long", "HELLO token of 256 bytes",
       encode_frame(HELLO, _hello + struct.pack("<H", 256) + b"t" * 256), [], "MalformedFrame")
vector("request_short", "REQUEST payload of 3 bytes", header(REQUEST, 3) + b"\x01\x00\x00",
       [], "MalformedFrame")
vector("end_short", "END payload of 8 bytes", header(END, 8) + b"\0" * 8, [], "MalformedFrame")
vector("record_header_short", "RECORDS payload of 3 bytes", header(RECORDS, 3) + b"\x01\x00\x00",
       [], "MalformedRecord")
vector("record_body_overrun", "record body_len runs past the payload",
       encode_frame(RECORDS, NOTEPAD[0] + struct.pack("<HH", 99, 20) + b"short"),
       [], "MalformedRecord")
_bad = bytearray(NOTEPAD[0])
_bad[4:6] = struct.pack("<H", 8)
vector("record_bad_pid_len", "process record whose pid field says 8 bytes",
       encode_frame(RECORDS, bytes(_bad)), [], "MalformedRecord")
_bad = bytearray(NOTEPAD[0])
_bad[20:22] = struct.pack("<H", 64)
vector("record_bad_sha_len", "process record whose sha256 field says 64 bytes (hex, not raw)",
       encode_frame(RECORDS, bytes(_bad)), [], "MalformedRecord")
_long = b"/" + b"q" * 4096
vector("record_path_too_long", "image path of 4097 bytes",
       encode_frame(RECORDS, struct.pack("<HHHIHQH32sH", 1, 52 + len(_long), 4, 1, 8, 0, 32,
                                         bytes(32), len(_long)) + _long),
       [], "MalformedRecord")
_bad = bytearray(NOTEPAD[0])
_bad[54:56] = struct.pack("<H", len(NOTEPAD[0]) - 56 + 1)
vector("record_path_overrun", "image path length one more than the body holds",
       encode_frame(RECORDS, bytes(_bad)), [], "MalformedRecord")
vector("record_body_too_short", "process record with a 40-byte body",
       encode_frame(RECORDS, struct.pack("<HH", 2, 40) + b"\0" * 40), [], "MalformedRecord")
_ok = records_frame(BASH)
vector("records_bad_second_frame", "a valid RECORDS frame, then a malformed one: the first is "
       "delivered, the second rejected whole",
       _ok[0] + encode_frame(RECORDS, BASH[0] + b"\x01\x00"), [_ok[1]], "MalformedRecord")


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else HERE / "vectors"
    out.mkdir(parents=True, exist_ok=True)
    for name, (description, data, frames, error, canonical) in sorted(VECTORS.items()):
        (out / f"{name}.bin").write_bytes(data)
        meaning = {"description": description, "canonical": canonical, "frames": frames,
                   "error": error}
        (out / f"{name}.json").write_text(json.dumps(meaning, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(VECTORS)} vectors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
