"""Copies of a libvirt save image under another identity, and leases on them (no libvirt)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from hil.provision import save_image
from hil.provision.snapshot_cache import SnapshotCache, base_name

NAME, UUID = "hil-snap-0123456789ab-00", "eabfa13a-ae3d-4586-bb39-fb5e50f94048"


def fake_save(path, name=NAME, uuid=UUID, stream=b"QEVM" + bytes(range(256)) * 4000, magic=save_image.MAGIC):
    """A file laid out the way libvirt writes one: header, padded XML and cookie, the stream."""
    xml = f"<domain type='qemu'>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n</domain>\n".encode() + b"\0"
    cookie = b"<qemu-migration/>\0"
    data = (xml + cookie).ljust(len(xml) + len(cookie) + 1000, b"\0")
    header = save_image.HEADER.pack(magic, 2, len(data), 1, 0, len(xml))
    path.write_bytes(header + data + stream)
    return stream


def test_a_copy_differs_only_in_name_and_uuid(tmp_path):
    src, dst = tmp_path / "save.00", tmp_path / "save.07"
    stream = fake_save(src)
    save_image.copy_with_identity(src, dst, NAME[:-2] + "07", "11111111-2222-3333-4444-555555555555")
    assert save_image.identity(dst) == (NAME[:-2] + "07", "11111111-2222-3333-4444-555555555555")
    assert save_image.identity(src) == (NAME, UUID)  # the original is untouched
    a, b = src.read_bytes(), dst.read_bytes()
    assert len(a) == len(b) and b.endswith(stream)
    assert sum(x != y for x, y in zip(a, b, strict=True)) <= 2 + 36  # two name digits, one uuid
    assert not list(tmp_path.glob(".*.tmp"))


def test_what_is_not_a_save_image_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad"
    fake_save(bad, magic=b"SomethingElse!!!")
    with pytest.raises(save_image.SaveImageError, match="not a libvirt QEMU save image"):
        save_image.identity(bad)
    fake_save(tmp_path / "ok")
    with pytest.raises(ValueError, match="as long as"):
        save_image.copy_with_identity(tmp_path / "ok", tmp_path / "x", "short", UUID)


def snapshot_entry(tmp_path):
    cache = SnapshotCache(tmp_path / "cache")
    key = "0123456789abcdef"
    d = cache.prepare(key)
    fake_save(d / "save.00", name=base_name(key))
    (d / "disk.qcow2").write_bytes(b"")
    return cache, cache.store(key, "<domain/>")


def test_each_live_copy_holds_its_own_variant_until_released(tmp_path):
    cache, snap = snapshot_entry(tmp_path)
    a, b = cache.lease(snap), cache.lease(snap)
    assert (a.index, b.index) == (0, 1) and a.uuid != b.uuid and a.name != b.name
    assert save_image.identity(b.save_file) == (b.name, b.uuid)  # made on first use
    a.release()
    c = cache.lease(snap)
    assert c.index == 0  # a released variant is free again
    assert cache.lease(snap, skip={2}).index == 3


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hil.provision.snapshot_cache import SnapshotCache
    cache = SnapshotCache(Path(sys.argv[1]))
    lease = cache.lease(cache.load(sys.argv[2]))
    print(lease.index, flush=True)
    time.sleep(600)
""")


def test_a_variant_held_by_another_process_is_skipped_and_freed_when_it_dies(tmp_path):
    cache, snap = snapshot_entry(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cache.root), snap.key], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "0"
        mine = cache.lease(snap)
        assert mine.index == 1
    finally:
        proc.kill()
        proc.wait()
    assert cache.lease(snap).index == 0  # the kernel dropped the dead holder's lock
    assert os.path.exists(snap.dir / "v00.lease")
