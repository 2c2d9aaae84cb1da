"""A remote libvirt host's files, reached only through libvirt's storage API (issue 16).

A remote host shares no file system with the controller: the image, kernel and initrd a guest
boots from, its overlay, its save image and its console log all live on the host, in one
``dir`` storage pool (``hil``, ``/var/lib/libvirt/hil``, persistent, autostarted).  Files
cross the network only as libvirt streams (volume upload/download); copies on the host are
server-side (``createXMLFrom``).  :class:`RemoteStore` wraps that, :class:`ConsoleMirror`
follows a console log the host appends to into a local file, so the crash monitor and the
reports read a local file as they do for a local guest.

An upload happens once per content: the volume is named after the file's SHA-256, and a small
``<name>.ok`` volume marks it finished (a volume without its marker is a killed upload: it is
deleted and uploaded again).  The hash of a local file is cached by (path, size, mtime), so a
large image is hashed once, not every session.

Measured against the simulated second host of the tests (tests/hosts/second_host.py, a veth
pair on one machine, libvirt 9.0): uploads ~1.0-1.4 GB/s in 256 KiB stream chunks (larger
chunks were slower), downloads ~500 MB/s, a 512 MiB server-side copy 0.8 s, a round trip of
``vol.info()`` well under a millisecond; a console mirror polling every 0.2 s shows new bytes
about 0.1-0.2 s after the host wrote them.

What libvirt does that one would not guess (libvirt 9.0, dir pool):

- A volume created ``raw`` that receives qcow2 bytes is *probed* when the upload finishes: it
  is reported as qcow2 with the image's virtual size as its capacity.  :meth:`overlay` reads
  the virtual size from the qcow2 header itself rather than rely on that.
- ``createXMLFrom`` into a ``raw`` volume from a volume libvirt sees as qcow2 *converts* it
  (qemu-img convert), not a byte copy: :meth:`clone_with_head` refuses non-raw sources.
- ``pool.refresh`` fails ("has asynchronous jobs running") while a ``createXMLFrom`` runs in
  the pool (another worker's clone): refreshes are retried for a while.
- ``vol.upload(stream, offset, length)`` overwrites those bytes only (no truncation; past the
  end it extends the file); ``vol.info()`` stats the file on every call (a size that grows on
  the host is seen without a pool refresh); a file that appears in the pool directory is not a
  volume until the pool is refreshed.
- After ``conn.close()`` volume objects still answer (they hold the C connection), but a new
  stream fails ("invalid connection pointer in virStreamNew"): a mirror notices either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from hil.errors import HilError
from hil.paths import cache_root, ensure_dir

log = logging.getLogger("hil.hosts")

CHUNK = 256 * 1024  # stream chunk: faster than 1 or 4 MiB over the veth
QCOW2_MAGIC = b"QFI\xfb"
REFRESH_WAIT_S = 60.0  # how long a refresh waits for another worker's server-side copy
MIB = 1024 * 1024
STOP_JOIN_S = 10.0  # a mirror's stop() waits that long for a pull in flight


class RemoteStoreError(HilError):
    """A storage call on a remote host failed; ``code`` is libvirt's error code."""

    def __init__(self, problem: str, fix: str | None = None, code: int | None = None):
        super().__init__(problem, fix)
        self.code = code


def _missing(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL


class RemoteStore:
    """Files of one libvirt host that shares no file system with the controller: a dir storage
    pool on the host, reached only through libvirt's storage API."""

    POOL = "hil"

    def __init__(self, conn: Any, pool_name: str = POOL, target: str = "/var/lib/libvirt/hil"):
        self.conn = conn
        self.uri: str = conn.getURI()
        self.pool_name = pool_name
        with self._calling("set up"):
            self.pool = self._ensure_pool(target)
            self._path: str = ET.fromstring(self.pool.XMLDesc(0)).findtext("target/path") or target

    def __repr__(self) -> str:
        return f"<RemoteStore {self.uri} pool {self.pool_name}>"

    # --- errors and the pool ------------------------------------------------------------------
    @contextlib.contextmanager
    def _calling(self, what: str, name: str | None = None) -> Iterator[None]:
        """Turn a libvirt error into one line naming the host, the pool, the volume and a fix."""
        try:
            yield
        except libvirt.libvirtError as exc:
            where = f"storage pool {self.pool_name!r}"
            if name is not None:
                where = f"volume {name!r} of {where}"
            raise RemoteStoreError(
                f"{self.uri}: cannot {what} {where}: {exc.get_error_message()}",
                f"check libvirtd on that host and its pool: `virsh -c {self.uri} pool-info {self.pool_name}`",
                exc.get_error_code(),
            ) from exc

    def _ensure_pool(self, target: str) -> Any:
        """The pool, defined (persistent, autostarted), built and started if need be.  Another
        process may do the same at once: "already exists"/"already active" are fine."""
        try:
            pool = self.conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise
            xml = f"<pool type='dir'><name>{self.pool_name}</name><target><path>{target}</path></target></pool>"
            try:
                pool = self.conn.storagePoolDefineXML(xml, 0)
            except libvirt.libvirtError as define_error:
                try:  # defined by another process meanwhile ("already exists")
                    pool = self.conn.storagePoolLookupByName(self.pool_name)
                except libvirt.libvirtError:
                    raise define_error from None
            else:
                pool.setAutostart(1)
        if not pool.isActive():
            try:
                pool.create(libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)  # mkdir -p, then start
            except libvirt.libvirtError:
                if not pool.isActive():  # not just started by another process
                    raise
        return pool

    def _refresh(self) -> None:
        """Rescan the pool's folder; while a server-side copy runs in the pool libvirt refuses
        ("has asynchronous jobs running"): wait for it."""
        deadline = time.monotonic() + REFRESH_WAIT_S
        while True:
            try:
                self.pool.refresh(0)
                return
            except libvirt.libvirtError as exc:
                if "asynchronous jobs" not in (exc.get_error_message() or "") or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def _vol(self, name: str) -> Any:
        """The volume ``name``, refreshing the pool once if libvirt does not know it (yet)."""
        try:
            return self.pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if not _missing(exc):
                raise
        self._refresh()
        return self.pool.storageVolLookupByName(name)

    def check_open(self) -> None:
        """Raise unless the connection is open (closed by us, or broken and noticed: a local
        check, no call to the host)."""
        try:
            alive = self.conn.isAlive()
        except libvirt.libvirtError:  # closed by us: the binding has no connection pointer left
            alive = False
        if not alive:
            raise RemoteStoreError(
                f"{self.uri}: the connection to the host is closed", "the guests of that host are lost"
            )

    # --- names and paths ----------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The pool's folder on the host."""
        return self._path

    def host_path(self, name: str) -> str:
        return f"{self._path}/{name}"

    def exists(self, name: str) -> bool:
        with self._calling("look up", name):
            try:
                self._vol(name)
                return True
            except libvirt.libvirtError as exc:
                if _missing(exc):
                    return False
                raise

    def names(self) -> list[str]:
        with self._calling("list the volumes of"):
            self._refresh()
            return sorted(self.pool.listVolumes())

    def size(self, name: str) -> int:
        """The volume's size now (``vol.info()`` stats the file on every call)."""
        with self._calling("get the size of", name):
            return int(self._vol(name).info()[1])

    # --- small files --------------------------------------------------------------------------
    def _create(self, name: str, capacity: int, fmt: str = "raw", extra: str = "", mode: str = "0644") -> Any:
        """A new volume ``name`` (an old one of that name is deleted first)."""
        self.delete(name)
        return self.pool.createXML(
            f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
            f"<target><format type='{fmt}'/><permissions><mode>{mode}</mode></permissions></target>"
            f"{extra}</volume>",
            0,
        )

    def put_bytes(self, name: str, data: bytes) -> str:
        with self._calling("write", name):
            vol = self._create(name, len(data))
            if data:
                self._send(vol, 0, len(data), functools.partial(io.BytesIO(data).read, CHUNK))
        return self.host_path(name)

    def get_bytes(self, name: str, offset: int = 0, length: int = 0) -> bytes:
        """Bytes of a volume from ``offset``: ``length`` of them, or to the end when 0."""
        with self._calling("read", name):
            return self._download(self._vol(name), offset, length)

    def _download(self, vol: Any, offset: int, length: int) -> bytes:
        stream = self.conn.newStream(0)
        out = bytearray()
        try:
            vol.download(stream, offset, length, 0)
            while chunk := stream.recv(CHUNK):
                if isinstance(chunk, int):  # -2: only on non-blocking streams
                    raise libvirt.libvirtError(f"stream.recv returned {chunk}")
                out += chunk
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
        return bytes(out)

    def _send(self, vol: Any, offset: int, length: int, read: Callable[[], bytes]) -> None:
        """Write ``length`` bytes at ``offset`` of ``vol``; ``read()`` gives the next chunk.
        Only those bytes change: the rest of the volume stays (checked by the tests)."""
        stream = self.conn.newStream(0)
        try:
            vol.upload(stream, offset, length, 0)
            sent = 0
            while sent < length:
                data = read()
                if not data:
                    raise HilError(f"{self.uri}: the source of {vol.name()} ended after {sent} of {length} bytes")
                stream.send(data)
                sent += len(data)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise

    # --- uploads ------------------------------------------------------------------------------
    def upload_file(self, local: Path, kind: str, suffix: str = "", progress: Any = None) -> str:
        """``local`` on the host, uploaded once per content as ``{kind}-{sha256[:16]}{suffix}``;
        its host path.  Two workers of one controller uploading the same content: the second
        waits for the first (a local ``flock``) and then finds it done."""
        digest = content_hash(local)
        name = f"{kind}-{digest[:16]}{suffix}"
        lock_key = hashlib.sha256(f"{self.uri}\0{self.pool_name}\0{name}".encode()).hexdigest()[:32]
        lock_path = ensure_dir(cache_root() / "remote-uploads") / f"{lock_key}.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.exists(name + ".ok") and self.exists(name):
                log.debug("%s: %s is on the host already (%s)", self.uri, local, name)
                return self.host_path(name)
            self._upload(local, name, digest, progress)
        return self.host_path(name)

    def _upload(self, local: Path, name: str, digest: str, progress: Any) -> None:
        self.delete(name + ".ok")
        total = local.stat().st_size
        total_mib = total / MIB
        t0 = time.monotonic()
        with self._calling("upload", name), open(local, "rb") as src:
            vol = self._create(name, total)  # a leftover half upload goes first
            done = 0
            shown = -1

            def read() -> bytes:
                nonlocal done, shown
                data = src.read(CHUNK)
                done += len(data)
                if progress is not None and int(done / MIB) != shown:
                    shown = int(done / MIB)
                    progress.update("upload", f"{name} {shown}/{total_mib:.0f} MiB")
                return data

            try:
                self._send(vol, 0, total, read)
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
                raise
        self.put_bytes(name + ".ok", f"{digest} {total}\n".encode())
        seconds = time.monotonic() - t0
        log.info(
            "%s: uploaded %s as %s: %.1f MiB in %.2f s (%.0f MiB/s)",
            self.uri,
            local,
            name,
            total_mib,
            seconds,
            total_mib / max(seconds, 1e-6),
        )

    # --- volumes made on the host -------------------------------------------------------------
    def overlay(self, backing: str, name: str) -> str:
        """A new qcow2 volume ``name`` backed by the qcow2 file at host path ``backing``."""
        with self._calling(f"create a qcow2 overlay on {backing} as", name):
            back = self.conn.storageVolLookupByPath(backing)
            header = self._download(back, 0, 32)
            if header[:4] != QCOW2_MAGIC:
                raise RemoteStoreError(
                    f"{self.uri}: {backing} is not a qcow2 image (it starts {header[:4]!r}): no overlay {name!r} on it",
                    "upload a qcow2 image as the backing file",
                )
            virtual_size = int.from_bytes(header[24:32], "big")
            self._create(
                name,
                virtual_size,
                "qcow2",
                f"<backingStore><path>{backing}</path><format type='qcow2'/></backingStore>",
                mode="0600",
            )
        return self.host_path(name)

    def empty_file(self, name: str) -> str:
        """An empty raw volume (a console log virtlogd will write); an old one is replaced."""
        with self._calling("create", name):
            self._create(name, 0)
        return self.host_path(name)

    def adopt(self, name: str) -> None:
        """Make a file that appeared in the pool's folder (virDomainSave wrote it) a volume."""
        with self._calling("adopt", name):
            self._refresh()
            self.pool.storageVolLookupByName(name)

    def clone_with_head(self, src: str, dst: str, head: bytes) -> str:
        """``dst``: a copy of volume ``src`` made on the host (nothing crosses the network but
        ``head``), with its first ``len(head)`` bytes replaced by ``head``.  When it is complete
        a ``{dst}.ok`` marker exists (as for uploads): a copy without one is a killed clone."""
        with self._calling(f"clone {src!r} as", dst):
            source = self._vol(src)
            fmt = ET.fromstring(source.XMLDesc(0)).find("target/format")
            if fmt is not None and fmt.get("type") != "raw":
                # libvirt would convert it (qemu-img convert), not copy its bytes
                raise RemoteStoreError(
                    f"{self.uri}: volume {src!r} is {fmt.get('type')} to libvirt: a clone would be converted, not copied",
                    "clone only raw files (save images)",
                )
            self.delete(dst + ".ok")
            self.delete(dst)
            clone = self.pool.createXMLFrom(
                f"<volume><name>{dst}</name><capacity unit='bytes'>0</capacity>"
                "<target><format type='raw'/><permissions><mode>0600</mode></permissions></target></volume>",
                source,
                0,
            )
            self._send(clone, 0, len(head), functools.partial(io.BytesIO(head).read, CHUNK))
            self.put_bytes(dst + ".ok", b"")
        return self.host_path(dst)

    # --- removal ------------------------------------------------------------------------------
    def delete(self, name: str) -> None:
        """Delete volume ``name``; a missing one is fine."""
        with self._calling("delete", name):
            try:
                self._vol(name).delete(0)
            except libvirt.libvirtError as exc:
                if not _missing(exc):
                    raise

    def delete_matching(self, pred: Callable[[str], bool]) -> list[str]:
        """Delete every volume whose name satisfies ``pred``; their names."""
        gone = [n for n in self.names() if pred(n)]
        for n in gone:
            self.delete(n)
        return gone

    def mirror(self, name: str, local: Path, interval_s: float = 0.2) -> ConsoleMirror:
        return ConsoleMirror(self, name, local, interval_s)


class ConsoleMirror:
    """Follows a volume the host appends to (a guest's console log) into a local file, so
    everything that reads console logs (crash monitor, reports) works unchanged."""

    def __init__(self, store: RemoteStore, name: str, local: Path, interval_s: float = 0.2):
        self.store = store
        self.name = name
        self.local = local
        self.interval_s = interval_s
        self.mirrored = 0  # bytes of the volume in the local file
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"")

    def __repr__(self) -> str:
        return f"<ConsoleMirror {self.store.uri} {self.name} -> {self.local}>"

    def start(self) -> ConsoleMirror:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"console-mirror-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync()
            except Exception as exc:  # the connection broke (or the local disk failed): stop polling
                self.lost = exc.problem if isinstance(exc, HilError) else f"{type(exc).__name__}: {exc}"
                log.warning("console mirror of %s on %s stops: %s", self.name, self.store.uri, self.lost)
                return

    def sync(self) -> None:
        """Pull what the host appended since the last pull (all of it after a truncation).
        A volume that does not exist (yet) is empty; any other error raises."""
        with self._lock:
            self.store.check_open()
            try:
                size = self.store.size(self.name)
            except RemoteStoreError as exc:
                if exc.code == libvirt.VIR_ERR_NO_STORAGE_VOL:
                    return
                raise
            if size < self.mirrored:  # truncated or recreated: start again
                self.local.write_bytes(b"")
                self.mirrored = 0
            if size > self.mirrored:
                data = self.store.get_bytes(self.name, self.mirrored, size - self.mirrored)
                with open(self.local, "ab") as f:
                    f.write(data)
                self.mirrored += len(data)

    def stop(self) -> None:
        """Stop following, after one last pull (whose errors are ignored: the host may be gone)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is threading.current_thread():
            return  # from inside this mirror's own pull (a close callback libvirt ran there): it ends after it
        if thread is not None:
            thread.join(STOP_JOIN_S)
            if thread.is_alive():  # stuck in a call to a host that does not answer
                log.warning("console mirror of %s on %s: still waiting for the host", self.name, self.store.uri)
                return
        if self.lost is None:
            try:
                self.sync()
            except Exception as exc:
                log.debug("console mirror of %s: last pull failed: %s", self.name, exc)


# --- content hashes ---------------------------------------------------------------------------
def content_hash(local: Path) -> str:
    """SHA-256 of a local file, cached in ``content-hashes.json`` by (path, size, mtime)."""
    st = local.stat()
    key, stamp = str(local.resolve()), [st.st_size, st.st_mtime_ns]
    table_path = cache_root() / "content-hashes.json"
    with _hash_table(table_path) as table:
        hit = table.get(key)
        if hit is not None and hit[:2] == stamp:
            return str(hit[2])
    sha = hashlib.sha256()
    with open(local, "rb") as f:
        while block := f.read(4 * MIB):
            sha.update(block)
    digest = sha.hexdigest()
    with _hash_table(table_path, write=True) as table:
        table[key] = [*stamp, digest]
        for gone in [k for k in table if not os.path.exists(k)]:
            del table[gone]
    return digest


@contextlib.contextmanager
def _hash_table(path: Path, write: bool = False) -> Iterator[dict[str, list[Any]]]:
    """The hash table under an flock (workers of one controller share it)."""
    ensure_dir(path.parent)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        yield table
        if write:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(table, indent=0, sort_keys=True))
            os.replace(tmp, path)
