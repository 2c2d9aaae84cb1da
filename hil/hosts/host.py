"""Where a lab's guests run: one libvirt host, this machine or a remote one.

This machine (``qemu:///system``, the default) shares the controller's files and loopback:
overlays and console logs are files in the lab's runtime folder, the snapshot cache is this
machine's, forwarded ports listen on 127.0.0.1 and a guest reaches the controller at 10.0.2.2
(QEMU user networking's address for the guest's host).

A remote host (``qemu+tcp://``, ``qemu+ssh://``...) shares neither.  Everything a guest needs
there goes through libvirt's own storage API (:class:`~hil.hosts.remote_store.RemoteStore`):
the image, kernel and initrd are uploaded once per content, overlays and snapshots are
volumes made there, and the console log written there is followed into a local mirror, so the
crash monitor and the reports read a local file as they do for a local guest.  Forwarded ports
listen on the host's own address (its 127.0.0.1 is not the controller's), and a guest reaches
the controller at the controller's own address: QEMU user networking connects out from the
host (NAT), so no relay and nothing but libvirtd has to run there.  A server of the controller
that such a guest must reach (the collector) listens on that address.

The connection carries libvirt keepalives; when it closes (libvirtd killed, host down, network
gone) :attr:`GuestHost.lost` says why and the lab's listener marks that host's guests lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.config import HostConfig
from hil.errors import HilError
from hil.hosts.placement import controller_address, host_address
from hil.provision.snapshot_cache import SnapshotCache

log = logging.getLogger("hil.hosts")

LOCAL_URIS = ("qemu:///system", "qemu:///session")
KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT = 2, 3  # a silent host is declared lost after about 8 s


def is_local(uri: str) -> bool:
    return uri in LOCAL_URIS or uri.startswith(("qemu:///", "qemu+unix:///"))


class HostLost(HilError):
    """The libvirt host of this lab's guests went away."""


class GuestHost:
    """One libvirt host as a lab uses it (see the module's docstring)."""

    def __init__(self, config: HostConfig, on_lost: Callable[[GuestHost], None] | None = None):
        self.config = config
        self.uri = config.uri
        self.remote = not is_local(self.uri)
        self.lost: str | None = None
        self._on_lost = on_lost
        self._conn: Any = None
        self._store: Any = None
        self._snapshot_cache: SnapshotCache | None = None
        self._lock = threading.Lock()
        self._lost_lock = threading.Lock()
        if self.remote:
            self.forward_address = _resolve(host_address(self.uri))
            self.controller_address = config.controller_address or controller_address(self.uri)
            self.listen_address = self.controller_address
        else:
            self.forward_address = "127.0.0.1"
            self.controller_address = "10.0.2.2"
            self.listen_address = "127.0.0.1"

    def __repr__(self) -> str:
        return f"<GuestHost {self.uri}{' lost' if self.lost else ''}>"

    # --- connection ---------------------------------------------------------------------------
    @property
    def conn(self) -> Any:
        """The libvirt connection, opened on first use (a lost host raises :class:`HostLost`)."""
        if self.lost is not None:
            raise HostLost(f"libvirt host {self.uri} is lost: {self.lost}", "the run goes on on the other hosts")
        with self._lock:
            if self._conn is None:
                from hil.provision.daemons import open_connection

                conn = open_connection(self.uri)
                if self.remote:
                    conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
                    conn.registerCloseCallback(self._closed, None)
                self._conn = conn
        return self._conn

    def _closed(self, conn: Any, reason: int, opaque: object) -> None:
        import libvirt

        why = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "libvirtd closed the connection",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "no keepalive answer",
        }.get(reason)
        if why is None:
            return  # closed by us
        # libvirt runs this on the thread whose call saw the connection drop (a console mirror's
        # pull, a guest command) and holds the connection until it returns; failing the guests
        # stops their mirrors and calls into libvirt again, so that runs on a thread of its own
        threading.Thread(target=self.mark_lost, args=(why,), name=f"hil-host-lost {self.uri}", daemon=True).start()

    def mark_lost(self, why: str) -> None:
        with self._lost_lock:
            if self.lost is not None:
                return
            self.lost = why
        log.error("libvirt host %s lost (%s): its guests fail, this worker goes on elsewhere", self.uri, why)
        if self._on_lost is not None:
            self._on_lost(self)

    def check_alive(self) -> bool:
        """Is the connection still up?  (A lost one is marked lost.)"""
        if self.lost is not None:
            return False
        if self._conn is None:
            return True
        try:
            if self._conn.isAlive():
                return True
        except Exception:
            pass
        self.mark_lost("the connection is closed")
        return False

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if self.remote:
                    conn.unregisterCloseCallback()
                conn.close()
            except Exception:
                pass

    # --- files --------------------------------------------------------------------------------
    @property
    def store(self) -> Any:
        """The remote host's :class:`~hil.hosts.remote_store.RemoteStore` (remote hosts only)."""
        if not self.remote:
            raise ValueError(f"{self.uri} is this machine: its files are local")
        if self._store is None:
            from hil.hosts.remote_store import RemoteStore

            self._store = RemoteStore(self.conn)
        return self._store

    @property
    def snapshot_cache(self) -> SnapshotCache:
        if self._snapshot_cache is None:
            if self.remote:
                from hil.hosts.remote_snapshots import RemoteSnapshotCache

                self._snapshot_cache = RemoteSnapshotCache(self.store, self.uri)
            else:
                self._snapshot_cache = SnapshotCache()
        return self._snapshot_cache

    def upload(self, local: Path | None, kind: str, suffix: str = "", progress: Any = None) -> Path | None:
        """``local`` as the host sees it: itself here, uploaded once per content there."""
        if local is None or not self.remote:
            return local
        return Path(self.store.upload_file(Path(local), kind, suffix, progress=progress))

    def file(self, name: str, local_dir: Path) -> Path:
        """Where a guest file ``name`` (an overlay, a console log) goes on the host."""
        return Path(self.store.host_path(name)) if self.remote else local_dir / name

    def overlay(self, backing: Path, at: Path) -> Path:
        """A qcow2 overlay at host path ``at`` on the host's ``backing``."""
        if self.remote:
            return Path(self.store.overlay(str(backing), at.name))
        return _local_overlay(backing, at)

    def console(self, name: str, local_dir: Path) -> tuple[Path, Path | None, Any]:
        """(the console log's host path, its local mirror or None, the mirror to start or None)."""
        if not self.remote:
            return local_dir / name, None, None
        local = local_dir / name
        host_path = Path(self.store.empty_file(name))
        return host_path, local, self.store.mirror(name, local)

    def remove(self, path: Path) -> None:
        """Delete a guest file of this host (missing is fine)."""
        if self.remote:
            if self.lost is None:
                self.store.delete(path.name)
        else:
            path.unlink(missing_ok=True)


def remote_accel(conn: Any, requested: str) -> str:
    """:func:`hil.provision.accel.choose_accel` for a remote host, from what its libvirt
    says: KVM for ``auto`` only when the host CPU shows vmx/svm and libvirt offers a kvm
    domain there (``/dev/kvm`` alone proves nothing, see hil.provision.accel)."""
    import libvirt

    if requested == "tcg":
        return "tcg"
    caps = conn.getCapabilities()
    cpu_virt = "name='vmx'" in caps or "name='svm'" in caps
    try:
        conn.getDomainCapabilities(None, "x86_64", "q35", "kvm", 0)
        kvm = cpu_virt
    except libvirt.libvirtError:
        kvm = False
    if requested == "kvm" and not kvm:
        raise HilError(
            f"KVM was requested but the libvirt host {conn.getURI()} does not offer it",
            "use --hil-accel=tcg (or auto) for that host",
        )
    return "kvm" if kvm else "tcg"


def _local_overlay(backing: Path, path: Path) -> Path:
    import subprocess

    from hil.errors import EnvironmentProblem

    try:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(path)],
            check=True,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise EnvironmentProblem("qemu-img is not installed", "apt-get install qemu-utils") from None
    except subprocess.CalledProcessError as exc:
        raise HilError(
            f"cannot create an overlay on {backing}: {exc.stderr.strip()}",
            "check that the image exists and is a qcow2 file",
        ) from None
    return path


def _resolve(name: str) -> str:
    """An IPv4 address for a host name (QEMU's hostfwd wants an address)."""
    import socket

    try:
        return str(socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0])
    except (OSError, IndexError):
        return name
