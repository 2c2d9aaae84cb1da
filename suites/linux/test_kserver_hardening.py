"""kserver hardening (drivers/linux/kserver/PROTOCOL.md): files are opened as an unprivileged
user, a request line has a deadline, each client address has a cap, and ``framing=message``
lets seed 003's own client (one ``send()`` per message, no newline) talk to kserver."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from hil.deploy import kmod as kmods
from hil.errors import HilError
from hil.waiting import wait_until

from ..kserver_client import SERVE_DIR, KServerClient

pytestmark = pytest.mark.hil_linux

REPLY = b"hello from kserver"


def _sh(guest, script: str) -> str:
    return guest.run(f"set -e\nmkdir -p {SERVE_DIR}\ncd {SERVE_DIR}\n{script}", timeout=120).check().stdout.decode()


def _make_permission_tree(guest) -> None:
    """Files whose mode bits say who may read them (uid 1000 is nobody in the guest's passwd:
    numeric ids are enough for the kernel)."""
    _sh(
        guest,
        """
        printf 'open\\n' > open.txt && chmod 0644 open.txt
        printf 'no mode bits\\n' > mode0000 && chmod 0000 mode0000
        mkdir private && printf 'private\\n' > private/file.txt
        chmod 0644 private/file.txt && chown -R 1000:1000 private && chmod 0700 private
        printf 'nobody only\\n' > nobody.txt && chown 65534:65534 nobody.txt && chmod 0400 nobody.txt
        printf 'group\\n' > group.txt && chown 0:65534 group.txt && chmod 0040 group.txt
        mkdir noexec && printf 'x\\n' > noexec/file.txt && chmod 0644 noexec/file.txt && chmod 0644 noexec
    """,
    )


# ---- files are opened with an unprivileged credential ---------------------------------------


def test_files_are_opened_as_nobody_and_unreadable_files_are_denied(linux_guest, start_kserver):
    _make_permission_tree(linux_guest)
    ks = start_kserver()
    with ks.client() as c:
        assert c.get_file("open.txt") == b"open\n"
        assert c.request(b"FILE:mode0000") == ("ERR", b"denied")  # no read bit for anyone
        assert c.request(b"FILE:private/file.txt") == ("ERR", b"denied")  # 0700 dir of uid 1000
        assert c.request(b"FILE:noexec/file.txt") == ("ERR", b"denied")  # dir not searchable
        assert c.get_file("nobody.txt") == b"nobody only\n"  # owner: serve_uid
        assert c.get_file("group.txt") == b"group\n"  # group: serve_gid
        assert c.request(b"still there?") == ("OK", REPLY)
    st = ks.stats()
    assert st["denied"] == 3 and st["files"] == 3
    assert "(permission)" in kmods.dmesg(linux_guest)


def test_serve_uid_and_serve_gid_choose_whose_permissions_apply(linux_guest, start_kserver):
    _make_permission_tree(linux_guest)
    ks = start_kserver(serve_uid=1000, serve_gid=1000)
    assert ks.modules.param("kserver", "serve_uid") == "1000"
    with ks.client() as c:
        assert c.get_file("private/file.txt") == b"private\n"
        assert c.get_file("open.txt") == b"open\n"
        assert c.request(b"FILE:nobody.txt") == ("ERR", b"denied")  # 0400 of uid 65534
        assert c.request(b"FILE:group.txt") == ("ERR", b"denied")  # 0040 of gid 65534
        assert c.request(b"FILE:mode0000") == ("ERR", b"denied")  # no capability either


@pytest.mark.parametrize(
    "params",
    [
        {"serve_uid": 4294967295},
        {"serve_gid": 4294967295},
        {"framing": "chunks"},
        {"request_timeout": 0},
        {"max_per_addr": 0},
        {"max_per_addr": 513},
    ],
    ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()),
)
def test_bad_new_parameters_refuse_to_load(linux_guest, kmod, kserver_ko, params):
    linux_guest.run(f"mkdir -p {SERVE_DIR}").check()
    with pytest.raises(HilError, match="insmod kserver failed"):
        kmod.load(kserver_ko, allow="10.0.2.2", root=SERVE_DIR, **params)
    assert not kmods.is_loaded(linux_guest, "kserver")


# ---- a deadline per request line ----------------------------------------------------------


def _drip(c: KServerClient, first: bytes, limit: float) -> tuple[tuple[str, bytes], float]:
    """Send ``first``, then one more byte every second (never a newline) until the server
    answers; returns its answer and the seconds from the first byte to the answer."""
    t0 = time.monotonic()
    c.send(first)
    while not c.wait(1.0):
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"kserver still waits for the rest of the line after {limit:.0f} s")
        c.send(b"x")
    elapsed = time.monotonic() - t0
    return c.read_response(), elapsed


def test_a_line_dripped_byte_by_byte_is_cut_at_request_timeout(linux_guest, start_kserver):
    ks = start_kserver(request_timeout=3, idle_timeout=60)
    # slowloris: each byte well within idle_timeout, the line never ends
    with ks.client() as c:
        answer, elapsed = _drip(c, b"FILE:sec", limit=20)
        assert answer == ("ERR", b"timeout")
        assert 2.5 <= elapsed <= 10, elapsed
        assert c.read_response() == ("EOF", b"")
    # the same for a line already being discarded as too long
    with ks.client() as c:
        answer, _ = _drip(c, b"A" * 300, limit=20)
        assert answer == ("ERR", b"timeout")
        assert c.read_response() == ("EOF", b"")
    st = ks.stats()
    assert st["timeout"] == 2 and st["toolong"] == 0 and st["active"] == 0


def test_the_deadline_is_per_line_not_per_connection(linux_guest, start_kserver):
    ks = start_kserver(request_timeout=3, idle_timeout=60)
    with ks.client() as c:
        t0 = time.monotonic()
        for i in range(4):  # each line takes ~1.5 s, the connection lives longer than 3 s
            c.send(b"slow but ")
            time.sleep(1.5)
            assert c.request(f"in time {i}".encode()) == ("OK", REPLY)
        assert time.monotonic() - t0 > 5
        time.sleep(4)  # silence between lines is idle time, not request time
        assert c.request(b"after a pause") == ("OK", REPLY)
    assert ks.stats()["timeout"] == 0


# ---- a cap per client address ---------------------------------------------------------------


def test_clients_beyond_max_per_addr_are_refused_per_address(linux_guest, start_kserver):
    ks = start_kserver(max_per_addr=2, max_clients=8, allow=f"{linux_guest.controller_address},127.0.0.1")
    held = [ks.client(timeout=10) for _ in range(2)]
    try:
        for c in held:
            assert c.request(b"hi") == ("OK", REPLY)
        with ks.client(timeout=10) as extra:
            assert extra.read_response() == ("ERR", b"peerlimit")
            assert extra.read_response() == ("EOF", b"")
        # another address (the guest itself over loopback) is still served
        script = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {ks.guest_port}), timeout=10)\n"
            "s.sendall(b'local\\n')\n"
            "buf = b''\n"
            "while buf.count(b'\\n') < 1 or len(buf) < 6 + 18:\n    buf += s.recv(100)\n"
            "print(buf.decode())\n"
        )
        out = linux_guest.run("python3 -", input=script.encode()).check().stdout.decode()
        assert out.startswith("OK 18\nhello from kserver"), out
        held.pop().close()
        wait_until(lambda: ks.stats()["active"] == 1, timeout=30, what="the closed client to be released")
        with ks.client(timeout=10) as again:
            assert again.request(b"room again") == ("OK", REPLY)
    finally:
        for c in held:
            c.close()
    st = ks.stats()
    assert st["peerlimit"] == 1 and st["busy"] == 0 and st["accepted"] == 4


# ---- seed 003's own client: framing=message ----------------------------------------------------


class Seed003Client:
    """A Python port of seed 003's user-space client, behaviour for behaviour.

    main(): for each input line (fgets, the newline cut at strcspn), ``exit`` stops; a
    ``FILE:<name>`` is sent with one ``send()`` and then ``receive_file()`` writes every
    ``recv(1024)`` into ``<name>`` (relative to its working directory) until the server closes;
    anything else is sent with one ``send()`` and one ``recv(1024)`` is printed as the reply.
    Its messages are printed as the C code prints them. The one addition: a socket timeout, so
    that where the C client would hang forever the port raises ``TimeoutError``.
    """

    BUFFER_SIZE = 1024
    PROMPT = "Enter your message (or file name to receive, 'exit' to quit):"

    def __init__(self, port: int, cwd: Path, host: str = "127.0.0.1", timeout: float = 15.0):
        self.cwd = cwd
        self.out: list[str] = []
        self.sockfd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockfd.settimeout(timeout)
        self.sockfd.connect((host, port))

    def printf(self, text: str) -> None:
        print(text)
        self.out.append(text)

    def receive_file(self, filename: bytes) -> None:
        try:
            file = open(self.cwd / filename.decode(), "wb")  # noqa: SIM115 - fopen(); closed below
        except OSError as exc:
            self.printf(f"Failed to open file for writing: {exc.strerror}")
            return
        with file:
            while True:
                try:
                    chunk = self.sockfd.recv(self.BUFFER_SIZE)
                except TimeoutError:
                    raise TimeoutError(f"seed client: FILE:{filename.decode()} never ended") from None
                except OSError as exc:
                    self.printf(f"Failed to receive file: {exc.strerror}")
                    return
                if not chunk:
                    break
                file.write(chunk)
        self.printf(f"File received: {filename.decode()}")

    def receive_message(self) -> int:
        try:
            data = self.sockfd.recv(self.BUFFER_SIZE)
        except TimeoutError:
            raise TimeoutError("seed client: no reply to its message") from None
        except OSError as exc:
            self.printf(f"Failed to receive message: {exc.strerror}")
            return -1
        if not data:
            self.printf("Connection closed by server")
            return -1
        self.printf(f"Received message: {data.decode(errors='replace')}")
        return len(data)

    def send_message(self, message: bytes) -> int:
        try:
            return self.sockfd.send(message)
        except OSError as exc:
            self.printf(f"Failed to send message: {exc.strerror}")
            return -1

    def main(self, stdin: list[str]) -> list[str]:
        try:
            for line in stdin:
                self.printf(self.PROMPT)
                buffer = line.encode()[: self.BUFFER_SIZE - 1].split(b"\n", 1)[0]
                if buffer == b"exit":
                    break
                if buffer.startswith(b"FILE:"):
                    filename = buffer[5:]
                    if self.send_message(buffer) < 0:
                        break
                    self.receive_file(filename)
                else:
                    if self.send_message(buffer) < 0:
                        break
                    self.receive_message()
        finally:
            self.sockfd.close()
        return self.out


SEED_PORT = 4320  # seed 003's SERVER_PORT


def test_seed_003_client_chats_and_fetches_files_with_framing_message(linux_guest, start_kserver, tmp_path):
    report = b"kernel log line 1\nkernel log line 2\n"
    _sh(linux_guest, "head -c 1048579 /dev/urandom > big.bin")
    linux_guest.write_file(f"{SERVE_DIR}/report.txt", report)
    big_sum = _sh(linux_guest, "sha256sum big.bin").split()[0]
    ks = start_kserver(guest_port=SEED_PORT, framing="message", reply="Hello, client!")
    p = Seed003Client.PROMPT

    out = Seed003Client(ks.host_port, tmp_path).main(["hello\n", "how are you?\n", "FILE:report.txt\n"])
    assert out == [
        p,
        "Received message: Hello, client!",
        p,
        "Received message: Hello, client!",
        p,
        "File received: report.txt",
    ]
    assert (tmp_path / "report.txt").read_bytes() == report

    out = Seed003Client(ks.host_port, tmp_path).main(["FILE:big.bin\n"])
    assert out == [p, "File received: big.bin"]
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == big_sum

    # a refused file: the ERR line is all the client gets before the close
    out = Seed003Client(ks.host_port, tmp_path).main(["FILE:missing\n"])
    assert out == [p, "File received: missing"]
    assert (tmp_path / "missing").read_bytes() == b"ERR notfound\n"

    out = Seed003Client(ks.host_port, tmp_path).main(["hi\n", "exit\n"])
    assert out == [p, "Received message: Hello, client!", p]
    wait_until(lambda: ks.stats()["active"] == 0, timeout=30, what="every seed client to be released")
    st = ks.stats()
    assert st["files"] == 2 and st["requests"] == 6 and st["accepted"] == 4


def _raw_exchange(port: int, message: bytes, timeout: float = 15.0) -> bytes:
    """One send, then everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(message)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_message_framing_refusals_and_limits(linux_guest, start_kserver):
    _make_permission_tree(linux_guest)
    ks = start_kserver(framing="message")
    assert ks.modules.param("kserver", "framing") == "message"
    assert _raw_exchange(ks.host_port, b"FILE:open.txt") == b"open\n"
    assert _raw_exchange(ks.host_port, b"FILE:open.txt\r\n") == b"open\n"  # as nc sends it
    assert _raw_exchange(ks.host_port, b"FILE:mode0000") == b"ERR denied\n"
    assert _raw_exchange(ks.host_port, b"FILE:../etc/passwd") == b"ERR denied\n"
    assert _raw_exchange(ks.host_port, b"FILE:private/file.txt") == b"ERR denied\n"
    assert _raw_exchange(ks.host_port, b"A" * 300) == b"ERR toolong\n"  # then closed
    with socket.create_connection((ks.host, ks.host_port), timeout=15) as s:
        for msg in (b"one", b"two\n", b"\x00\xff binary", b"A" * 256):
            s.sendall(msg)
            assert s.recv(1024) == REPLY, msg
    st = ks.stats()
    assert st["files"] == 2 and st["denied"] == 3 and st["toolong"] == 1
    assert "root:" not in kmods.dmesg(linux_guest)
