"""Record types and the process record (drivers/protocol/PROTOCOL.md, section 4).

On the hot path records are kept as their raw wire bytes (a ``bytes`` object per record,
already validated by :func:`hil.protocol.codec.decode_records`); :func:`decode_record` turns one
into a :class:`Record` when a test looks at it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

PROCESS_CREATED = 1
PROCESS_EXITED = 2

KIND_BY_TYPE: dict[int, str] = {PROCESS_CREATED: "created", PROCESS_EXITED: "exited"}
TYPE_BY_KIND: dict[str, int] = {v: k for k, v in KIND_BY_TYPE.items()}

MAX_PATH = 4096
SHA256_LEN = 32
NO_SHA256 = bytes(SHA256_LEN)

#: record header + fixed fields + the path's length: type, body_len, 4, pid, 8, size, 32, sha, n
PROCESS_PREFIX = struct.Struct("<HHHIHQH32sH")
PROCESS_PREFIX_LEN = PROCESS_PREFIX.size  # 56
PROCESS_BODY_FIXED = PROCESS_PREFIX_LEN - 4  # 52: body bytes before the path

assert PROCESS_PREFIX_LEN == 56


@dataclass(frozen=True, slots=True, repr=False)
class Record:
    """One process record as a test sees it.

    ``kind`` is ``"created"`` or ``"exited"``; ``image_path`` is the UTF-8 path as text (invalid
    bytes shown as U+FFFD), ``image_path_bytes`` the raw bytes. ``agent``, ``mono`` (a
    :func:`time.monotonic` value) and ``wall`` (:func:`time.time`) are filled in by the
    collector: when the RECORDS frame holding the record was received, and from whom.
    """

    kind: str
    pid: int
    image_path: str
    image_size: int = 0
    sha256: bytes = NO_SHA256
    image_path_bytes: bytes = field(default=b"", repr=False)
    agent: Any = None
    mono: float | None = field(default=None, repr=False)
    wall: float | None = None

    def __repr__(self) -> str:
        when = ""
        if self.wall is not None:
            import time

            ms = int(self.wall * 1000) % 1000
            when = time.strftime(" at %H:%M:%S", time.gmtime(self.wall)) + f".{ms:03d}Z"
        who = f" from {self.agent.host}" if self.agent is not None else ""
        sha = "0" if self.sha256 == NO_SHA256 else self.sha256.hex()[:16] + "..."
        return (
            f"Record({self.kind} pid={self.pid} image_path={self.image_path!r} "
            f"image_size={self.image_size} sha256={sha}{who}{when})"
        )

    @property
    def host(self) -> str | None:
        return getattr(self.agent, "host", None)

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()

    def to_json(self) -> dict[str, Any]:
        """The record's wire meaning as the golden vectors' JSON spells it."""
        return {
            "kind": self.kind,
            "pid": self.pid,
            "image_size": self.image_size,
            "sha256": self.sha256.hex(),
            "image_path_hex": self.image_path_bytes.hex(),
        }


def encode_process_record(
    kind: str | int,
    pid: int,
    image_path: str | bytes,
    image_size: int = 0,
    sha256: bytes = NO_SHA256,
    extra: bytes = b"",
) -> bytes:
    """Encode one process record (``kind`` = "created"/"exited" or the record type number).

    ``extra`` is appended after the path as future fields (for compatibility tests).
    """
    rtype = TYPE_BY_KIND[kind] if isinstance(kind, str) else int(kind)
    path = image_path.encode("utf-8") if isinstance(image_path, str) else bytes(image_path)
    if len(path) > MAX_PATH:
        raise ValueError(f"image path is {len(path)} bytes; the protocol allows {MAX_PATH}")
    if len(sha256) != SHA256_LEN:
        raise ValueError(f"sha256 must be {SHA256_LEN} raw bytes, got {len(sha256)}")
    body_len = PROCESS_BODY_FIXED + len(path) + len(extra)
    if body_len > 0xFFFF:
        raise ValueError("record body too long")
    return PROCESS_PREFIX.pack(rtype, body_len, 4, pid, 8, image_size, 32, sha256, len(path)) + path + extra


def encode_raw_record(rtype: int, body: bytes) -> bytes:
    """Encode a record of any type from its body (used for unknown-type tests)."""
    return struct.pack("<HH", rtype, len(body)) + body


_unpack_prefix = PROCESS_PREFIX.unpack_from


def decode_record(raw: bytes, agent: Any = None, mono: float | None = None, wall: float | None = None) -> Record:
    """Build a :class:`Record` from a validated raw process record."""
    rtype, _blen, _, pid, _, size, _, sha, n = _unpack_prefix(raw, 0)
    path = raw[PROCESS_PREFIX_LEN : PROCESS_PREFIX_LEN + n]
    return Record(
        KIND_BY_TYPE[rtype],
        pid,
        path.decode("utf-8", "replace"),
        size,
        sha,
        path,
        agent,
        mono,
        wall,
    )
