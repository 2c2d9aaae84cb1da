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


def _read_header(f) -> tuple[int, int]:
    raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise SaveImageError(f"{f.name} is too short to be a libvirt save image")
    magic, version, data_len, _running, compressed, _cookie = HEADER.unpack(raw)
    if magic != MAGIC:
        raise SaveImageError(f"{f.name} is not a libvirt QEMU save image (magic {magic!r})")
    if version not in KNOWN_VERSIONS or compressed:
        raise SaveImageError(
            f"{f.name}: libvirt save image version {version} (compressed={compressed}) is not supported",
            f"delete {Path(f.name).parent} and let the snapshot be rebuilt",
        )
    return version, data_len


def identity(path: Path) -> tuple[str, str]:
    """The (name, uuid) of the domain saved in ``path``."""
    with open(path, "rb") as f:
        _, data_len = _read_header(f)
        xml = f.read(data_len).split(b"\0", 1)[0].decode()
    name, uuid = re.search(r"<name>([^<]+)</name>", xml), re.search(r"<uuid>([^<]+)</uuid>", xml)
    if name is None or uuid is None:
        raise SaveImageError(f"{path}: the saved domain XML has no name or uuid")
    return name.group(1), uuid.group(1)


def copy_with_identity(src: Path, dst: Path, name: str, uuid: str) -> None:
    """Write ``dst``: ``src`` with the saved domain renamed to ``name`` and given ``uuid``
    (each as long as the one it replaces).  Written to a temporary file and renamed, so a
    reader never sees half a copy."""
    old_name, old_uuid = identity(src)
    if len(name) != len(old_name) or len(uuid) != len(old_uuid):
        raise ValueError(f"a copy's name and uuid must be as long as {old_name!r} and {old_uuid!r}")
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        swaps = (
            (f"<name>{old_name}</name>", f"<name>{name}</name>"),
            (f"<uuid>{old_uuid}</uuid>", f"<uuid>{uuid}</uuid>"),
        )
        _write_copy(src, tmp, swaps)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)


def _write_copy(src: Path, tmp: Path, swaps: tuple[tuple[str, str], ...]) -> None:
    """``src`` with each (old, new) text of equal length swapped in its XML header, to ``tmp``."""
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        _, data_len = _read_header(fin)
        fin.seek(0)
        head = bytearray(fin.read(HEADER.size + data_len))
        for old, new in swaps:
            at = head.find(old.encode())
            if at < 0:
                raise SaveImageError(f"{src}: {old} not found in the saved domain XML")
            head[at : at + len(old)] = new.encode()
        fout.write(head)
        fout.flush()
        offset, size = len(head), os.fstat(fin.fileno()).st_size
        while offset < size:  # in-kernel copy at explicit offsets (Python buffers ahead): ~200 MB
            done = os.copy_file_range(fin.fileno(), fout.fileno(), size - offset, offset, offset)
            if done == 0:
                raise SaveImageError(f"{src} shrank while it was copied")
            offset += done
