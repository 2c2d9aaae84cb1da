"""The snapshot cache of a remote host: its entries live on that host, in its storage pool.

Same keys, leases and locks as :class:`~hil.provision.snapshot_cache.SnapshotCache` (the
locks and lease files stay on the controller: only its workers restore from them), but the
frozen disk, the save images and the entry's record are volumes of the host's pool::

    snap-<key>.disk.qcow2   the frozen disk (an overlay on the uploaded image)
    snap-<key>.save.00      the saved guest (virDomainSave wrote it there)
    snap-<key>.save.NN      a variant under another identity: a server-side copy of save.00
                            with a new head (hil.provision.save_image.with_identity), and its
                            ``.ok`` mark once the copy is whole
    snap-<key>.json         the record, written last: an entry without it is not a snapshot

Removing an entry (a new key, a failed restore, a prune) deletes its volumes with the
controller's lease folder; the prune walks only those folders, so entries another controller
made on a shared host are left alone.  A variant costs no transfer: the host copies the save image itself and only the head (a few
KiB: the header and the domain XML) crosses the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hil.paths import cache_root
from hil.provision import save_image
from hil.provision.snapshot_cache import Snapshot, SnapshotCache, base_name


class RemoteSnapshotCache(SnapshotCache):
    def __init__(self, store: Any, uri: str):
        super().__init__(cache_root() / "remote-snapshots" / hashlib.sha256(uri.encode()).hexdigest()[:12])
        self.files = store

    @staticmethod
    def _vol(key: str, what: str) -> str:
        return f"snap-{key}.{what}"

    def disk_file(self, key: str) -> Path:
        return Path(self.files.host_path(self._vol(key, "disk.qcow2")))

    def save_file(self, key: str) -> Path:
        return Path(self.files.host_path(self._vol(key, "save.00")))

    def load(self, key: str) -> Snapshot | None:
        record = self._vol(key, "json")
        if not self.files.exists(record):
            return None
        try:
            meta = json.loads(self.files.get_bytes(record))
        except ValueError:
            return None
        return Snapshot(key, self.entry_dir(key), meta["name"], self.save_file(key), self.disk_file(key), meta["xml"])

    def store(self, key: str, xml: str) -> Snapshot:
        self.files.adopt(self._vol(key, "save.00"))  # virDomainSave wrote it behind the pool's back
        record = json.dumps({"name": base_name(key), "xml": xml}).encode()
        self.files.put_bytes(self._vol(key, "json"), record)
        snap = self.load(key)
        assert snap is not None
        return snap

    def _remove_entry(self, key: str) -> None:
        prefix = f"snap-{key}."
        self.files.delete_matching(lambda name: name.startswith(prefix))
        super()._remove_entry(key)  # the controller's lease folder

    def _identity(self, snap: Snapshot) -> tuple[str, str]:
        return save_image.identity_in(self._head(snap), str(snap.save_file))

    def _head(self, snap: Snapshot) -> bytes:
        name = snap.save_file.name
        first = self.files.get_bytes(name, 0, save_image.HEADER.size)
        return self.files.get_bytes(name, 0, save_image.head_length(first, str(snap.save_file)))

    def _variant_path(self, snap: Snapshot, index: int) -> Path:
        return Path(self.files.host_path(self._vol(snap.key, f"save.{index:02d}")))

    def _has_variant(self, path: Path) -> bool:
        return bool(self.files.exists(f"{path.name}.ok"))  # clone_with_head's mark of a finished copy

    def _make_variant(self, snap: Snapshot, path: Path, name: str, ident: str) -> None:
        head = save_image.with_identity(self._head(snap), name, ident, str(snap.save_file))
        self.files.clone_with_head(snap.save_file.name, path.name, head)
