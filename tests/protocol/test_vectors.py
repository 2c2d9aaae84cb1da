"""Golden vectors (drivers/protocol/vectors/): the Python and the C codec must agree with them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hil.protocol import (
    ERROR_CLASSES,
    End,
    Hello,
    ProtocolError,
    Records,
    Request,
    StreamDecoder,
    decode_record,
    encode_batch,
    encode_end,
    encode_frame,
    encode_hello,
    encode_request,
)
from hil.protocol.codec import RECORDS

PROTO_DIR = Path(__file__).resolve().parents[2] / "drivers" / "protocol"
VECTOR_DIR = PROTO_DIR / "vectors"
VECTORS = sorted(p.stem for p in VECTOR_DIR.glob("*.bin"))


def load(name: str) -> tuple[bytes, dict]:
    return (VECTOR_DIR / f"{name}.bin").read_bytes(), json.loads(
        (VECTOR_DIR / f"{name}.json").read_text(encoding="utf-8")
    )


def path_bytes(rec: dict) -> bytes:
    if "image_path" in rec:
        return rec["image_path"].encode("utf-8")
    return bytes.fromhex(rec["image_path_hex"])


def frame_to_json(frame) -> dict:
    """The Python decoder's frame, in the vectors' JSON shape (order of skipped records aside)."""
    if isinstance(frame, Hello):
        return {
            "type": "HELLO",
            "protocol_version": frame.protocol_version,
            "kind": frame.kind,
            "os": frame.os,
            "host": frame.host,
            "token_hex": frame.token.hex(),
        }
    if isinstance(frame, Request):
        return {"type": "REQUEST", "request_id": frame.request_id}
    if isinstance(frame, End):
        return {"type": "END", "request_id": frame.request_id, "count": frame.count, "dropped": frame.dropped}
    assert isinstance(frame, Records)
    recs = []
    for raw in frame.records:
        r = decode_record(raw)
        recs.append(
            {
                "kind": r.kind,
                "pid": r.pid,
                "image_size": r.image_size,
                "sha256": r.sha256.hex(),
                "path": r.image_path_bytes,
            }
        )
    return {
        "type": "RECORDS",
        "records": recs,
        "skipped": [{"skipped_type": t, "body_len": n} for t, n in frame.skipped],
    }


def expected_python(frame: dict) -> dict:
    if frame["type"] != "RECORDS":
        return frame
    recs, skipped = [], []
    for r in frame["records"]:
        if "skipped_type" in r:
            skipped.append(r)
        else:
            recs.append(
                {
                    "kind": r["kind"],
                    "pid": r["pid"],
                    "image_size": r["image_size"],
                    "sha256": r["sha256"],
                    "path": path_bytes(r),
                }
            )
    return {"type": "RECORDS", "records": recs, "skipped": skipped}


@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("name", VECTORS)
def test_python_decoder(name, chunk):
    data, meaning = load(name)
    dec = StreamDecoder()
    got, error = [], None
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    try:
        for piece in pieces:
            got.extend(frame_to_json(f) for f in dec.feed(piece))
        dec.close()
    except ProtocolError as exc:
        error = exc
    assert got == [expected_python(f) for f in meaning["frames"]]
    if meaning["error"] is None:
        assert error is None, f"{name}: unexpected {error!r}"
    else:
        assert type(error) is ERROR_CLASSES[meaning["error"]], f"{name}: got {error!r}"
        assert str(error)  # a message naming the problem


def encode_from_meaning(frames: list[dict]) -> bytes:
    from hil.protocol import encode_process_record, encode_raw_record

    out = b""
    for f in frames:
        if f["type"] == "HELLO":
            out += encode_hello(
                f["kind"], f["os"], f["host"], f["protocol_version"], token=bytes.fromhex(f["token_hex"])
            )
        elif f["type"] == "REQUEST":
            out += encode_request(f["request_id"])
        elif f["type"] == "END":
            out += encode_end(f["request_id"], f["count"], f["dropped"])
        else:
            recs = b""
            for r in f["records"]:
                if "skipped_type" in r:
                    recs += encode_raw_record(r["skipped_type"], b"\0" * r["body_len"])
                else:
                    recs += encode_process_record(
                        r["kind"], r["pid"], path_bytes(r), r["image_size"], bytes.fromhex(r["sha256"])
                    )
            out += encode_frame(RECORDS, recs)
    return out


def _reproducible(name: str) -> bool:
    """Canonical vectors without opaque unknown-type bodies: those the encoder can rebuild
    (the others are errors, future fields, or records of types the encoder does not know)."""
    _, meaning = load(name)
    return meaning["canonical"] and not any(
        r.get("skipped_type") for f in meaning["frames"] if f["type"] == "RECORDS" for r in f["records"]
    )


@pytest.mark.parametrize("name", [n for n in VECTORS if _reproducible(n)])
def test_python_encoder_reproduces_canonical_vectors(name):
    data, meaning = load(name)
    assert encode_from_meaning(meaning["frames"]) == data


def test_encode_batch_splits_at_frame_limit():
    data, meaning = load("batch_two_frames")
    from hil.protocol import encode_process_record

    recs = [
        encode_process_record(r["kind"], r["pid"], path_bytes(r), r["image_size"], bytes.fromhex(r["sha256"]))
        for f in meaning["frames"]
        if f["type"] == "RECORDS"
        for r in f["records"]
    ]
    assert encode_batch(5, recs) == data


def test_vectors_match_generator(tmp_path):
    """The committed vectors are exactly what gen_vectors.py writes (no drift, no hand edits)."""
    subprocess.run([sys.executable, str(PROTO_DIR / "gen_vectors.py"), str(tmp_path)], check=True, capture_output=True)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in VECTOR_DIR.iterdir() if p.suffix in (".bin", ".json"))
    assert fresh == committed
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (VECTOR_DIR / name).read_bytes(), name


# ------------------------------------------------------------------------------ C side


def expected_c_lines(meaning: dict) -> list[str]:
    lines = []
    for f in meaning["frames"]:
        t = f["type"]
        if t == "HELLO":
            lines.append(
                f"HELLO version={f['protocol_version']} "
                f"kind={f['kind'].encode().hex()} os={f['os'].encode().hex()} "
                f"host={f['host'].encode().hex()} token={f['token_hex']}"
            )
        elif t == "REQUEST":
            lines.append(f"REQUEST id={f['request_id']}")
        elif t == "END":
            lines.append(f"END id={f['request_id']} count={f['count']} dropped={f['dropped']}")
        else:
            lines.append(f"RECORDS n={len(f['records'])}")
            for r in f["records"]:
                if "skipped_type" in r:
                    lines.append(f"SKIPPED type={r['skipped_type']} len={r['body_len']}")
                else:
                    rtype = 1 if r["kind"] == "created" else 2
                    lines.append(
                        f"PROCESS type={rtype} pid={r['pid']} size={r['image_size']} "
                        f"sha={r['sha256']} path={path_bytes(r).hex()}"
                    )
    if meaning["error"]:
        lines.append(f"ERROR {meaning['error']}")
    else:
        lines.append("REENCODE " + ("ok" if meaning["canonical"] else "differs"))
    return lines


@pytest.fixture(scope="module")
def c_vector_tool(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip(
            "no host C compiler (cc/gcc/clang); install build-essential to run the C side of the golden vectors"
        )
    out = tmp_path_factory.mktemp("cvectors") / "test_vectors"
    cmd = [
        cc,
        "-std=c99",
        "-O1",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-o",
        str(out),
        str(PROTO_DIR / "test_vectors.c"),
        str(PROTO_DIR / "hil_proto.c"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 and "sanitize" in proc.stderr:
        cmd = [c for c in cmd if "sanitize" not in c]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"C build failed:\n{' '.join(cmd)}\n{proc.stderr}"
    return out


def test_c_decoder_all_vectors(c_vector_tool):
    failures = []
    for name in VECTORS:
        _, meaning = load(name)
        proc = subprocess.run(
            [str(c_vector_tool), str(VECTOR_DIR / f"{name}.bin")], capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            failures.append(f"{name}: exit {proc.returncode}\n{proc.stderr}")
            continue
        got = proc.stdout.splitlines()
        want = expected_c_lines(meaning)
        if got != want:
            diff = [f"  got:  {g}\n  want: {w}" for g, w in zip(got, want, strict=False) if g != w][:3]
            failures.append(f"{name}: {len(got)} lines vs {len(want)} expected\n" + "\n".join(diff))
    assert not failures, "C codec disagrees with golden vectors:\n" + "\n".join(failures)
