"""A blocking client for kserver (drivers/linux/kserver/PROTOCOL.md), for the suites that load it.

``SERVE_DIR`` is the guest folder the suites' kserver serves files from (its ``root=``).
"""

from __future__ import annotations

import select
import socket

from hil.errors import HilError

SERVE_DIR = "/srv/kserver"


class KServerClient:
    """A blocking client for the kserver protocol: one request line in, ``OK <len>`` + body
    or ``ERR <reason>`` out.

    >>> with KServerClient("127.0.0.1", port) as c:
    ...     assert c.request(b"hi") == ("OK", b"hello from kserver")
    """

    MAX_HEADER = 64

    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""

    def __enter__(self) -> KServerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait(self, timeout: float) -> bool:
        """Whether the server sent something (or closed) within ``timeout`` seconds. Nothing is
        consumed: :meth:`read_response` reads it next."""
        if self._buf:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def read_response(self) -> tuple[str, bytes]:
        """``("OK", body)``, ``("ERR", reason)``; ``("EOF", b"")`` when the server closed first.

        Raises :class:`HilError` when the server breaks the framing (a short body, a bad header).
        """
        while b"\n" not in self._buf:
            if len(self._buf) > self.MAX_HEADER:
                raise HilError(f"kserver sent a header line longer than {self.MAX_HEADER} bytes: {self._buf[:80]!r}")
            if not self._fill():
                if self._buf:
                    raise HilError(f"kserver closed in the middle of a header: {self._buf!r}")
                return ("EOF", b"")
        line, self._buf = self._buf.split(b"\n", 1)
        kind, _, arg = line.partition(b" ")
        if kind == b"ERR":
            return ("ERR", arg)
        if kind != b"OK" or not arg.isdigit():
            raise HilError(f"kserver sent a malformed header: {line[:80]!r}")
        length = int(arg)
        while len(self._buf) < length:
            if not self._fill():
                raise HilError(f"kserver closed after {len(self._buf)} of {length} body bytes")
        body, self._buf = self._buf[:length], self._buf[length:]
        return ("OK", body)

    def request(self, line: bytes) -> tuple[str, bytes]:
        self.send(line + b"\n")
        return self.read_response()

    def get_file(self, name: str) -> bytes:
        status, body = self.request(b"FILE:" + name.encode())
        if status != "OK":
            raise HilError(f"kserver refused FILE:{name}: {status} {body.decode(errors='replace')}")
        return body
