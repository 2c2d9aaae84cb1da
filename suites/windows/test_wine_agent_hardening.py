"""hilagent (drivers/windows/agent) under hostile conditions, for real under Wine where Wine can
run the code, at build/PE level where only real Windows can:

- the image is hashed through the file object of the notification, not by opening its path
  again later (Wine: through the test build's injection IOCTL, which opens the image and hands
  its file object to the same code that takes PS_CREATE_NOTIFY_INFO.FileObject; the
  process-notify callback itself runs only on real Windows: a PE-level check there);
- a short write to the spill file leaves no torn record behind to swallow later ones (a tiny
  tmpfs under the spill file makes the write short: needs root on the host);
- answering a REQUEST does not hold the spill lock while it sends, so a collector that stops
  reading does not stall the worker;
- a full event queue holds a bounded amount of (non-paged) memory; what does not fit is
  dropped and counted in END.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from hil.collector import Collector
from hil.deploy import pecheck, windows_build
from hil.protocol import codec
from hil.protocol.records import encode_process_record

from . import test_wine_agent as base

# the suite's fixtures and helpers (the agent under qualification, loading it, injecting)
agent = base.agent
injectable_agent = base.injectable_agent
load_agent = base.load_agent
inject = base.inject
stop_agent = base.stop_agent

pytestmark = [pytest.mark.windows, pytest.mark.wine]

NOTEPAD = r"C:\windows\system32\notepad.exe"
FLOOD = r"C:\hil\hilagent_flood.exe"


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _sparse(guest, remote: str, size: int) -> None:
    path = guest.unix_path(remote)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def _saved(guest, pid: int, start: int = 0) -> bool:
    return any(f"saved created pid={pid} " in line.text + " " for line in guest.dbgprint_lines()[start:])


# ---- hashed through the file object ---------------------------------------------------------


def test_image_is_hashed_through_the_notifications_file_object_not_its_path_later(
    wine_guest, injectable_agent, load_agent, collector
):
    ran = b"MZ" + bytes(range(256)) * 64
    other = b"MZ" + bytes(reversed(range(256))) * 64
    wine_guest.write_file(r"C:\hil\ran.exe", ran)
    # 4 x 256 MiB of zeros to hash first: the worker is busy while the path gets a new file
    _sparse(wine_guest, r"C:\hil\big.bin", 256 << 20)
    drv = load_agent(injectable_agent, collector.port)
    collector.wait_for_agent(kind="win-wdm", timeout=20)

    for pid in (9001, 9002, 9004, 9005):
        inject(wine_guest, "created", pid, r"C:\hil\big.bin")
    inject(wine_guest, "created", 9003, r"C:\hil\ran.exe")
    wine_guest.write_file(r"C:\hil\ran.exe", other)  # a new file replaces the old at its path
    assert not _saved(wine_guest, 9003), "the worker hashed too fast for this check"

    rec = collector.wait_for(kind="created", pid=9003, timeout=60)
    assert rec.image_path == "\\??\\C:\\hil\\ran.exe"
    assert (rec.image_size, rec.sha256) == (len(ran), _sha(ran)), (
        "hashed the file now at the path, not the one the notification named"
        if rec.sha256 == _sha(other)
        else f"unexpected record {rec}"
    )
    assert collector.wait_for(kind="created", pid=9001, timeout=60).sha256 == _sha(bytes(256 << 20))
    stop_agent(drv)


def test_release_agent_hashes_through_the_file_object_of_the_notification(win_build):
    """Real Windows only (Wine never calls process-notify routines): in the callback the driver
    takes a kernel handle to PS_CREATE_NOTIFY_INFO.FileObject (ObOpenObjectByPointer on an
    IoFileObjectType object) and the worker hashes through it.  The test build's injection
    IOCTL goes through the same code (ImageHandle()), which the Wine test above runs."""
    for name in ("hilagent.sys", "hilagent_test.sys"):
        imports = pecheck.inspect(win_build[name]).imports
        nt = {fn for dll, fns in imports.items() if dll.lower() == "ntoskrnl.exe" for fn in fns}
        needed = {"ObOpenObjectByPointer", "IoFileObjectType"}
        assert needed <= nt, f"{name} does not import {sorted(needed - nt)}"


# ---- the spill file -------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 KiB tmpfs (root only): ``(directory, grow)``; ``grow()`` makes it 4 MiB."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a short write needs a tiny filesystem: mounting one needs root")
    d = tmp_path / "tiny"
    d.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k,mode=0777", "hil-tiny", str(d)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=4m", str(d)], check=True, capture_output=True)

    try:
        yield d, grow
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, check=False)


def test_a_short_spill_write_leaves_no_torn_record_to_swallow_later_ones(
    wine_guest, injectable_agent, load_agent, tiny_fs, tmp_path, free_port
):
    tiny, grow = tiny_fs
    # the spill file lives on the 4 KiB filesystem: three ~1.5 KB records do not fit
    (tiny / "spill").write_bytes(b"")
    os.symlink(tiny / "spill", wine_guest.unix_path(r"C:\windows\hilagent-21.spill"))
    long_name = "C:\\hil\\" + "s" * 1500 + ".exe"
    port = free_port  # no collector yet
    drv = load_agent(injectable_agent, port, SpillAfterMs=2500, BackoffMaxMs=200, SpillId=21)
    mark = len(wine_guest.dbgprint_lines())
    for pid in (2101, 2102, 2103):
        inject(wine_guest, "created", pid, long_name)
    wine_guest.wait_for_log(r"\[hilagent\] spill failed", timeout=30, start=mark)
    grow()
    for pid in (2104, 2105):
        inject(wine_guest, "created", pid, long_name)
    wine_guest.wait_for_log(r"saved created pid=2105 ", timeout=30, start=mark)
    after = len(wine_guest.dbgprint_lines())
    wine_guest.wait_for_log(r"\[hilagent\] spilled [1-9]\d* records", timeout=30, start=after)

    with Collector(port=port, interval=0.3, capture_dir=tmp_path / "c") as c:
        aid = c.wait_for_agent(kind="win-wdm", timeout=20)
        for pid in range(2101, 2106):
            c.wait_for(kind="created", pid=pid, timeout=20)
        c.flush()
        got = {pid: [r.image_path for r in c.records(kind="created", pid=pid)] for pid in range(2101, 2106)}
        want = "\\??\\" + long_name
        assert got == {pid: [want] for pid in range(2101, 2106)}, "every record exactly once, whole: " + repr(
            {p: [x[:20] + "..." for x in v] for p, v in got.items()}
        )
        assert c.stats(aid).protocol_errors == 0
        assert not any("ignoring" in line.text for line in wine_guest.dbgprint_lines()[mark:])
        stop_agent(drv)


# ---- the spill lock is not held across network sends ----------------------------------------


def test_a_collector_that_stops_reading_does_not_stall_the_worker(wine_guest, injectable_agent, load_agent, free_port):
    # a large spill file makes the first batch larger than every socket buffer on the way
    rec = encode_process_record("created", 1, ("\\??\\C:\\" + "p" * 1000).encode(), 1, bytes(32))
    wine_guest.write_file(r"C:\windows\hilagent-23.spill", rec * 6000)  # ~6 MB
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind(("127.0.0.1", free_port))
    srv.listen(1)
    srv.settimeout(30)
    try:
        drv = load_agent(injectable_agent, free_port, SpillAfterMs=300, BackoffMaxMs=200, SpillId=23)
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(30)
            header = conn.recv(codec.HEADER_LEN, socket.MSG_WAITALL)
            _, _, ftype, length = struct.unpack("<2sBBI", header)
            assert ftype == codec.HELLO
            conn.recv(length, socket.MSG_WAITALL)
            conn.sendall(codec.encode_request(1))  # ... and never read again
            time.sleep(2)  # the agent is sending the spill file into full buffers
            mark = len(wine_guest.dbgprint_lines())
            inject(wine_guest, "created", 2301, NOTEPAD)
            wine_guest.wait_for_log(r"saved created pid=2301 ", timeout=10, start=mark)
            time.sleep(1)  # older than SpillAfterMs: the worker wants to spill it
            inject(wine_guest, "created", 2302, NOTEPAD)
            t0 = time.monotonic()
            try:
                wine_guest.wait_for_log(r"saved created pid=2302 ", timeout=5, start=mark)
            except Exception:  # noqa: BLE001
                pytest.fail(
                    "the worker is stuck while the network thread sends to a collector "
                    "that stopped reading (the spill lock is held across the sends)"
                )
            assert time.monotonic() - t0 < 5
        stop_agent(drv)
    finally:
        srv.close()


# ---- a full event queue holds bounded memory ------------------------------------------------


def _driver_host_pid(guest, sys_name: str = "hilagent.sys") -> int:
    """The winedevice.exe of this prefix that has ``sys_name`` mapped."""
    want = f"WINEPREFIX={guest.prefix}".encode()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if want not in (p / "environ").read_bytes().split(b"\0"):
                continue
            if sys_name.encode() in (p / "maps").read_bytes().lower():
                return int(p.name)
        except OSError:
            continue
    raise AssertionError(f"no process of {guest.prefix} maps {sys_name}")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_a_full_event_queue_holds_bounded_memory_and_counts_what_it_drops(
    wine_guest, injectable_agent, load_agent, collector, mingw
):
    flood = mingw.build_exe(
        [Path(__file__).with_name("hilagent_flood.c")],
        name="hilagent_flood.exe",
        include_dirs=[windows_build.windows_dir() / "agent"],
    )
    wine_guest.put(flood, FLOOD)
    _sparse(wine_guest, r"C:\hil\big.bin", 256 << 20)
    long_name = "C:\\hil\\" + "q" * 2000 + ".exe"  # ~4 KB per queued notification
    drv = load_agent(injectable_agent, collector.port)
    aid = collector.wait_for_agent(kind="win-wdm", timeout=20)
    host = _driver_host_pid(wine_guest)
    Path(f"/proc/{host}/clear_refs").write_text("5")  # peak RSS := current RSS
    rss0 = _status_kb(host, "VmRSS")

    # the worker hashes 3 x 256 MiB while 4000 notifications arrive
    wine_guest.run([FLOOD, "31000", "3", r"C:\hil\big.bin"], timeout=60).check()
    res = wine_guest.run([FLOOD, "32000", "4000", long_name], timeout=120)
    assert res.exit_code == 0 and b"flood: 4000 ok" in res.stdout, res.text
    peak_kb = _status_kb(host, "VmHWM") - rss0

    collector.wait_for(kind="created", pid=31002, timeout=120)
    pids = set(range(31000, 31003)) | set(range(32000, 36000))
    deadline = time.monotonic() + 60
    while True:  # until every notification is accounted for: a record or a counted drop
        collector.flush()
        got = len([r for r in collector.records(agent=aid, kind="created") if r.pid in pids])
        dropped = collector.stats(aid).dropped_by_agent
        if got + dropped >= len(pids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert got + dropped == len(pids), f"{got} records + {dropped} dropped != {len(pids)} notifications"
    assert dropped > 0
    assert peak_kb < 8 * 1024, (
        f"the driver host's memory grew by {peak_kb} KiB while 4000 notifications (~4 KB each) "
        "waited: the queue holds them all instead of a bounded amount"
    )
    stop_agent(drv)
