"""libvirt's QEMU save image: the domain XML in its header, and copies under another identity.

A restore must keep the saved domain's name and UUID (libvirt refuses others: "Target domain
uuid ... does not match source"), and two live domains cannot share either.  So several live
copies of one ready guest need several save images that differ only in that identity.  The
image is a fixed header, the domain XML (NUL-terminated, padded: libvirt leaves room for later
XML updates), a migration cookie, then QEMU's migration stream::

    "LibvirtQemudSave" | version | data_len | was_running | compressed | cookie_offset | 14 x u32
    <domain XML>\\0 ... cookie ... (data_len bytes in all) | QEMU migration stream

:func:`copy_with_identity` rewrites only the name and UUID inside that XML, keeping every
length (the names are chosen with equal lengths), so offsets and the stream are untouched.
Version 2 of the header (libvirt 1.x to 10.x) is the one known here; anything else is refused
with a clear error instead of guessed at.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from hil.errors import HilError

MAGIC = b"LibvirtQemudSave"
HEADER = struct.Struct("<16s5I56x")  # magic, version, data_len, was_running, compressed, cookie_offset
KNOWN_VERSIONS = (2,)


class SaveImageError(HilError):
    pass


def _unpack(raw: bytes, where: str) -> tuple[int, int]:
    if len(raw) < HEADER.size:
        raise SaveImageError(f"{where} is too short to be a libvirt save image")
    magic, version, data_len, _running, compressed, _cookie = HEADER.unpack(raw[: HEADER.size])
    if magic != MAGIC:
        raise SaveImageError(f"{where} is not a libvirt QEMU save image (magic {magic!r})")
    if version not in KNOWN_VERSIONS or compressed:
        raise SaveImageError(
            f"{where}: libvirt save image version {version} (compressed={compressed}) is not supported",
            "delete the snapshot from the cache and let it be rebuilt",
        )
    return version, data_len


def identity(path: Path) -> tuple[str, str]:
    """The (name, uuid) of the domain saved in ``path``."""
    with open(path, "rb") as f:
        return identity_in(_read_head(f, str(path)), str(path))


def _read_head(f, where: str) -> bytes:
    first = f.read(HEADER.size)
    return first + f.read(head_length(first, where) - len(first))


def head_length(first: bytes, where: str = "the save image") -> int:
    """How many bytes of a save image hold its header and domain XML, from its first
    ``HEADER.size`` bytes (what :func:`with_identity` needs to see)."""
    _, data_len = _unpack(first, where)
    return HEADER.size + data_len


def identity_in(head: bytes, where: str = "the save image") -> tuple[str, str]:
    """The (name, uuid) of the domain in a save image's head (see :func:`head_length`)."""
    xml = head[HEADER.size :].split(b"\0", 1)[0].decode()
    name, uuid = re.search(r"<name>([^<]+)</name>", xml), re.search(r"<uuid>([^<]+)</uuid>", xml)
    if name is None or uuid is None:
        raise SaveImageError(f"{where}: the saved domain XML has no name or uuid")
    return name.group(1), uuid.group(1)


def with_identity(head: bytes, name: str, uuid: str, where: str = "the save image") -> bytes:
    """A save image's head with the domain renamed to ``name`` and given ``uuid`` (each as
    long as the one it replaces): every length and offset stays, so the rest of the image
    (the migration stream) is reused unchanged -- here, or on a remote host by a server-side copy."""
    old_name, old_uuid = identity_in(head, where)
    if len(name) != len(old_name) or len(uuid) != len(old_uuid):
        raise ValueError(f"a copy's name and uuid must be as long as {old_name!r} and {old_uuid!r}")
    out = bytearray(head)
    for old, new in (
        (f"<name>{old_name}</name>", f"<name>{name}</name>"),
        (f"<uuid>{old_uuid}</uuid>", f"<uuid>{uuid}</uuid>"),
    ):
        at = out.find(old.encode())
        if at < 0:
            raise SaveImageError(f"{where}: {old} not found in the saved domain XML")
        out[at : at + len(old)] = new.encode()
    return bytes(out)


def copy_with_identity(src: Path, dst: Path, name: str, uuid: str) -> None:
    """Write ``dst``: ``src`` with the saved domain renamed to ``name`` and given ``uuid``
    (see :func:`with_identity`).  Written to a temporary file and renamed, so a reader never
    sees half a copy."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        _write_copy(src, tmp, name, uuid)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)


def _write_copy(src: Path, tmp: Path, name: str, uuid: str) -> None:
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        head = _read_head(fin, str(src))
        fout.write(with_identity(head, name, uuid, str(src)))
        fout.flush()
        offset, size = len(head), os.fstat(fin.fileno()).st_size
        while offset < size:  # in-kernel copy at explicit offsets (Python buffers ahead): ~200 MB
            done = os.copy_file_range(fin.fileno(), fout.fileno(), size - offset, offset, offset)
            if done == 0:
                raise SaveImageError(f"{src} shrank while it was copied")
            offset += done
