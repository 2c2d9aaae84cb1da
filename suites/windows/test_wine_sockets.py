"""The ksock demo drivers under Wine: real WSK sockets (Wine's netio.sys) on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytestmark = [pytest.mark.windows, pytest.mark.wine]


def assert_no_ksock_leaks(guest):
    """ksock logs its live IRP/MDL/buffer/socket counters at cleanup: all must be zero."""
    lines = [dl.text for dl in guest.dbgprint_lines() if dl.text.startswith("[ksock] cleanup:")]
    assert lines and lines[-1] == "[ksock] cleanup: irps=0 mdls=0 buffers=0 sockets=0", lines


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def test_demo_server_accepts_host_clients(wine_guest, win_build, free_port):
    port = free_port
    wine_guest.install_driver(win_build["hilsocks.sys"], "hilsocks", Port=port)
    wine_guest.start_driver("hilsocks")
    wine_guest.wait_for_log(rf"\[hilsocks\] listening on 127\.0\.0\.1:{port}", timeout=20)

    for msg in [b"hello kernel", bytes(range(256)) * 300]:  # small, then 76 KB
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(msg)
            assert _recv_exact(s, len(msg)) == msg
        wine_guest.wait_for_log(rf"connection closed after {len(msg)} bytes", timeout=10)

    # Unload with a client connected and idle: shutdown must complete the pending receive.
    idle = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        wine_guest.wait_for_log(
            r"\[hilsocks\] accepted connection", timeout=10, start=len(wine_guest.dbgprint_lines()) - 1
        )
        res = wine_guest.stop_driver("hilsocks")
        assert res.exit_code == 0, res.text
        wine_guest.wait_for_log(r"\[hilsocks\] unloaded", timeout=15)
        assert_no_ksock_leaks(wine_guest)
    finally:
        idle.close()
    assert wine_guest.delete_driver("hilsocks").exit_code == 0


def test_demo_client_reaches_host_server(wine_guest, win_build):
    got: dict[str, bytes] = {}
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(30)
    port = srv.getsockname()[1]

    def serve():
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(10)
                got["peer"] = conn.getpeername()[0].encode()
                got["data"] = conn.recv(1024)
                conn.sendall(b"hello from host")
        except OSError as exc:  # reported by the assertions below
            got["error"] = str(exc).encode()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        wine_guest.install_driver(win_build["hilsockc.sys"], "hilsockc", Port=port)
        wine_guest.start_driver("hilsockc")
        wine_guest.wait_for_log(r"\[hilsockc\] reply: hello from host", timeout=20)
        t.join(10)
        assert got.get("data") == b"hello from hilsockc\n", got
        assert got.get("peer") == b"127.0.0.1"
        wine_guest.wait_for_log(r"\[hilsockc\] done 0x00000000", timeout=10)
        assert wine_guest.stop_driver("hilsockc").exit_code == 0
        wine_guest.wait_for_log(r"\[hilsockc\] unloaded", timeout=15)
        assert_no_ksock_leaks(wine_guest)
        assert wine_guest.delete_driver("hilsockc").exit_code == 0
    finally:
        srv.close()


def test_demo_client_reports_refused_connection(wine_guest, win_build, free_port):
    port = free_port  # nobody listens
    wine_guest.install_driver(win_build["hilsockc.sys"], "hilsockc", Port=port)
    wine_guest.start_driver("hilsockc")
    wine_guest.wait_for_log(r"\[hilsockc\] connect failed 0x[0-9a-f]{8}", timeout=20)
    assert wine_guest.stop_driver("hilsockc").exit_code == 0
    wine_guest.wait_for_log(r"\[hilsockc\] unloaded", timeout=15)
    assert_no_ksock_leaks(wine_guest)


def test_demo_client_times_out_on_a_silent_server(wine_guest, win_build):
    """A server that never answers: the receive times out, the IRP is cancelled (or, where the
    provider ignores IoCancelIrp as Wine's netio does, the socket is shut down: its issuer
    thread ends, which makes Wine cancel the receive, then it is closed), and the driver
    finishes and unloads cleanly."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        wine_guest.install_driver(win_build["hilsockc.sys"], "hilsockc", Port=port, TimeoutMs=500)
        wine_guest.start_driver("hilsockc")
        wine_guest.wait_for_log(r"\[hilsockc\] connected", timeout=20)
        # 0xc00000b5 = STATUS_IO_TIMEOUT
        wine_guest.wait_for_log(r"\[hilsockc\] receive failed 0xc00000b5", timeout=15)
        wine_guest.wait_for_log(r"\[hilsockc\] done 0xc00000b5", timeout=10)
        assert wine_guest.stop_driver("hilsockc").exit_code == 0
        wine_guest.wait_for_log(r"\[hilsockc\] unloaded", timeout=15)
        assert_no_ksock_leaks(wine_guest)
    finally:
        srv.close()


class _SilentServer:
    """Accepts every connection on 127.0.0.1 and never answers nor closes (until stop())."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:  # the accept timeout: check _stop again
                continue
            self.conns.append(conn)

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        for conn in self.conns:
            conn.close()
        self.srv.close()


def test_demo_client_survives_many_receive_timeouts(wine_guest, win_build):
    """200 rounds of connect, send, receive timeout, close in one load, the server silent and
    the connection open.  Wine's netio ignores IoCancelIrp, so each timed-out receive is still
    pending when ksock shuts the socket down.  Closing a WSK socket with a receive pending makes
    Wine 8.0's netio run the receive's threadpool callback on the freed socket: winedevice.exe
    crashed (NULL read in send_receive_callback) in 12 of 19 such runs before ksock started a
    socket's requests from a thread of its own and ended it before closing (Wine then cancels
    the receive, so the close finds nothing pending)."""
    rounds = 200
    srv = _SilentServer()
    try:
        # CancelGraceMs=0: shut down as soon as the receive times out (the grace is for
        # IoCancelIrp, which Wine ignores anyway).
        wine_guest.install_driver(
            win_build["hilsockc.sys"], "hilsockc", Port=srv.port, TimeoutMs=50, CancelGraceMs=0, Repeat=rounds
        )
        wine_guest.start_driver("hilsockc")
        deadline = time.monotonic() + 90
        finished = f"[hilsockc] finished {rounds} of {rounds} rounds"
        while not any(dl.text == finished for dl in wine_guest.dbgprint_lines()):
            assert not wine_guest.crashed(), wine_guest.crash_excerpt()
            assert time.monotonic() < deadline, wine_guest.dbgprint_lines()[-5:]
            time.sleep(0.2)  # polling the log file, with a deadline
        texts = [dl.text for dl in wine_guest.dbgprint_lines()]
        done = [t for t in texts if t.startswith("[hilsockc] done ")]
        timeouts = done.count("[hilsockc] done 0xc00000b5")
        # every round ended; nearly all on the receive timeout this test is about.  Under heavy
        # host load Wine's WSASend occasionally fails a just-connected socket with
        # STATUS_CONNECTION_ABORTED (2 of 200 rounds, once in 30 suite runs): a round that
        # never got to receive, not a crash, so it is counted rather than failed on.
        assert len(done) == rounds, done[-5:]
        assert timeouts >= rounds * 0.95, sorted(set(done))
        assert set(done) <= {"[hilsockc] done 0xc00000b5", "[hilsockc] done 0xc0000241"}, sorted(set(done))
        # every close found the cancelled receive completed (none had to be closed pending)
        assert not [t for t in texts if t.startswith("[ksock] closing a socket with")]
        assert wine_guest.stop_driver("hilsockc").exit_code == 0
        wine_guest.wait_for_log(r"\[hilsockc\] unloaded", timeout=15)
        assert_no_ksock_leaks(wine_guest)
    finally:
        srv.stop()
