"""The ksock demo drivers under Wine: real WSK sockets (Wine's netio.sys) on 127.0.0.1."""

from __future__ import annotations

import socket
import threading

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
    provider ignores cancellation as Wine's netio does, the socket is shut down to complete it),
    and the driver finishes and unloads cleanly."""
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
