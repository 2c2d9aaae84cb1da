"""Smoke suite: the Linux guest foundation works end to end (select with ``-k smoke``)."""

from __future__ import annotations

import hashlib
import os

import pytest

pytestmark = pytest.mark.hil_linux


@pytest.mark.smoke
def test_smoke_boot_and_run(linux_guest):
    r = linux_guest.run("uname -r; echo hello >&2; exit 3")
    assert r.exit_code == 3
    assert r.stdout.decode().strip() == linux_guest.kernel_release
    assert r.stderr == b"hello\n"


def test_smoke_stdin_and_binary_output(linux_guest):
    payload = bytes(range(256)) * 4
    r = linux_guest.run("cat", input=payload).check()
    assert r.stdout == payload


def test_smoke_file_roundtrip_10mb(linux_guest, tmp_path):
    data = os.urandom(10 * 1024 * 1024)
    src = tmp_path / "blob"
    src.write_bytes(data)
    linux_guest.put(src, "/root/blob")
    guest_sum = linux_guest.run("sha256sum /root/blob", timeout=120).check().text.split()[0]
    assert guest_sum == hashlib.sha256(data).hexdigest()
    back = tmp_path / "back"
    linux_guest.get("/root/blob", back)
    assert back.read_bytes() == data


@pytest.mark.parametrize("step", ["write", "check"])
def test_smoke_isolation(linux_guest, step):
    """A file written in one test is absent in the next: every test gets a fresh guest."""
    marker = "/root/hil-isolation-marker"
    assert linux_guest.run(f"test -e {marker}").exit_code == 1
    linux_guest.write_file(marker, b"left behind\n")
    assert linux_guest.read_file(marker) == b"left behind\n"


def test_smoke_console_captured(linux_guest):
    linux_guest.run("echo hil-console-probe > /dev/kmsg").check()
    text = linux_guest.wait_until(
        lambda: "hil-console-probe" in linux_guest.console_text() and linux_guest.console_text(),
        timeout=10,
        what="the probe line reaching the serial console",
    )
    assert "hil-console-probe" in text


def test_smoke_command_timeout_is_clear(linux_guest):
    from hil.errors import GuestError

    with pytest.raises(GuestError, match="sleep 30.*timeout"):
        linux_guest.run("sleep 30", timeout=2)
    assert linux_guest.run("true").exit_code == 0  # the guest is still usable


def test_smoke_port_forward_reaches_guest(linux_guest):
    import socket

    linux_guest.spawn(
        "python3 -c 'import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,"
        'socket.SO_REUSEADDR,1);s.bind(("0.0.0.0",7000));s.listen();c,a=s.accept();'
        "c.sendall(a[0].encode());c.close()'"
    )
    port = linux_guest.forward_port(7000)

    def connect():
        try:
            with socket.create_connection((linux_guest.forward_host, port), timeout=5) as s:
                return s.recv(100)
        except OSError:
            return b""

    peer = linux_guest.wait_until(connect, timeout=30, what="the guest's listener answering")
    # QEMU user networking shows a client of the guest's host as 10.0.2.2; one from elsewhere
    # (this machine, for a guest on a remote host) keeps its own address
    assert peer == linux_guest.controller_address.encode()
