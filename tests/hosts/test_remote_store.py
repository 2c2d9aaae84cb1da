"""A remote host's files through libvirt's storage API (hil/hosts/remote_store.py).

Against the simulated second host (second_host.py): it sees none of this machine's files, so
everything here crosses the veth as libvirt streams.  A test may peek at the host's own files
through ``second_libvirt_host.host_path`` (as virtlogd writes them there), never the store.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from hil.errors import HilError
from hil.hosts.remote_store import RemoteStore, RemoteStoreError, content_hash
from hosts.second_host import _stop, second_host

pytestmark = pytest.mark.hil_linux

POOL, TARGET = "hil-rs-test", "/var/lib/libvirt/hil-rs-test"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Content hashes and upload locks in the test's own cache, not the user's."""
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def store(second_conn):
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors as exceptions only, not on stderr
    s = RemoteStore(second_conn, POOL, TARGET)
    yield s
    for vol in s.pool.listAllVolumes():
        vol.delete(0)
    s.pool.destroy()
    s.pool.undefine()


def _qcow2(path: Path, size: str = "64M", prealloc: str = "off") -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"preallocation={prealloc}", str(path), size], check=True
    )
    return path


def _uploads(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and ": uploaded " in r.getMessage()]


class Steps:
    """A stand-in for hil.steps.Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def update(self, phase: str, detail: str = "") -> None:
        self.lines.append((phase, detail))


def test_the_pool_is_defined_built_started_and_kept(record_property):
    """On a fresh host: a persistent, autostarted dir pool ``hil`` on /var/lib/libvirt/hil; an
    inactive one is started; two processes setting it up at once both get it."""
    with second_host() as host:
        conn = libvirt.open(host.uri)
        try:
            assert not host.host_path("/var/lib/libvirt/hil").exists()
            t0 = time.monotonic()
            store = RemoteStore(conn)
            record_property("pool_setup_s", f"{time.monotonic() - t0:.3f}")
            assert store.path == "/var/lib/libvirt/hil" and store.host_path("x") == "/var/lib/libvirt/hil/x"
            assert store.pool.name() == "hil" and store.pool.isPersistent() and store.pool.autostart()
            assert host.host_path("/var/lib/libvirt/hil").is_dir()
            store.pool.destroy()
            assert RemoteStore(conn).pool.isActive()  # inactive: started again
            store.pool.destroy()
            store.pool.undefine()
            conns = [libvirt.open(host.uri) for _ in range(4)]
            stores: list[RemoteStore] = []
            threads = [threading.Thread(target=lambda c=c: stores.append(RemoteStore(c))) for c in conns]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(stores) == 4 and all(s.pool.isActive() for s in stores)
            assert len({s.pool.UUIDString() for s in stores}) == 1
            for c in conns:
                c.close()
        finally:
            conn.close()


def test_a_file_is_uploaded_once_per_content(store, second_libvirt_host, tmp_path, caplog, record_property):
    caplog.set_level(logging.DEBUG, logger="hil.hosts")
    image = _qcow2(tmp_path / "base.qcow2", "32M", prealloc="full")
    size_mib = image.stat().st_size / 2**20
    steps = Steps()
    t0 = time.monotonic()
    path = store.upload_file(image, "disk", ".qcow2", progress=steps)
    first = time.monotonic() - t0
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    name = f"disk-{digest[:16]}.qcow2"
    assert path == f"{TARGET}/{name}"
    assert second_libvirt_host.host_path(path).read_bytes() == image.read_bytes()
    assert store.get_bytes(name + ".ok") == f"{digest} {image.stat().st_size}\n".encode()
    assert steps.lines[-1] == ("upload", f"{name} {int(size_mib)}/{size_mib:.0f} MiB")
    assert len(_uploads(caplog)) == 1 and "MiB/s" in _uploads(caplog)[0]
    mtime = second_libvirt_host.host_path(path).stat().st_mtime_ns

    t1 = time.monotonic()
    assert store.upload_file(image, "disk", ".qcow2") == path
    second = time.monotonic() - t1
    assert len(_uploads(caplog)) == 1  # nothing more went up
    assert second_libvirt_host.host_path(path).stat().st_mtime_ns == mtime
    assert any("on the host already" in r.getMessage() for r in caplog.records)
    record_property("upload_first_s", f"{first:.3f}")
    record_property("upload_first_mib_s", f"{size_mib / first:.0f}")
    record_property("upload_again_s", f"{second:.4f}")
    assert second < first


def test_the_content_hash_is_cached_by_path_size_and_mtime(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"a" * 4096)
    digest = content_hash(f)
    assert digest == hashlib.sha256(b"a" * 4096).hexdigest()
    st = f.stat()
    f.write_bytes(b"b" * 4096)  # same size, mtime put back: the cached hash answers, no re-read
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert content_hash(f) == digest
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a new mtime: hashed again
    assert content_hash(f) == hashlib.sha256(b"b" * 4096).hexdigest()


def test_an_unfinished_upload_is_done_again(store, second_libvirt_host, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hil.hosts")
    image = _qcow2(tmp_path / "half.qcow2", "16M", prealloc="full")
    data = image.read_bytes()
    name = f"half-{content_hash(image)[:16]}"
    # a killed upload: half the bytes and no marker
    store.put_bytes(name, data[: len(data) // 2])
    path = store.upload_file(image, "half")
    assert second_libvirt_host.host_path(path).read_bytes() == data
    assert store.exists(name + ".ok")
    # an upload that fails on the way leaves neither volume nor marker
    store.delete(name + ".ok")

    class Broken(Steps):
        def update(self, phase: str, detail: str = "") -> None:
            if detail.startswith(f"{name} 8/"):
                raise OSError("the controller went away")

    with pytest.raises(OSError):
        store.upload_file(image, "half", progress=Broken())
    assert not store.exists(name) and not store.exists(name + ".ok")
    # a marker whose volume is gone
    store.upload_file(image, "half")
    store.delete(name)
    assert store.upload_file(image, "half") == path
    assert second_libvirt_host.host_path(path).read_bytes() == data
    assert len(_uploads(caplog)) == 3


def test_two_workers_uploading_the_same_content_upload_it_once(store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hil.hosts")
    image = _qcow2(tmp_path / "shared.qcow2", "16M", prealloc="full")
    paths: list[str] = []
    threads = [threading.Thread(target=lambda: paths.append(store.upload_file(image, "shared"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 3 and len(set(paths)) == 1
    assert len(_uploads(caplog)) == 1


def test_an_overlay_is_a_qcow2_on_its_backing(store, second_libvirt_host, tmp_path):
    backing = store.upload_file(_qcow2(tmp_path / "b.qcow2", "96M"), "ovbase", ".qcow2")
    # libvirt probed the raw upload: it calls it qcow2 with the virtual size (the header says the same)
    back = ET.fromstring(store._vol(Path(backing).name).XMLDesc(0))
    assert back.find("target/format").get("type") == "qcow2"
    assert back.findtext("capacity") == str(96 << 20)
    path = store.overlay(backing, "guest-1.qcow2")
    assert path == f"{TARGET}/guest-1.qcow2"
    xml = ET.fromstring(store._vol("guest-1.qcow2").XMLDesc(0))
    assert xml.find("target/format").get("type") == "qcow2"
    assert xml.findtext("backingStore/path") == backing
    assert xml.find("backingStore/format").get("type") == "qcow2"
    assert xml.findtext("capacity") == str(96 << 20)
    head = second_libvirt_host.host_path(path).read_bytes()[:4]
    assert head == b"QFI\xfb"
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(second_libvirt_host.host_path(path))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'"backing-filename": "{backing}"' in info and '"virtual-size": 100663296' in info
    # again: replaced
    assert store.overlay(backing, "guest-1.qcow2") == path
    store.put_bytes("not-qcow2", b"x" * 64)
    with pytest.raises(RemoteStoreError, match="not a qcow2 image"):
        store.overlay(store.host_path("not-qcow2"), "guest-2.qcow2")


def test_bytes_round_trip(store):
    data = os.urandom(700_000)
    assert store.put_bytes("blob", data) == f"{TARGET}/blob"
    assert store.get_bytes("blob") == data
    assert store.get_bytes("blob", 12345) == data[12345:]
    assert store.get_bytes("blob", 300_000, 1000) == data[300_000:301_000]
    assert store.get_bytes("blob", len(data)) == b""
    assert store.size("blob") == len(data)
    store.put_bytes("blob", b"short")  # replaced, not overwritten in place
    assert store.get_bytes("blob") == b"short"
    store.put_bytes("blob", b"")
    assert store.size("blob") == 0


def test_clone_with_head_copies_on_the_host_and_keeps_the_tail(store, second_libvirt_host, tmp_path):
    data = os.urandom(3 * 2**20 + 17)
    store.put_bytes("save.img", data)
    head = b"H" * 5000
    path = store.clone_with_head("save.img", "save-v1.img", head)
    assert path == f"{TARGET}/save-v1.img"
    assert store.get_bytes("save-v1.img", 0, len(head)) == head
    assert store.get_bytes("save-v1.img", len(head)) == data[len(head) :]
    assert store.size("save-v1.img") == len(data)
    assert store.exists("save-v1.img.ok")
    assert store.get_bytes("save.img") == data  # the source is untouched
    # again over an old one
    store.clone_with_head("save.img", "save-v1.img", b"X" * 10)
    assert store.get_bytes("save-v1.img", 0, 11) == b"X" * 10 + data[10:11]
    # a volume libvirt takes for qcow2 would be converted, not copied: refused
    qcow2 = store.upload_file(_qcow2(tmp_path / "c.qcow2", "8M"), "clonesrc")
    with pytest.raises(RemoteStoreError, match="converted, not copied"):
        store.clone_with_head(Path(qcow2).name, "clone-of-qcow2", b"x")


def test_size_empty_file_adopt_and_names(store, second_libvirt_host):
    store.put_bytes("console.log", b"old boot\n")
    assert store.empty_file("console.log") == f"{TARGET}/console.log"
    assert store.size("console.log") == 0
    with open(second_libvirt_host.host_path(store.host_path("console.log")), "ab") as f:  # as virtlogd would
        f.write(b"x" * 1234)
    assert store.size("console.log") == 1234  # seen without a refresh
    # a file that appears in the pool's folder (virDomainSave wrote it) becomes a volume
    second_libvirt_host.host_path(store.host_path("saved.img")).write_bytes(b"saved")
    assert "saved.img" not in store.pool.listVolumes()
    store.adopt("saved.img")
    assert "saved.img" in store.pool.listVolumes() and store.get_bytes("saved.img") == b"saved"
    assert "saved.img" in store.names()
    with pytest.raises(RemoteStoreError):
        store.adopt("never-written.img")


def test_delete_matching_and_delete(store):
    for n in ("hil-dead-1.qcow2", "hil-dead-1.log", "hil-live-2.qcow2"):
        store.put_bytes(n, b"x")
    assert sorted(store.delete_matching(lambda n: n.startswith("hil-dead-"))) == ["hil-dead-1.log", "hil-dead-1.qcow2"]
    names = store.names()
    assert "hil-live-2.qcow2" in names and not [n for n in names if n.startswith("hil-dead-")]
    store.delete("hil-live-2.qcow2")
    store.delete("hil-live-2.qcow2")  # missing is fine
    assert not store.exists("hil-live-2.qcow2")
    assert store.delete_matching(lambda n: False) == []


def test_errors_name_the_host_the_volume_and_a_fix(store):
    with pytest.raises(HilError) as exc:
        store.get_bytes("no-such-volume")
    text = str(exc.value)
    assert store.uri in text and "'no-such-volume'" in text and POOL in text
    assert exc.value.fix and "virsh -c" in exc.value.fix
    assert isinstance(exc.value, RemoteStoreError) and exc.value.code == libvirt.VIR_ERR_NO_STORAGE_VOL


def _wait_for(pred, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.005)
    return time.monotonic() - t0


def test_the_console_mirror_follows_the_log_and_a_truncation(store, second_libvirt_host, tmp_path, record_property):
    store.empty_file("guest.console.log")
    on_host = second_libvirt_host.host_path(store.host_path("guest.console.log"))
    local = tmp_path / "mirror" / "guest.console.log"
    mirror = store.mirror("guest.console.log", local).start()
    try:
        assert local.read_bytes() == b""
        written = b""
        latencies = []
        for i in range(8):
            line = f"[    {i}.000000] line {i} of the boot\n".encode()
            with open(on_host, "ab") as f:  # as virtlogd appends
                f.write(line)
            written += line
            latencies.append(_wait_for(lambda w=written: local.read_bytes() == w))
        record_property("mirror_latency_median_s", f"{statistics.median(latencies):.3f}")
        record_property("mirror_latency_max_s", f"{max(latencies):.3f}")
        assert max(latencies) < 2.0
        # appended through the storage API too (an upload at the end)
        store._send(store._vol("guest.console.log"), len(written), 4, lambda: b"API\n")
        written += b"API\n"
        _wait_for(lambda: local.read_bytes() == written)
        # truncated and written again (a new boot): the mirror starts over
        on_host.write_bytes(b"new boot\n")
        _wait_for(lambda: local.read_bytes() == b"new boot\n")
        # sync() pulls at once, in the caller's thread
        with open(on_host, "ab") as f:
            f.write(b"now\n")
        mirror.sync()
        assert local.read_bytes() == b"new boot\nnow\n"
        with open(on_host, "ab") as f:
            f.write(b"last words\n")
    finally:
        mirror.stop()
    assert local.read_bytes() == b"new boot\nnow\nlast words\n"  # stop() pulls once more
    mirror.stop()  # idempotent
    assert mirror.lost is None


def test_a_host_lost_inside_the_mirrors_own_pull_stops_it_without_a_deadlock(
    store, second_libvirt_host, tmp_path, monkeypatch
):
    """libvirt runs a connection's close callback on the thread whose call saw the connection
    drop: here the mirror's own pull.  The callback fails the host's guests, which stops their
    mirrors: this one too, from inside its own pull.  (That hung a CI run: the pull held the
    mirror's lock and stop() pulled once more; the worker's teardown then waited on libvirt.)"""
    from hil.config import HostConfig
    from hil.hosts.host import GuestHost

    store.empty_file("dying.console.log")
    second_libvirt_host.host_path(store.host_path("dying.console.log")).write_bytes(b"last\n")
    mirror = store.mirror("dying.console.log", tmp_path / "dying.log", interval_s=0.05)
    host = GuestHost(HostConfig(second_libvirt_host.uri), on_lost=lambda h: mirror.stop())
    dying, lost_on = threading.Event(), []
    real_size = store.size

    def size_then_the_close_callback(name):
        size = real_size(name)
        if name == "dying.console.log" and not dying.is_set():
            dying.set()
            lost_on.append(threading.current_thread())
            host._closed(None, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, None)  # as libvirt calls it, in the call
        return size

    monkeypatch.setattr(store, "size", size_then_the_close_callback)
    mirror.start()
    thread = mirror._thread
    assert thread is not None
    _wait_for(lambda: host.lost is not None)
    thread.join(5)
    assert not thread.is_alive(), "the mirror's thread hangs in its own stop()"
    assert lost_on == [thread] and host.lost == "libvirtd closed the connection"
    mirror.stop()  # and once more from the outside: nothing left to wait for


def test_the_mirror_is_lost_when_the_connection_closes_or_the_host_goes(tmp_path):
    """Closed on our side or broken by the host going away: ``lost`` says why, the thread
    stops, stop() does not raise, and the local file keeps what was mirrored."""
    libvirt.registerErrorHandler(lambda *_: None, None)
    with second_host() as host:
        mirrors = {}
        for how in ("closed", "host-gone"):
            conn = libvirt.open(host.uri)
            store = RemoteStore(conn)
            store.empty_file(f"{how}.log")
            host.host_path(store.host_path(f"{how}.log")).write_bytes(b"before\n")
            mirrors[how] = (conn, store.mirror(f"{how}.log", tmp_path / f"{how}.log", interval_s=0.05).start())
        for _, mirror in mirrors.values():
            _wait_for(lambda m=mirror: m.local.read_bytes() == b"before\n")
        mirrors["closed"][0].close()
        _wait_for(lambda: mirrors["closed"][1].lost is not None)
        assert mirrors["host-gone"][1].lost is None
        _stop(host)
        _wait_for(lambda: mirrors["host-gone"][1].lost is not None)
        for _, mirror in mirrors.values():
            assert host.uri in (mirror.lost or "")
            thread = mirror._thread
            assert thread is not None
            thread.join(2)
            assert not thread.is_alive()
            mirror.stop()
            mirror.stop()
            assert mirror.local.read_bytes() == b"before\n"
