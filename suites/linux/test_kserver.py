"""kserver (drivers/linux/kserver): a kernel TCP server module, exercised from the host through a
QEMU user-networking port forward. Protocol: drivers/linux/kserver/PROTOCOL.md."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from hil.deploy import kmod as kmods
from hil.errors import HilError
from hil.waiting import wait_until

from ..kserver_client import SERVE_DIR, KServerClient

pytestmark = pytest.mark.hil_linux


def _put_files(guest, tmp_path, files: dict[str, bytes | int]) -> dict[str, str]:
    """Create files under SERVE_DIR: ``bytes`` are copied in, an ``int`` is that many random
    bytes made in the guest (big files need no trip through the guest agent). Returns each
    file's SHA-256 as the guest's own sha256sum computes it: the witness for byte-exactness."""
    for name, data in files.items():
        remote = f"{SERVE_DIR}/{name}"
        guest.run(f"mkdir -p $(dirname {remote})").check()
        if isinstance(data, int):
            guest.run(f"head -c {data} /dev/urandom > {remote}", timeout=120).check()
        else:
            guest.write_file(remote, data)
    names = " ".join(f"{SERVE_DIR}/{n}" for n in files)
    sums = guest.run(f"sha256sum {names}", timeout=120).check().stdout.decode()
    return {line.split(None, 1)[1].strip()[len(SERVE_DIR) + 1 :]: line.split()[0] for line in sums.splitlines()}


@pytest.mark.smoke
def test_host_client_arrives_as_10_0_2_2_and_gets_replies_and_files(linux_guest, start_kserver, tmp_path):
    files = {
        "empty": b"",
        "one": b"x",
        "page-1": os.urandom(4095),
        "page": os.urandom(4096),
        "page+1": os.urandom(4097),
        "big.bin": 3 * 1024 * 1024 + 17,
        "sub/dir/nested.txt": b"nested\n",
    }
    sums = _put_files(linux_guest, tmp_path, files)
    for name, data in files.items():
        if isinstance(data, bytes):
            assert sums[name] == hashlib.sha256(data).hexdigest(), name
    ks = start_kserver(reply="pong: kernel says hi")

    with ks.client() as c:
        assert c.request(b"hello") == ("OK", b"pong: kernel says hi")
        # while connected, the guest sees the host's connection coming from 10.0.2.2
        ss = linux_guest.run(f"ss -tnH state established '( sport = :{ks.guest_port} )'").check().stdout.decode()
        assert f"{linux_guest.controller_address}:" in ss, ss
        for name, data in files.items():
            body = c.get_file(name)
            assert hashlib.sha256(body).hexdigest() == sums[name], name
            assert len(body) == (data if isinstance(data, int) else len(data)), name
        assert c.request(b"") == ("OK", b"pong: kernel says hi")  # an empty line is a message too
        assert c.request(b"FILE:") == ("ERR", b"denied")
    st = ks.stats()
    assert st["files"] == len(files) and st["refused"] == 0


def test_client_not_on_allow_list_is_refused_and_logged(linux_guest, start_kserver, kmod):
    # allow only the guest's own loopback: the host (10.0.2.2) is not on the list
    ks = start_kserver(allow="127.0.0.1")
    with ks.client() as c:
        assert c.read_response() == ("ERR", b"forbidden")
        assert c.read_response() == ("EOF", b"")
    log = wait_until(
        lambda: f"refused client {linux_guest.controller_address}" in (t := kmods.dmesg(linux_guest)) and t,
        timeout=10,
        what="kserver's refusal in dmesg",
    )
    assert "not on the allow-list" in log
    # an allow-listed client (the guest itself over loopback) is served meanwhile
    # read the whole answer: the header and the reply may arrive in separate segments
    script = (
        "import socket, sys\n"
        f"s = socket.create_connection(('127.0.0.1', {ks.guest_port}))\n"
        "s.sendall(b'hi\\n')\n"
        "buf = b''\n"
        "while b'\\n' not in buf:\n    buf += s.recv(100)\n"
        "head, _, body = buf.partition(b'\\n')\n"
        "while len(body) < int(head.split()[1]):\n    body += s.recv(100)\n"
        "sys.stdout.write((head + b'\\n' + body).decode())\n"
    )
    out = linux_guest.run("python3 -", input=script.encode()).check().stdout.decode()
    assert out.startswith("OK 18\nhello from kserver"), out
    st = ks.stats()
    assert st["refused"] == 1 and st["accepted"] == 1


TRAVERSALS = [
    ("../etc/passwd", "denied"),
    ("/etc/passwd", "denied"),
    ("sub/../../etc/passwd", "denied"),
    ("sub/../secret.txt", "denied"),  # '..' is refused even when it stays inside
    ("./secret.txt", "denied"),
    ("sub//secret.txt", "denied"),
    ("sub/", "denied"),
    ("..", "denied"),
    (".", "denied"),
    ("link-out", "denied"),  # symlink to /etc/passwd
    ("link-in", "denied"),  # symlink to a file inside: no symlink is ever followed
    ("linkdir/passwd", "denied"),  # symlinked directory pointing out
    ("a\x01b", "denied"),
    ("sub", "notfile"),
    ("fifo", "notfile"),  # would block a naive server forever
    ("missing", "notfound"),
    ("sub/missing", "notfound"),
]


def test_traversal_and_odd_names_are_refused_and_serving_continues(linux_guest, start_kserver, tmp_path):
    _put_files(linux_guest, tmp_path, {"secret.txt": b"inside\n", "sub/ok.txt": b"ok\n"})
    linux_guest.run(
        f"cd {SERVE_DIR} && ln -s /etc/passwd link-out && ln -s secret.txt link-in && ln -s /etc linkdir && mkfifo fifo"
    ).check()
    ks = start_kserver()
    with ks.client() as c:
        for name, reason in TRAVERSALS:
            assert c.request(b"FILE:" + name.encode()) == ("ERR", reason.encode()), name
            assert c.request(b"still there?") == ("OK", b"hello from kserver")
        assert c.get_file("sub/ok.txt") == b"ok\n"
        assert c.get_file("secret.txt") == b"inside\n"
    assert ks.stats()["denied"] >= 13
    assert "root:" not in kmods.dmesg(linux_guest)


def test_oversize_lines_and_binary_garbage_do_no_harm(linux_guest, start_kserver):
    ks = start_kserver()
    with ks.client() as c:
        assert c.request(b"A" * 256) == ("OK", b"hello from kserver")  # exactly the limit
        assert c.request(b"A" * 257) == ("ERR", b"toolong")
        assert c.request(b"B" * (4 << 20)) == ("ERR", b"toolong")  # 4 MiB line
        assert c.request(b"FILE:" + b"x" * 1000) == ("ERR", b"toolong")
        assert c.request(b"crlf\r") == ("OK", b"hello from kserver")
        assert c.request(b"\x00\xff\x00FILE:secret") == ("OK", b"hello from kserver")
        assert c.request(b"FILE:a\x00b") == ("ERR", b"denied")
        # 2 MiB of random bytes: exactly one response per newline, nothing else
        garbage = os.urandom(2 << 20)
        lines = garbage.split(b"\n")
        c.send(garbage + b"\n")
        for line in lines:
            status, body = c.read_response()
            assert status in ("OK", "ERR"), (status, body)
            if len(line.rstrip(b"\r")) > 256 or len(line) > 256:
                assert (status, body) == ("ERR", b"toolong")
        assert c.request(b"after garbage") == ("OK", b"hello from kserver")
    # a client that vanishes in the middle of a line
    s = socket.create_connection((ks.host, ks.host_port))
    s.sendall(b"half a line without newline" * 50)
    s.close()
    with ks.client() as c:
        assert c.request(b"next client") == ("OK", b"hello from kserver")
    st = ks.stats()
    assert st["toolong"] >= 3


def test_fifty_concurrent_clients(linux_guest, start_kserver, tmp_path):
    n = 50
    want = _put_files(linux_guest, tmp_path, {"blob": 256 * 1024})["blob"]
    ks = start_kserver(max_per_addr=n)  # every client arrives from 10.0.2.2
    # Connect one after the other (QEMU's host-side forward listens with a backlog of 1, so 50
    # simultaneous SYNs would mostly measure SYN retransmits), then all 50 work at once.
    clients: list[KServerClient] = []
    errors: list[str] = []
    try:
        for i in range(n):
            c = ks.client(timeout=120)
            clients.append(c)
            assert c.request(f"client {i}".encode()) == ("OK", b"hello from kserver")
        assert ks.stats()["active"] == n, "all 50 clients are connected and served at the same time"
        go = threading.Barrier(n, timeout=120)

        def work(i: int, c: KServerClient) -> None:
            try:
                go.wait()
                for _ in range(3):
                    assert hashlib.sha256(c.get_file("blob")).hexdigest() == want
                    assert c.request(b"again") == ("OK", b"hello from kserver")
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                errors.append(f"client {i}: {exc!r}")
                go.abort()

        threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        for c in clients:
            c.close()
    assert not errors, "\n".join(errors[:10])
    st = ks.stats()
    assert st["accepted"] == n and st["files"] == 3 * n and st["busy"] == 0


def test_clients_beyond_max_clients_are_told_busy(linux_guest, start_kserver):
    ks = start_kserver(max_clients=3)
    held = [ks.client() for _ in range(3)]
    try:
        for c in held:
            assert c.request(b"hi") == ("OK", b"hello from kserver")
        with ks.client() as extra:
            assert extra.read_response() == ("ERR", b"busy")
    finally:
        for c in held:
            c.close()
    wait_until(lambda: ks.stats()["active"] == 0, timeout=30, what="the three clients to be released")
    with ks.client() as c:
        assert c.request(b"room again") == ("OK", b"hello from kserver")


def test_unload_under_load_neither_hangs_nor_oopses(linux_guest, start_kserver, kmod, kserver_ko, tmp_path):
    blob_size = 2 * 1024 * 1024
    _put_files(linux_guest, tmp_path, {"blob": blob_size})
    busy_clients, idle_clients = 16, 8
    ks = start_kserver(max_per_addr=busy_clients + idle_clients)  # all from 10.0.2.2
    started = threading.Barrier(busy_clients + 1, timeout=120)
    outcomes: list[str] = []

    def hammer(i: int) -> None:
        first = True
        try:
            with ks.client(timeout=120) as c:
                while True:
                    c.send(b"FILE:blob\n")
                    if first:
                        first = False
                        started.wait()
                    status, body = c.read_response()
                    if status == "EOF":
                        outcomes.append("eof")
                        return
                    assert status == "OK" and len(body) == blob_size
        except (OSError, HilError) as exc:
            outcomes.append(f"closed: {type(exc).__name__}")  # cut mid-body or reset: expected
        except threading.BrokenBarrierError:
            outcomes.append("barrier")

    idle = [ks.client() for _ in range(idle_clients)]
    for c in idle:
        assert c.request(b"hi") == ("OK", b"hello from kserver")
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(busy_clients)]
    for t in threads:
        t.start()
    started.wait()

    kmod.unload("kserver", timeout=120)  # raises on failure or a kernel complaint

    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung after the module left"
    assert len(outcomes) == busy_clients and "barrier" not in outcomes
    for c in idle:
        assert c.read_response() == ("EOF", b"")
        c.close()
    assert not kmods.is_loaded(linux_guest, "kserver")
    assert kmod.console_problems() == []
    # the port is free again and a fresh load serves at once
    kmod.load(kserver_ko, port=ks.guest_port, allow=linux_guest.controller_address, root=SERVE_DIR)
    with ks.client() as c:
        assert c.request(b"back") == ("OK", b"hello from kserver")
