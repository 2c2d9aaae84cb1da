"""Reference agent in Python: what a kernel agent does, in ~150 lines.

It keeps saved records in wire encoding in a bounded buffer (like the kernel driver's
length-prefixed global buffer), says HELLO on connect, and answers every REQUEST with every
saved record (RECORDS frames of at most 64 KiB, then END with the count and the number of
records it dropped because the buffer was full). Sent records leave the buffer.

    with ReferenceAgent(host="guest-1").connect(collector.address) as agent:
        agent.created(pid=100, image_path="/usr/bin/true", image_size=1, sha256=digest)

Also a test tool: ``send_raw`` puts arbitrary bytes on the wire.
"""

from __future__ import annotations

import socket
import threading

from hil.errors import HilError
from hil.protocol import (
    NO_SHA256,
    ProtocolError,
    Request,
    StreamDecoder,
    encode_batch,
    encode_hello,
    encode_process_record,
)


class ReferenceAgent:
    """A protocol-v1 agent. ``buffer_bytes`` bounds the saved-records buffer; ``token`` is the
    shared secret its HELLO carries (for a collector made with ``token=``)."""

    def __init__(
        self, host: str, kind: str = "py-ref", os: str = "python", buffer_bytes: int = 1 << 20, token: str | bytes = b""
    ):
        self.host = host
        self.kind = kind
        self.os = os
        self.buffer_bytes = buffer_bytes
        self.token = token
        self._lock = threading.Lock()
        self._saved: list[bytes] = []
        self._saved_bytes = 0
        self._dropped = 0
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self.requests_answered = 0
        self.records_sent = 0
        self.error: BaseException | None = None  # why the connection ended, if not by close()
        self.closed = threading.Event()

    # ------------------------------------------------------------------ recording

    def record(
        self, kind: str, pid: int, image_path: str | bytes, image_size: int = 0, sha256: bytes = NO_SHA256
    ) -> bool:
        """Save one process record; False if the buffer is full (counted as dropped)."""
        raw = encode_process_record(kind, pid, image_path, image_size, sha256)
        with self._lock:
            if self._saved_bytes + len(raw) > self.buffer_bytes:
                self._dropped += 1
                return False
            self._saved.append(raw)
            self._saved_bytes += len(raw)
            return True

    def created(self, pid: int, image_path: str | bytes, image_size: int = 0, sha256: bytes = NO_SHA256) -> bool:
        return self.record("created", pid, image_path, image_size, sha256)

    def exited(self, pid: int, image_path: str | bytes, image_size: int = 0, sha256: bytes = NO_SHA256) -> bool:
        return self.record("exited", pid, image_path, image_size, sha256)

    @property
    def saved(self) -> int:
        with self._lock:
            return len(self._saved)

    # ------------------------------------------------------------------ connection

    def connect(self, address: tuple[str, int], timeout: float = 10.0, hello: bool = True) -> ReferenceAgent:
        try:
            sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise HilError(
                f"agent {self.host}: cannot connect to collector {address}: {exc}",
                "start the collector first and use its .address",
            ) from exc
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.closed.clear()
        self.error = None
        if hello:
            sock.sendall(encode_hello(self.kind, self.os, self.host, token=self.token))
        self._reader = threading.Thread(target=self._serve, args=(sock,), name=f"ref-agent-{self.host}", daemon=True)
        self._reader.start()
        return self

    def send_raw(self, data: bytes) -> None:
        """Put arbitrary bytes on the wire (tests of bad input)."""
        if self._sock is None:
            raise HilError("agent is not connected", "call connect() first")
        self._sock.sendall(data)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)

    def __enter__(self) -> ReferenceAgent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self, sock: socket.socket) -> None:
        decoder = StreamDecoder()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    if type(frame) is not Request:
                        raise ProtocolError(
                            f"collector sent a {type(frame).__name__} frame; only REQUEST goes collector -> agent"
                        )
                    self._answer(sock, frame.request_id)
        except (OSError, ProtocolError) as exc:
            if self._sock is sock:  # not closed by us: remember why
                self.error = exc
        finally:
            self.closed.set()

    def _answer(self, sock: socket.socket, request_id: int) -> None:
        with self._lock:
            saved, self._saved, self._saved_bytes = self._saved, [], 0
            dropped, self._dropped = self._dropped, 0
        sock.sendall(encode_batch(request_id, saved, dropped))
        self.requests_answered += 1
        self.records_sent += len(saved)
