"""hil_agent (drivers/linux/agent) under hostile conditions, on a real guest:

- the SHA-256 is that of the image that ran, even when its owner rewrites it in place right
  after the exec, and even when the rewrite keeps the size and lands in the same clock tick
  (so mtime/ctime do not change);
- "exited" means the whole process is gone: a thread-group leader that ends while another
  thread runs is not the process's exit;
- rmmod finishes within seconds while a collector reads slowly but steadily, and while an image
  on a FUSE filesystem whose daemon never answers is waiting to be hashed (which must not hold
  up the records behind it either).

Any kernel report (oops, WARNING, lockup...) during a test fails it through the ``kmod`` fixture.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time

import pytest

from hil.deploy import reference
from hil.protocol import codec
from hil.waiting import wait_until

pytestmark = pytest.mark.hil_linux


def _put_noop(guest, remote: str) -> bytes:
    """The static no-op program (exit(0) at once, no libc) at ``remote``; returns its bytes."""
    data = reference.build_noop_tool().read_bytes()
    guest.write_file(remote, data)
    guest.run(f"chmod 755 {remote}").check()
    return data


def _other_bytes(data: bytes) -> bytes:
    """Same size, different content (the last 16 bytes flipped)."""
    return data[:-16] + bytes(b ^ 0xFF for b in data[-16:])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cat(guest, path: str) -> bytes:
    """The file's bytes, or b"" while it does not exist yet."""
    return guest.run(f"cat {path} 2>/dev/null").stdout


def _pid_of(output: bytes, word: str = "pid") -> int:
    for line in output.decode().splitlines():
        key, _, value = line.partition(" ")
        if key == word:
            return int(value)
    raise AssertionError(f"no '{word} N' line in {output!r}")


# ---- the image that ran -------------------------------------------------------------------


def test_sha256_is_of_the_image_that_ran_when_it_is_rewritten_right_after_exec(
    linux_guest, start_agent, collector, kmod
):
    ran = _put_noop(linux_guest, "/root/hil-ran")
    other = _other_bytes(ran)
    linux_guest.write_file("/root/hil-other", other)
    # a large image first keeps the agent's worker busy hashing while /root/hil-ran runs, exits
    # and is rewritten in place, same size, other bytes (a no-op with 48 MiB of zeros behind it)
    linux_guest.run("cp /root/hil-ran /root/hil-big && truncate -s 48M /root/hil-big").check()
    start_agent(collector.port)
    collector.wait_for_agent(kind="linux-kmod", timeout=60)

    res = linux_guest.run(
        "/root/hil-big; /root/hil-ran & pid=$!; wait $pid; echo pid $pid; n=0; "
        # the agent may keep writers off (ETXTBSY) until it has hashed the image: retry
        "until dd if=/root/hil-other of=/root/hil-ran conv=notrunc status=none 2>/dev/null; do "
        "  n=$((n+1)); [ $n -lt 1200 ] || exit 3; sleep 0.05; done; echo busy $n",
        timeout=120,
    ).check()
    pid = _pid_of(res.stdout)
    assert linux_guest.read_file("/root/hil-ran") == other, "the rewrite happened"

    rec = collector.wait_for(kind="created", pid=pid, timeout=120)
    assert rec.image_path == "/root/hil-ran"
    assert rec.image_size == len(ran)
    assert rec.sha256.hex() == _sha(ran), (
        f"reported {rec.sha256.hex()}: the rewritten file ({_sha(other)}), not what ran ({_sha(ran)}); "
        f"writer retries: {_pid_of(res.stdout, 'busy')}"
    )


# Rewrites PATH with the bytes of NEW (same size) so that size, mtime and ctime end up exactly
# as before: the clock is set back to the old ctime right before the write, so the write and the
# utime() that restores mtime land in the same clock tick as the old change.  Prints the outcome.
SAME_STAMPS_REWRITE = r"""
import os, sys, time
path, new = sys.argv[1], open(sys.argv[2], "rb").read()
st = os.stat(path)
assert len(new) == st.st_size
real0, mono0 = time.clock_gettime_ns(time.CLOCK_REALTIME), time.clock_gettime_ns(time.CLOCK_MONOTONIC)
same = False
try:
    for _ in range(200):
        time.clock_settime_ns(time.CLOCK_REALTIME, st.st_ctime_ns)
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, new, 0)
        os.close(fd)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns, now.st_ctime_ns, now.st_ino) == \
                (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            same = True
            break
finally:
    time.clock_settime_ns(time.CLOCK_REALTIME,
                          real0 + time.clock_gettime_ns(time.CLOCK_MONOTONIC) - mono0)
print("same-stamps" if same else "stamps-changed")
"""


def test_hash_cache_sees_a_same_size_rewrite_that_keeps_mtime_and_ctime(
    linux_guest, start_agent, collector, kmod, request
):
    """The agent may answer from its cache while a file is unchanged (on filesystems with an
    i_version counter: ext4 in this guest's 6.1 kernel keeps one unconditionally), never once it
    changed, even when size, mtime and ctime say it did not."""
    first = _put_noop(linux_guest, "/root/hil-cached")
    second = _other_bytes(first)
    linux_guest.write_file("/root/hil-second", second)
    linux_guest.write_file("/root/same_stamps.py", SAME_STAMPS_REWRITE.encode())
    start_agent(collector.port)
    collector.wait_for_agent(kind="linux-kmod", timeout=60)

    def run_once() -> int:
        res = linux_guest.run("/root/hil-cached & pid=$!; wait $pid; echo pid $pid").check()
        return _pid_of(res.stdout)

    pid1 = run_once()
    assert collector.wait_for(kind="created", pid=pid1, timeout=60).sha256.hex() == _sha(first)
    hits = kmod.stats("hil_agent")["hash_cache_hits"]
    pid1b = run_once()  # unchanged: from the cache where the filesystem allows it
    assert collector.wait_for(kind="created", pid=pid1b, timeout=60).sha256.hex() == _sha(first)
    cached = kmod.stats("hil_agent")["hash_cache_hits"] > hits
    request.node.user_properties.append(("hash_cache_hit_on_unchanged_file", str(cached)))  # JUnit XML

    out = (
        linux_guest.run("python3 /root/same_stamps.py /root/hil-cached /root/hil-second", timeout=120)
        .check()
        .stdout.decode()
    )
    assert "same-stamps" in out, f"could not rewrite within one clock tick: {out}"
    assert linux_guest.read_file("/root/hil-cached") == second

    pid2 = run_once()
    rec = collector.wait_for(kind="created", pid=pid2, timeout=60)
    assert rec.sha256.hex() == _sha(second), (
        "a cache keyed on size/mtime/ctime answered with the old content's hash "
        f"({rec.sha256.hex()} == {_sha(first)}: {rec.sha256.hex() == _sha(first)})"
    )


# ---- "exited" means the process is gone ---------------------------------------------------

# The main thread (the thread-group leader) ends with the raw exit syscall while a second thread
# keeps the process alive for HOLD seconds; ctypes releases the GIL around the call.
LEADER_EXITS_FIRST = r"""
import ctypes, os, sys, threading, time
hold = float(sys.argv[1])
def last():
    time.sleep(hold)
    with open("/root/hil-last-thread-done", "w") as f:
        f.write("done\n")
threading.Thread(target=last).start()
print("pid", os.getpid(), flush=True)
ctypes.CDLL(None).syscall(60, 0)   # SYS_exit: this thread only
"""


def _threads(guest, pid: int) -> int:
    res = guest.run(f"grep '^Threads:' /proc/{pid}/status")
    return int(res.stdout.split()[1]) if res.exit_code == 0 and res.stdout.strip() else 0


def test_exit_is_reported_when_the_last_thread_ends_not_when_the_leader_does(linux_guest, start_agent, collector, kmod):
    linux_guest.write_file("/root/leader_first.py", LEADER_EXITS_FIRST.encode())
    start_agent(collector.port)
    collector.wait_for_agent(kind="linux-kmod", timeout=60)

    linux_guest.run(
        "rm -f /root/hil-last-thread-done; python3 /root/leader_first.py 12 >/root/leader.out 2>&1 &"
    ).check()
    pid = wait_until(
        lambda: b"pid " in _cat(linux_guest, "/root/leader.out") and _pid_of(_cat(linux_guest, "/root/leader.out")),
        timeout=60,
        what="the leader-first process to start",
        interval=0.3,
    )
    collector.wait_for(kind="created", pid=pid, timeout=60)
    # the leader is gone (a zombie), one thread still runs
    wait_until(
        lambda: linux_guest.run(f"grep -q '^State:.*Z' /proc/{pid}/status").exit_code == 0,
        timeout=30,
        what="the leader to exit",
        interval=0.3,
    )
    time.sleep(2)  # ample time for an exit record to be recorded, were one made
    collector.flush()
    still_running = (
        _threads(linux_guest, pid) >= 1 and linux_guest.run("test -e /root/hil-last-thread-done").exit_code != 0
    )
    assert still_running, "the second thread ended too early for this check (slow guest?)"
    assert collector.records(kind="exited", pid=pid) == [], (
        "'exited' was reported while a thread of the process still runs"
    )

    wait_until(
        lambda: linux_guest.run("test -e /root/hil-last-thread-done").exit_code == 0,
        timeout=60,
        what="the last thread to finish",
        interval=0.3,
    )
    collector.wait_for(kind="exited", pid=pid, timeout=60)
    collector.flush()
    assert len(collector.records(kind="exited", pid=pid)) == 1


# N threads (the leader among them) end at the same moment with the raw exit syscall, so that
# several of them can be the one that finds the group empty: still exactly one exit record.
ALL_THREADS_EXIT_TOGETHER = r"""
import ctypes, os, sys, threading
n = int(sys.argv[1])
libc = ctypes.CDLL(None)
barrier = threading.Barrier(n)
def end():
    barrier.wait()
    libc.syscall(60, 0)
for _ in range(n - 1):
    threading.Thread(target=end).start()
print("pid", os.getpid(), flush=True)
end()
"""


def test_threads_ending_together_make_exactly_one_exit_record(linux_guest, start_agent, collector, kmod):
    linux_guest.write_file("/root/together.py", ALL_THREADS_EXIT_TOGETHER.encode())
    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    res = linux_guest.run("for i in $(seq 25); do python3 /root/together.py 6; done", timeout=300).check()
    pids = [int(line.split()[1]) for line in res.stdout.decode().splitlines() if line.startswith("pid ")]
    assert len(pids) == 25
    for pid in pids:
        collector.wait_for(kind="exited", pid=pid, timeout=60)
    collector.flush()
    counts = {pid: len(collector.records(kind="exited", pid=pid)) for pid in pids}
    assert all(c == 1 for c in counts.values()), f"exit records per process: {counts}"
    assert collector.stats(agent).dropped_by_agent == 0


# ---- unload stays prompt --------------------------------------------------------------------


class TrickleCollector:
    """Just enough of a collector, on the host, to keep an agent waiting: it takes the agent's
    HELLO, asks for its records with one REQUEST, then reads what comes ``rate`` bytes per
    second, one byte per recv(), through small receive buffers and segments."""

    def __init__(self, rate: int, host: str = "127.0.0.1"):
        self.rate = rate
        self.received = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self.srv = socket.socket()
        # small buffers and segments: the window reopens in small steps as the bytes trickle out
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        self.srv.bind((host, 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.conn: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def _read_exact(self, n: int) -> bytes:
        assert self.conn is not None  # accepted by start_request
        data = b""
        while len(data) < n:
            chunk = self.conn.recv(n - len(data))
            if not chunk:
                raise ConnectionError("agent closed")
            data += chunk
        return data

    def start_request(self, timeout: float = 60.0) -> None:
        """Accept the agent, read its HELLO, send REQUEST(1), start trickling."""
        self.srv.settimeout(timeout)
        self.conn, _ = self.srv.accept()
        self.conn.settimeout(timeout)
        header = self._read_exact(codec.HEADER_LEN)
        magic, _version, ftype, length = struct.unpack("<2sBBI", header)
        assert magic == b"KH" and ftype == codec.HELLO, header
        self._read_exact(length)
        self.conn.sendall(codec.encode_request(1))
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        assert self.conn is not None  # accepted by start_request
        period = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                if not self.conn.recv(1):
                    self.error = "closed"
                    return
                self.received += 1
                next_at += period
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self._stop.set()
        for s in (self.conn, self.srv):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)


def _long_dir(depth: int = 15) -> str:
    """An absolute directory path of about 3.8 KB (the records it makes are nearly maximal)."""
    return "/root/" + "/".join(f"{i:02d}" + "d" * 248 for i in range(depth))


def _fill_agent_with_long_records(guest, kmod, execs: int) -> None:
    """``execs`` runs of a no-op whose absolute path is about 3.8 KB long: as many nearly maximal
    exec records (and small exit records) wait in the agent."""
    deep = _long_dir()
    guest.run(f"mkdir -p {deep}").check()
    _put_noop(guest, "/root/hil-x")
    guest.run(
        f"cp /root/hil-x {deep}/x && cd {deep} && i=0; while [ $i -lt {execs} ]; do ./x; i=$((i+1)); done", timeout=300
    ).check()
    wait_until(
        lambda: kmod.stats("hil_agent")["recorded"] >= 2 * execs,
        timeout=120,
        what=f"the agent to record {execs} execs and exits",
        interval=0.5,
    )


def _unload_within(kmod, seconds: float, why: str) -> float:
    t0 = time.monotonic()
    try:
        kmod.unload("hil_agent", timeout=40)
    except Exception as exc:  # noqa: BLE001 - the message is the finding
        pytest.fail(f"rmmod did not finish within 40 s {why} ({time.monotonic() - t0:.1f} s): {exc}")
    took = time.monotonic() - t0
    assert took < seconds, f"rmmod took {took:.1f} s {why}"
    return took


def test_rmmod_finishes_promptly_while_a_host_collector_reads_one_byte_per_second(linux_guest, start_agent, kmod):
    # The agent's records far exceed every buffer between it and the collector (the guest's
    # socket, QEMU's user networking, the host's socket).  Seen from the guest this collector is
    # stalled rather than slow: the buffers between drain in bursts minutes apart.
    linux_guest.run("sysctl -qw net.ipv4.tcp_wmem='4096 4096 4096'").check()
    trickle = TrickleCollector(rate=1, host=linux_guest.listen_address)
    try:
        start_agent(trickle.port, backoff_max_ms=500, buffer_kb=16384)
        # connected through the listen backlog; waits for a REQUEST while records pile up
        _fill_agent_with_long_records(linux_guest, kmod, 600)
        trickle.start_request()
        time.sleep(5)
        st = kmod.stats("hil_agent")
        assert st["buffered_bytes"] > 1_000_000, st
        assert trickle.error is None, trickle.error
        _unload_within(kmod, 15, "while the host collector reads 1 B/s")
    finally:
        trickle.close()
    assert kmod.console_problems() == []


# A collector in the guest itself (the agent reaches it over the guest's loopback, with nothing
# buffering in between): it takes the HELLO, sends REQUEST(1), then reads RATE bytes per second
# in STEP-byte reads, steadily, following the frame boundaries.  /root/trickle.out gets its
# progress and how the connection ended: "closed" (FIN) or "reset", and whether the last frame
# was torn (the connection ended inside it).
GUEST_COLLECTOR = r"""
import os, socket, struct, sys, time
port, rate, step = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = open("/root/trickle.out", "w", buffering=1)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
srv.bind(("127.0.0.1", port))
srv.listen(1)
out.write("listening\n")
while not os.path.exists("/root/trickle.go"):
    time.sleep(0.2)
c, _ = srv.accept()
def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = c.recv(n - len(data))
        if not chunk:
            raise ConnectionError("agent closed")
        data += chunk
    return data
magic, version, ftype, length = struct.unpack("<2sBBI", read_exact(8))
assert magic == b"KH" and ftype == 1, (magic, ftype)
read_exact(length)
c.sendall(struct.pack("<2sBBII", b"KH", 1, 2, 4, 1))
out.write("requested\n")
hdr, left, frames, got = b"", 0, 0, 0
def feed(data):
    global hdr, left, frames
    i = 0
    while i < len(data):
        if left == 0:
            take = min(8 - len(hdr), len(data) - i)
            hdr += data[i:i + take]
            i += take
            if len(hdr) == 8:
                magic, _, _, left = struct.unpack("<2sBBI", hdr)
                assert magic == b"KH", hdr
                if left == 0:
                    frames, hdr = frames + 1, b""
        else:
            take = min(left, len(data) - i)
            left -= take
            i += take
            if left == 0:
                frames, hdr = frames + 1, b""
period, next_at, shown = step / rate, time.monotonic(), 0.0
try:
    while True:
        data = c.recv(step)
        if not data:
            end = "closed"
            break
        got += len(data)
        feed(data)
        if time.monotonic() - shown > 1:
            out.write(f"progress frames={frames} bytes={got}\n")
            shown = time.monotonic()
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
except OSError as exc:
    end = f"reset ({exc})"
torn = 1 if (hdr or left) else 0
out.write(f"{end} frames={frames} bytes={got} torn={torn}\n")
"""


def _start_guest_collector(guest, port: int, rate: int, step: int) -> None:
    guest.write_file("/root/trickle.py", GUEST_COLLECTOR.encode())
    guest.run(
        "sysctl -qw net.ipv4.tcp_wmem='4096 4096 4096'; rm -f /root/trickle.go /root/trickle.out; "
        f"python3 /root/trickle.py {port} {rate} {step} >/root/trickle.err 2>&1 & "
        "echo $! > /root/trickle.pid"
    ).check()
    wait_until(
        lambda: b"listening" in _cat(guest, "/root/trickle.out"),
        timeout=60,
        what="the in-guest collector to listen",
        interval=0.3,
    )


def _guest_collector_requests(guest) -> None:
    guest.run("touch /root/trickle.go").check()
    wait_until(
        lambda: b"requested" in _cat(guest, "/root/trickle.out"),
        timeout=60,
        what="the in-guest collector to send its REQUEST",
        interval=0.3,
    )


def test_rmmod_finishes_promptly_while_the_collector_reads_slowly_but_steadily(linux_guest, start_agent, kmod):
    port = 7399
    _start_guest_collector(linux_guest, port, rate=1024, step=16)
    try:
        start_agent(port, collector="127.0.0.1", backoff_max_ms=500)
        _fill_agent_with_long_records(linux_guest, kmod, 150)
        _guest_collector_requests(linux_guest)
        time.sleep(5)
        st = kmod.stats("hil_agent")
        assert st["connected"] == 1 and st["buffered_bytes"] > 200_000, st
        _unload_within(kmod, 15, "while the collector reads 1 KiB/s")
    finally:
        # ends the connection: an agent stuck in send fails, so the guest can clean up
        linux_guest.run("kill -9 $(cat /root/trickle.pid)", timeout=60)
    assert kmod.console_problems() == []


def test_rmmod_lets_the_frame_being_sent_finish_then_closes_between_frames(linux_guest, start_agent, kmod):
    """A collector that reads at a modest, steady 64 KiB/s: a frame takes about a second, and the
    agent waits for socket space in the middle of one most of the time.  Unloading lets that frame
    finish (the grace period) and ends the connection between frames: no torn frame."""
    port = 7398
    _start_guest_collector(linux_guest, port, rate=64 * 1024, step=4096)
    try:
        start_agent(port, collector="127.0.0.1", backoff_max_ms=500)
        _fill_agent_with_long_records(linux_guest, kmod, 150)
        _guest_collector_requests(linux_guest)
        wait_until(
            lambda: b"frames=2 " in _cat(linux_guest, "/root/trickle.out"),
            timeout=60,
            what="two frames at the in-guest collector",
            interval=0.2,
        )
        _unload_within(kmod, 15, "while the collector reads 64 KiB/s")
        end = wait_until(
            lambda: [
                line
                for line in _cat(linux_guest, "/root/trickle.out").decode().splitlines()
                if line.startswith(("closed", "reset"))
            ],
            timeout=30,
            what="the in-guest collector to see the connection end",
            interval=0.3,
        )[0]
        assert end.startswith("closed") and end.endswith("torn=0"), (
            f"the connection ended inside a frame on unload: {end}"
        )
    finally:
        linux_guest.run("kill -9 $(cat /root/trickle.pid)", timeout=60)
    assert kmod.console_problems() == []


# A FUSE filesystem served straight over /dev/fuse (no libfuse in the guest) holding one file,
# "img": a no-op program padded to 4 MiB.  READs below HANG_FROM are answered (all that exec
# needs); READs at or beyond it are taken and never answered: a server that stopped answering.
FUSE_DAEMON = r"""
import ctypes, errno, os, struct, sys
mnt, image = sys.argv[1], open(sys.argv[2], "rb").read()
HANG_FROM = 1 << 20
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
if libc.mount(b"hilfuse", mnt.encode(), b"fuse", 0, opts) != 0:
    raise OSError(ctypes.get_errno(), "mount")
IN_HDR = struct.Struct("<IIQQIIII")
OUT_HDR = struct.Struct("<IiQ")
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")

def attr(node):
    if node == 1:
        return ATTR.pack(1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
    return ATTR.pack(2, len(image), (len(image) + 511) // 512, 0, 0, 0, 0, 0, 0, 0o100755, 1, 0, 0, 0, 4096, 0)

def reply(unique, body=b"", error=0):
    os.write(fd, OUT_HDR.pack(OUT_HDR.size + len(body), error, unique) + body)

print("ready", flush=True)
hung = 0
while True:
    try:
        req = os.read(fd, 1 << 20)
    except OSError as exc:
        if exc.errno in (errno.ENODEV,):
            break
        if exc.errno in (errno.EINTR, errno.ENOENT):
            continue
        raise
    length, op, unique, node, _uid, _gid, _pid, _ = IN_HDR.unpack_from(req)
    arg = req[IN_HDR.size:length]
    if op == 26:    # INIT
        major, minor, readahead, flags = struct.unpack_from("<IIII", arg)
        reply(unique, struct.pack("<IIIIHHIIHHI7I", 7, 31, readahead, 0, 16, 12, 4096, 1, 0, 0, 0, *([0] * 7)))
    elif op == 1:   # LOOKUP
        if arg.rstrip(b"\0") == b"img":
            reply(unique, struct.pack("<QQQQII", 2, 0, 3600, 3600, 0, 0) + attr(2))
        else:
            reply(unique, error=-errno.ENOENT)
    elif op == 3:   # GETATTR
        reply(unique, struct.pack("<QII", 3600, 0, 0) + attr(node))
    elif op in (14, 27):  # OPEN, OPENDIR
        reply(unique, struct.pack("<QII", 0, 0, 0))
    elif op == 15:  # READ
        _fh, offset, size = struct.unpack_from("<QQI", arg)
        if offset >= HANG_FROM:
            hung += 1
            print("hung", offset, size, flush=True)
            continue
        reply(unique, image[offset:offset + size])
    elif op in (2, 36, 42):  # FORGET, INTERRUPT, BATCH_FORGET: no reply
        continue
    elif op in (18, 25, 29, 34):  # RELEASE, FLUSH, RELEASEDIR, ACCESS
        reply(unique)
    elif op == 28:  # READDIR: empty
        reply(unique)
    else:
        reply(unique, error=-errno.ENOSYS)
"""


def test_an_image_on_a_fuse_filesystem_that_never_answers_holds_up_nothing(linux_guest, start_agent, collector, kmod):
    noop = _put_noop(linux_guest, "/root/hil-after")
    linux_guest.write_file("/root/hilfuse.py", FUSE_DAEMON.encode())
    linux_guest.run(
        "cp /root/hil-after /root/fuse-img && truncate -s 4M /root/fuse-img && modprobe fuse && mkdir -p /mnt/hilfuse"
    ).check()
    start_agent(collector.port)
    agent = collector.wait_for_agent(kind="linux-kmod", timeout=60)
    linux_guest.run(
        "python3 /root/hilfuse.py /mnt/hilfuse /root/fuse-img >/root/hilfuse.out 2>&1 & echo $! > /root/hilfuse.pid"
    ).check()
    try:
        wait_until(
            lambda: b"ready" in _cat(linux_guest, "/root/hilfuse.out"),
            timeout=60,
            what="the FUSE daemon to mount",
            interval=0.3,
        )
        res = linux_guest.run(
            "/mnt/hilfuse/img & a=$!; wait $a; echo fuse $a $?; /root/hil-after & b=$!; wait $b; echo pid $b",
            timeout=60,
        ).check()
        fuse_pid = int(res.stdout.decode().split("fuse ")[1].split()[0])
        after_pid = _pid_of(res.stdout)
        assert f"fuse {fuse_pid} 0" in res.stdout.decode(), res.stdout

        # the exec behind the FUSE one is reported promptly, with its hash
        after = collector.wait_for(kind="created", pid=after_pid, timeout=30)
        assert after.sha256.hex() == _sha(noop)
        on_fuse = collector.wait_for(kind="created", pid=fuse_pid, timeout=10)
        assert on_fuse.image_path == "/mnt/hilfuse/img"
        assert on_fuse.image_size == 4 << 20
        assert on_fuse.sha256 == bytes(32), "not hashed: the filesystem's server may never answer"
        st = kmod.stats("hil_agent")
        assert st["hash_skipped_remote"] == 1, st

        t0 = time.monotonic()
        kmod.unload("hil_agent", timeout=40)
        assert time.monotonic() - t0 < 15
        assert collector.stats(agent).protocol_errors == 0
    finally:
        # ends the FUSE connection: anything waiting on the daemon fails and the guest recovers
        linux_guest.run("kill -9 $(cat /root/hilfuse.pid); sleep 1; umount -l /mnt/hilfuse", timeout=60)
