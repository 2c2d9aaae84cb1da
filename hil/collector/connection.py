"""One agent connection inside the collector's event loop: decode, enforce the session rules
(drivers/protocol/PROTOCOL.md 3.2) and the collector's caps (section 5), store records, capture
raw bytes, and close on the first protocol error."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hil.collector.store import AgentId, AgentStats, ProtocolErrorEvent
from hil.protocol import (
    End,
    Hello,
    ProtocolError,
    Records,
    Request,
    ResourceLimit,
    StalledPeer,
    StreamDecoder,
    Unauthorized,
    UnexpectedFrame,
    encode_request,
)

if TYPE_CHECKING:
    from hil.collector.collector import Collector

log = logging.getLogger("hil.collector")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


READ_BUFFER = 1 << 20  # one socket read takes up to this much (fewer loop iterations)
ARENA_POOL = 4  # read buffers kept for reuse once the records kept in them are gone
MIN_TAIL = READ_BUFFER // 4  # a connection reads on into its buffer while this much is free
MIN_READ = 1 << 16  # and while its reads bring a frame's worth (each replays an incomplete
# frame, of up to 64 KiB: a peer trickling bytes must not make every read copy one)


class ReadArena:
    """One read buffer of :data:`READ_BUFFER` bytes, where records may stay (a
    :class:`~hil.protocol.codec.Arena`).

    The event loop reads into ``write``. The RECORDS frames of a read come to the store as one
    batch per run of frames (a :class:`~hil.protocol.codec.RunRecords`: no per-frame work), in
    one copy of the run or, when the run fills at least a quarter of the buffer, in the buffer
    itself, which is then charged in full to that batch (``used``). The connection that read
    it reads on into the rest of it (while :data:`MIN_TAIL` is free: its runs stay there too,
    at no further charge and no copy at all), the other connections into another buffer. Once
    the last batch in it is evicted and nothing else refers to it, the buffer goes back to the
    pool for a later read."""

    __slots__ = ("buf", "write", "view", "start", "nbytes", "used", "_pool")

    def __init__(self, buf: bytearray, pool: deque[bytearray]):
        self.buf = buf
        self.write = memoryview(buf)
        self.view = self.write.toreadonly()
        self.start = 0  # where the data being decoded starts in it
        self.nbytes = sys.getsizeof(buf)  # what the first batch kept in it is charged
        self.used = False  # records are kept in it (set by the decoder, cleared by the store)
        self._pool = pool

    def __del__(self) -> None:
        self._pool.append(self.buf)  # nothing refers to it any more: its bytes may be overwritten


class LogLimiter:
    """Warnings about peers (protocol errors, refusals), at most ``rate`` lines a second: a
    hostile peer can cause them as fast as it can connect, and every line is kept somewhere
    (pytest captures logs in memory). The lines held back are counted and summarised."""

    def __init__(self, logger: logging.Logger, rate: int = 20):
        self.log = logger
        self.rate = rate
        self.window = 0.0
        self.sent = 0
        self.held_back = 0

    def warning(self, msg: str, *args) -> None:
        self.flush(time.monotonic())
        if self.sent < self.rate:
            self.sent += 1
            self.log.warning(msg, *args)
        else:
            self.held_back += 1

    def flush(self, now: float) -> None:
        if now - self.window < 1.0:
            return
        if self.held_back:
            self.log.warning(
                "%d more warnings about peers held back in the last second (see Collector.errors() and error_counts())",
                self.held_back,
            )
        self.window, self.sent, self.held_back = now, 0, 0


class AgentConnection(asyncio.BufferedProtocol):
    """asyncio protocol for one TCP connection from an agent.

    Buffered: the event loop reads into the collector's one read buffer (up to
    :data:`READ_BUFFER` per read, shared by every connection: the loop reads one socket at a
    time) and the decoder takes out of it what it keeps: an incomplete frame, each RECORDS
    frame's own bytes (the records' storage), the other frames decoded; where the caps are
    large, a copy of each run of RECORDS frames instead, or the read itself (:class:`ReadArena`).
    """

    def __init__(self, collector: Collector, seq: int):
        self.c = collector
        self.seq = seq
        self.decoder = StreamDecoder(native=True)  # the drivers' C codec indexes records
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_host = "?"
        self.accepted = False  # within the connection caps (counted in c._peer_conns)
        self.agent: AgentId | None = None
        self.stats: AgentStats | None = None  # once identified
        self.nbytes = 0
        self.opened = time.monotonic()
        self.partial_since: float | None = None
        self.outstanding: deque[tuple[int, float, asyncio.Future | None]] = deque()
        self.next_request_id = 1
        self.batch_count = 0
        self.closed = False
        self.capture: BinaryIO | None = None
        self.capture_path: Path | None = None
        self.capture_bytes = 0
        self.capture_dropped = 0
        self.arena: ReadArena | None = None  # where this connection's reads go on (see ReadArena)
        self.arena_end = 0  # how much of it they filled
        self.bulk = False  # the last read brought MIN_READ bytes or more: carry, read on
        self.carried = 0  # bytes of an incomplete frame laid before this read in the shared buffer

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_host = peer[0] if peer else "?"
        c = self.c
        from_peer = c._peer_conns.get(self.peer_host, 0)
        if len(c._conns) >= c.max_connections:
            self._refuse(
                f"{len(c._conns)} connections are open, the cap in total (max_connections={c.max_connections})"
            )
            return
        if from_peer >= c.max_connections_per_peer:
            self._refuse(
                f"{from_peer} connections from {self.peer_host} are open, the cap per "
                f"peer (max_connections_per_peer={c.max_connections_per_peer})"
            )
            return
        self.accepted = True
        c._peer_conns[self.peer_host] = from_peer + 1
        c._conns.add(self)
        if (
            c.capture_dir is not None
            and len(c._capture_files) < c.max_capture_files
            and c._capture_total < c.capture_budget
        ):
            self.capture_path = c.capture_dir / f"conn{self.seq:04d}-{_safe(self.peer)}.bin"
            self.capture = open(self.capture_path, "wb")
            c._capture_files.append(self.capture_path)
        elif c.capture_dir is not None and not c._capture_full:
            c._capture_full = True
            log.warning(
                "capture budget used up (%d files, %d bytes; caps max_capture_files=%d, "
                "capture_budget=%d): connection %d and later ones are not captured",
                len(c._capture_files),
                c._capture_total,
                c.max_capture_files,
                c.capture_budget,
                self.seq,
            )
        log.debug("connection %d from %s", self.seq, self.peer)

    def _refuse(self, why: str) -> None:
        """Close a connection beyond the caps at once, before it costs anything."""
        self.fail(
            ResourceLimit(
                f"connection refused: {why}",
                "close idle agent connections, or raise the collector's connection caps; guests "
                "behind QEMU user networking all connect from 127.0.0.1 (a token keeps out "
                "processes that are not agents)",
            )
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        arena = self.arena
        if arena is not None:
            if arena.used and len(arena.write) - self.arena_end >= MIN_TAIL:
                return arena.write[self.arena_end :]  # read on after the last read
            self.arena = None  # full, or its records all evicted: back to the shared buffer
        shared = self.c.read_arena()
        # A bulk sender's incomplete frame goes first: completed in place, its frame is part
        # of the run that follows (no copy to reassemble it, no batch of its own).
        self.carried = self.decoder.copy_pending(shared.write) if self.bulk and self.c._keep_reads else 0
        return shared.write[self.carried :]

    def buffer_updated(self, nbytes: int) -> None:
        c = self.c
        arena = self.arena
        self.bulk = nbytes >= MIN_READ
        if arena is not None:  # read on after this connection's last read
            replay = self.decoder.pending  # (an incomplete frame: the end of that read)
            arena.start = self.arena_end - replay
            self.arena_end += nbytes
            if not self.bulk:
                self.arena = None
            self.data_received(arena.write[arena.start : self.arena_end], arena, replay)
            return
        arena = c.read_arena()
        if not c._keep_reads:  # small caps: a copy of each frame, one batch each
            self.data_received(arena.write[:nbytes])
            return
        replay, self.carried = self.carried, 0  # (laid there by get_buffer)
        arena.start = 0
        try:
            self.data_received(arena.write[: replay + nbytes], arena, replay)
        finally:
            if arena.used:  # records live in it now: its rest is this connection's
                c._arena = None
                if not self.closed:
                    self.arena, self.arena_end = arena, replay + nbytes

    def data_received(self, data: bytes | memoryview, arena: ReadArena | None = None, replay: int = 0) -> None:
        """``data`` may be the shared read buffer: nothing may keep a reference to it, but
        records kept in ``arena`` (see :class:`ReadArena`). ``replay``: ``data`` starts with
        the incomplete frame the decoder holds, bytes already counted and captured."""
        if self.closed:
            return
        n = len(data) - replay
        self.nbytes += n
        if self.c.capture_dir is not None:
            self._capture(data[replay:] if replay else data)
        if self.stats is not None:
            self.stats.bytes += n
        decoder = self.decoder
        before = decoder.frames
        batches: list[Records] = []  # the RECORDS frames of this read go to the store at once
        try:
            for frame in decoder.feed(data, arena, replay):
                if type(frame) is Records:
                    if not self.outstanding:
                        self._unsolicited()
                    self.batch_count += len(frame.records) + len(frame.skipped)
                    batches.append(frame)
                else:
                    if batches:  # an END must find its records stored
                        self._store(batches)
                        batches = []
                    self._on_frame(frame)
        except ProtocolError as exc:
            if batches:  # every good frame before the bad one is kept
                self._store(batches)
            self.fail(exc)
            return
        if batches:
            self._store(batches)
        if decoder.frames != before or not decoder.pending:
            self.partial_since = time.monotonic() if decoder.pending else None
        elif self.partial_since is None:
            self.partial_since = time.monotonic()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc) -> None:
        if not self.closed and self.decoder.pending:
            try:
                self.decoder.close()
            except ProtocolError as err:
                self._count_error(err)
        self._closed()

    # ------------------------------------------------------------------ frames

    def _unsolicited(self) -> None:
        """A RECORDS frame with no REQUEST outstanding."""
        raise UnexpectedFrame(
            "RECORDS frame with no REQUEST outstanding: agents send records only when asked"
            if self.agent is not None
            else "RECORDS frame before HELLO: an agent must say HELLO first"
        )

    def _store(self, batches: list[Records]) -> None:
        assert self.agent is not None  # RECORDS need a REQUEST outstanding, sent only after HELLO
        self.c._store.add_frames(self.agent, batches, time.monotonic(), time.time())

    def _on_frame(self, frame) -> None:
        if self.agent is None:
            if type(frame) is not Hello:
                raise UnexpectedFrame(f"first frame is {type(frame).__name__.upper()}, not HELLO")
            self._on_hello(frame)
            return
        if type(frame) is End:
            if not self.outstanding:
                raise UnexpectedFrame(f"END {frame.request_id} with no REQUEST outstanding")
            rid, _, fut = self.outstanding[0]
            if frame.request_id != rid:
                raise UnexpectedFrame(f"END answers request {frame.request_id}; the oldest outstanding is {rid}")
            if frame.count != self.batch_count:
                raise UnexpectedFrame(f"END {rid} says {frame.count} records; {self.batch_count} were received")
            self.outstanding.popleft()
            self.batch_count = 0
            assert self.stats is not None  # set with self.agent by the HELLO
            with self.c._store.cond:
                self.stats.dropped_by_agent += frame.dropped
                self.stats.batches += 1
            if frame.dropped:
                log.warning("agent %s dropped %d records (its buffer was full)", self.agent, frame.dropped)
            if fut is not None and not fut.done():
                fut.set_result(True)
            self.c._store.changed()
            return
        if type(frame) is Hello:
            raise UnexpectedFrame("second HELLO on the same connection")
        if type(frame) is Request:
            raise UnexpectedFrame("REQUEST sent by an agent: REQUEST goes collector -> agent")
        raise UnexpectedFrame(f"unexpected {type(frame).__name__} frame")

    def _on_hello(self, hello: Hello) -> None:
        agent = AgentId(hello.kind, hello.os, hello.host)
        c = self.c
        if c.token is not None and not hmac.compare_digest(hello.token, c.token):
            raise Unauthorized(
                f"HELLO from {agent} has "
                f"{'a wrong token' if hello.token else 'no token'}; this "
                "collector requires the shared token"
            )
        store = c._store
        with store.cond:
            stats = store.stats.get(agent)
            if stats is None:
                if c.max_agents is not None and len(store.stats) >= c.max_agents and not store.forget_idle():
                    raise ResourceLimit(
                        f"HELLO from {agent} refused: {len(store.stats)} agent identities are "
                        f"known and connected or holding records, the cap "
                        f"(max_agents={c.max_agents})",
                        "raise max_agents, or find what says HELLO with ever new identities",
                    )
                stats = store.stats[agent] = AgentStats(agent)
            else:
                store.reconnected(agent)
                stats.reconnects += 1
            stats.connections += 1
            stats.connected = True
            stats.bytes += self.nbytes
            stats.capture_dropped_bytes += self.capture_dropped
            self.agent = agent
            self.stats = stats
            if self.capture_path is not None:
                new = self.capture_path.with_name(f"conn{self.seq:04d}-{_safe(hello.host)}-{_safe(hello.kind)}.bin")
                try:
                    self.capture_path.rename(new)
                    files = self.c._capture_files
                    files[files.index(self.capture_path)] = new
                    self.capture_path = new
                except OSError:
                    pass
                stats.capture_files.append(self.capture_path)
            store.version += 1
            store.cond.notify_all()
        log.info(
            "agent %s connected from %s (connection %d%s)",
            agent,
            self.peer,
            self.seq,
            ", reconnect" if stats.reconnects and stats.connections > 1 else "",
        )
        self.request()  # drain what the agent saved while disconnected

    # ------------------------------------------------------------------ actions

    def request(self, waiter: asyncio.Future | None = None) -> int | None:
        """Send a REQUEST; ``waiter`` resolves when its END arrives (or the connection ends)."""
        if self.closed or self.agent is None or self.transport is None:
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
            return None
        rid = self.next_request_id
        self.next_request_id = (rid + 1) & 0xFFFFFFFF
        self.outstanding.append((rid, time.monotonic(), waiter))
        self.transport.write(encode_request(rid))
        return rid

    def check_deadlines(self, now: float) -> None:
        c = self.c
        if self.agent is None and now - self.opened > c.hello_timeout:
            self.fail(
                StalledPeer(
                    f"no HELLO within {c.hello_timeout:g} s of connecting",
                    "an agent must send HELLO first; check the agent's connect path",
                )
            )
        elif self.partial_since is not None and now - self.partial_since > c.frame_timeout:
            self.fail(
                StalledPeer(
                    f"an incomplete frame ({self.decoder.pending} bytes) stayed incomplete for {c.frame_timeout:g} s",
                    "the agent stops sending in the middle of a frame: check its send loop",
                )
            )
        elif self.outstanding and now - self.outstanding[0][1] > c.reply_timeout:
            self.fail(
                StalledPeer(
                    f"REQUEST {self.outstanding[0][0]} not answered within {c.reply_timeout:g} s",
                    "the agent must answer every REQUEST with RECORDS... END",
                )
            )

    def fail(self, exc: ProtocolError) -> None:
        """Count and log a protocol error and close this connection only."""
        if self.closed:
            return
        self._count_error(exc)
        self.c._limited_log.warning(
            "protocol error from %s (%s, connection %d): %s: %s; connection closed",
            self.agent or "unidentified peer",
            self.peer,
            self.seq,
            exc.name,
            exc.problem,
        )
        if self.transport is not None:
            self.transport.abort()
        self._closed()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._closed()

    # ------------------------------------------------------------------ internals

    def _count_error(self, exc: ProtocolError) -> None:
        store = self.c._store
        with store.cond:
            if self.stats is not None:
                self.stats.protocol_errors += 1
            store.errors.append(
                ProtocolErrorEvent(time.monotonic(), time.time(), self.peer, self.agent, exc.name, exc.problem)
            )
            if len(store.errors) > 10000:  # bounded under a flood of hostile peers
                del store.errors[:5000]
            store.error_counts[exc.name] = store.error_counts.get(exc.name, 0) + 1
            self.c._error_count += 1
            store.version += 1
            store.cond.notify_all()

    def _capture(self, data: bytes | memoryview) -> None:
        c = self.c
        capture = self.capture
        room = (
            0 if capture is None else min(c.max_capture_bytes - self.capture_bytes, c.capture_budget - c._capture_total)
        )
        if capture is not None and room >= len(data):
            capture.write(data)
            self.capture_bytes += len(data)
            c._capture_total += len(data)
            return
        if capture is not None and room > 0:
            capture.write(data[:room])
            self.capture_bytes += room
            c._capture_total += room
            c._limited_log.warning(
                "capture of connection %d (%s) reached %d bytes (at most %d per connection, "
                "%d over all); further bytes are decoded but not captured",
                self.seq,
                self.peer,
                self.capture_bytes,
                c.max_capture_bytes,
                c.capture_budget,
            )
        dropped = len(data) - max(room, 0)
        self.capture_dropped += dropped
        if self.stats is not None:
            self.stats.capture_dropped_bytes += dropped

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.arena = None
        if not self.accepted:
            return
        left = self.c._peer_conns.pop(self.peer_host) - 1
        if left:
            self.c._peer_conns[self.peer_host] = left
        self.c._frames_decoded += self.decoder.frames
        if self.capture is not None:
            try:
                self.capture.close()
            except OSError:
                pass
        for _, _, fut in self.outstanding:
            if fut is not None and not fut.done():
                fut.set_result(False)
        self.outstanding.clear()
        self.c._conns.discard(self)
        store = self.c._store
        with store.cond:
            if self.stats is not None:
                assert self.agent is not None  # set together by the HELLO
                self.stats.connected = any(conn.agent == self.agent for conn in self.c._conns)
                if not self.stats.connected:
                    store.disconnected(self.agent)
            store.version += 1
            store.cond.notify_all()


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)[:60] or "_"
