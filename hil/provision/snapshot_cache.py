"""Ready-guest snapshots that outlive the session, shared by sessions and xdist workers.

A snapshot is a ready Linux guest's saved memory and its frozen disk.  It is kept under the
cache, keyed by everything that changes what a restore gives (image, kernel, guest spec,
domain XML, libvirt and QEMU versions, the settle steps), so a developer's first test of the
day pays one cold boot and every later session starts from a restore.  A changed input is a
new key; old entries are never reused.

Concurrency: an entry is created under an exclusive ``flock`` on ``<key>.lock`` (a second
session waits for the first one's cold boot instead of booting too).  Live copies: libvirt
insists a restored domain keeps the saved name and UUID, and two live domains cannot share
either, so each live copy restores from a *variant* of the save image with its own identity
(:func:`hil.provision.save_image.copy_with_identity`, made once and kept).  A guest holds its
variant with a non-blocking ``flock`` on ``v<N>.lease`` for as long as it lives; the kernel
drops the lock when the holder dies, so a killed worker never leaks a variant.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hil.paths import cache_root
from hil.provision import save_image

FORMAT = 1  # bump when the layout of an entry changes
MAX_VARIANTS = 100  # names end in a two-digit index: "-00" .. "-99"


def snapshot_key(inputs: dict[str, object]) -> str:
    """A short stable hash of everything that changes what a restore gives."""
    blob = json.dumps({"format": FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_name(key: str) -> str:
    """The saved domain's name; variants differ only in the last two digits."""
    return f"hil-snap-{key[:12]}-00"


@dataclass(frozen=True)
class Snapshot:
    """key; dir: the entry; name/uuid: variant 0's identity; save_file: variant 0;
    disk: the frozen disk every copy's overlay sits on; xml: the saved domain XML."""

    key: str
    dir: Path
    name: str
    save_file: Path
    disk: Path
    xml: str


class Lease:
    """One variant of a snapshot, held by one live guest until :meth:`release`."""

    def __init__(self, index: int, save_file: Path, name: str, uuid: str, fh: IO[bytes]):
        self.index, self.save_file, self.name, self.uuid = index, save_file, name, uuid
        self._fh: IO[bytes] | None = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops its flock
            self._fh = None

    def __repr__(self) -> str:
        return f"<Lease {self.name} {'held' if self._fh else 'released'}>"


class SnapshotCache:
    def __init__(self, root: Path | None = None):
        self.root = root or cache_root() / "snapshots"

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Exclusive use of ``key``'s entry (creating it, adding a variant)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self, key: str) -> Snapshot | None:
        """The complete entry for ``key``, or None (call under :meth:`locked`)."""
        d = self.entry_dir(key)
        try:
            meta = json.loads((d / "snapshot.json").read_text())
        except (OSError, ValueError):
            return None
        snap = Snapshot(key, d, meta["name"], d / "save.00", d / "disk.qcow2", meta["xml"])
        return snap if snap.save_file.is_file() and snap.disk.is_file() else None

    def store(self, key: str, xml: str) -> Snapshot:
        """Record the entry whose ``save.00`` and ``disk.qcow2`` were just written (last, so
        an interrupted creation is never mistaken for a snapshot)."""
        d = self.entry_dir(key)
        (d / "snapshot.json").write_text(json.dumps({"name": base_name(key), "xml": xml}))
        snap = self.load(key)
        assert snap is not None
        return snap

    def prepare(self, key: str) -> Path:
        """An empty entry folder to create ``key`` in (call under :meth:`locked`)."""
        self._remove_entry(key)
        d = self.entry_dir(key)
        d.mkdir(parents=True)
        return d

    def drop(self, key: str) -> None:
        """Forget ``key`` (a restore from it failed: it is rebuilt next time)."""
        with self.locked(key):
            self._remove_entry(key)

    def _remove_entry(self, key: str) -> None:
        """Delete everything of ``key``'s entry (call under :meth:`locked`)."""
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

    def lease(self, snap: Snapshot, skip: set[int] | frozenset[int] = frozenset()) -> Lease:
        """The first variant nobody holds (made on first use), held until released."""
        for index in range(MAX_VARIANTS):
            if index in skip:
                continue
            fh = open(snap.dir / f"v{index:02d}.lease", "ab")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                save_file, name, ident = self._variant(snap, index)
            except BaseException:
                fh.close()
                raise
            return Lease(index, save_file, name, ident, fh)
        raise save_image.SaveImageError(
            f"all {MAX_VARIANTS} copies of snapshot {snap.key} are in use", "end other sessions, or `hil sweep`"
        )

    def _variant(self, snap: Snapshot, index: int) -> tuple[Path, str, str]:
        name0, uuid0 = self._identity(snap)
        if index == 0:
            return snap.save_file, name0, uuid0
        name = f"{name0[:-2]}{index:02d}"
        ident = str(uuid.uuid5(uuid.NAMESPACE_URL, f"kernel-hil/snapshot/{snap.key}/{index}"))
        path = self._variant_path(snap, index)
        if not self._has_variant(path):
            with self.locked(snap.key):
                if not self._has_variant(path):
                    self._make_variant(snap, path, name, ident)
        return path, name, ident

    # --- where an entry's files are: here, this machine's cache (see hil.hosts.remote_snapshots)
    def _identity(self, snap: Snapshot) -> tuple[str, str]:
        return save_image.identity(snap.save_file)

    def _variant_path(self, snap: Snapshot, index: int) -> Path:
        return snap.dir / f"save.{index:02d}"

    def _has_variant(self, path: Path) -> bool:
        return path.is_file()

    def _make_variant(self, snap: Snapshot, path: Path, name: str, ident: str) -> None:
        save_image.copy_with_identity(snap.save_file, path, name, ident)

    def disk_file(self, key: str) -> Path:
        """Where the frozen disk of ``key``'s entry goes (on the guests' host)."""
        return self.entry_dir(key) / "disk.qcow2"

    def save_file(self, key: str) -> Path:
        """Where ``key``'s first save image goes (on the guests' host)."""
        return self.entry_dir(key) / "save.00"

    def prune(self, keep: str) -> list[str]:
        """Remove every entry but ``keep`` that no live guest holds (old inputs, old format)."""
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for d in self.root.iterdir():
            if not d.is_dir() or d.name == keep:
                continue
            try:
                with open(self.root / f"{d.name}.lock", "ab") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if _any_lease_held(d):
                        continue
                    self._remove_entry(d.name)
                    removed.append(d.name)
            except BlockingIOError:
                continue  # being created or extended right now
        return removed  # lock files stay: unlinking one another process holds would split the lock


def _any_lease_held(d: Path) -> bool:
    for lease in d.glob("v*.lease"):
        with open(lease, "ab") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    return False
