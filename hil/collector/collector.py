"""The host-side reference collector: an asyncio TCP server in a background thread.

    with Collector(capture_dir=tmp_path) as collector:
        ...  # guest agent connects to 10.0.2.2:collector.port (127.0.0.1 on the host)
        rec = collector.wait_for(kind="created", image_path=r"C:\\x\\t.exe", timeout=10)
        collector.assert_none(kind="created", pid=4)
        assert collector.stats(rec.agent).protocol_errors == 0

It polls every agent each ``interval`` seconds (and at once after HELLO, and on
:meth:`Collector.flush`), keeps every raw byte per connection in a capture file, and every
decoded record with its receive times (``time.monotonic`` and wall clock).

Any process of a guest reaches the collector (10.0.2.2 under QEMU user networking), so every
peer is treated as hostile: what one can make the collector hold is capped (connections,
identities, capture files, records by count and by bytes, per agent and in total; see
drivers/protocol/PROTOCOL.md section 5), and ``token=`` makes it refuse agents that do not know
a shared secret.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hil.collector.connection import ARENA_POOL, READ_BUFFER, AgentConnection, LogLimiter, ReadArena
from hil.collector.store import (
    AgentId,
    AgentStats,
    ProtocolErrorEvent,
    RecordsEvicted,
    RecordStore,
    RecordTimeout,
    UnexpectedRecord,
    describe_query,
    field_matches,
    normalize_fields,
)
from hil.errors import EnvironmentProblem, HilError
from hil.protocol import MAX_TOKEN
from hil.protocol.records import PROCESS_PREFIX_LEN, Record

log = logging.getLogger("hil.collector")
_TICK = 0.1


class _Auto(enum.Enum):
    """The default of ``max_agents``: 4096, or no cap when ``max_records`` is None."""

    AUTO = enum.auto()


_EVICTED_FIX = (
    "raise the collector's caps (max_records, max_bytes, agent_max_records, "
    "agent_max_bytes) or query before the agent floods it; stats(agent).evicted "
    "counts what was lost"
)


class Collector:
    """Collector server. Arguments (all optional):

    host, port -- where to listen (default 127.0.0.1 and a free port; see ``.port``)
    interval -- seconds between polls (REQUEST to every agent), default 1.0
    capture_dir -- folder for one raw capture file per connection (None: no capture)
    max_capture_bytes -- per connection capture cap (default 256 MiB)
    capture_budget, max_capture_files -- over all connections: capture bytes (1 GiB) and
        files (4096); connections beyond are decoded, not captured
    max_records, max_bytes -- records kept over all agents: their number (1,000,000) and the
        memory they take (512 MiB); beyond, the agent holding the most loses its oldest batches
    agent_max_records, agent_max_bytes -- the same per agent (default: the global caps); an
        agent beyond loses its own oldest batches
    max_connections, max_connections_per_peer -- open connections in total (64) and from one
        address (32); one more is closed at once (ResourceLimit)
    max_agents -- identities kept (4096; no cap when max_records is None); a new one forgets
        the longest-idle disconnected identity holding no records, or is refused
    token -- shared secret (str or bytes, 1..255 bytes) every HELLO must carry (Unauthorized
        otherwise); None (default): any agent is accepted
    hello_timeout, frame_timeout, reply_timeout -- stalled-peer limits in seconds (10, 10, 60)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        interval: float = 1.0,
        capture_dir: str | Path | None = None,
        max_capture_bytes: int = 256 << 20,
        capture_budget: int = 1 << 30,
        max_capture_files: int = 4096,
        max_records: int | None = 1_000_000,
        max_bytes: int | None = 512 << 20,
        agent_max_records: int | None = None,
        agent_max_bytes: int | None = None,
        max_connections: int = 64,
        max_connections_per_peer: int = 32,
        max_agents: int | None | _Auto = _Auto.AUTO,
        token: str | bytes | None = None,
        hello_timeout: float = 10.0,
        frame_timeout: float = 10.0,
        reply_timeout: float = 60.0,
    ):
        if interval <= 0:
            raise HilError(f"collector poll interval must be > 0, got {interval}", "pass interval in seconds, e.g. 0.5")
        if max_agents is _Auto.AUTO:
            max_agents = None if max_records is None else 4096
        for name, value in (
            ("max_connections", max_connections),
            ("max_connections_per_peer", max_connections_per_peer),
            ("max_agents", max_agents),
            ("max_records", max_records),
            ("max_bytes", max_bytes),
            ("agent_max_records", agent_max_records),
            ("agent_max_bytes", agent_max_bytes),
        ):
            if value is not None and value < 1:
                raise HilError(
                    f"collector {name} must be >= 1, got {value}",
                    f"pass a positive {name} (or None where no cap is allowed)",
                )
        self.host = host
        self.port = port
        self.interval = interval
        self.capture_dir = Path(capture_dir) if capture_dir is not None else None
        self.max_capture_bytes = max_capture_bytes
        self.capture_budget = capture_budget
        self.max_capture_files = max_capture_files
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.max_agents = max_agents
        self.token = _check_token(token)
        self.hello_timeout = hello_timeout
        self.frame_timeout = frame_timeout
        self.reply_timeout = reply_timeout
        self._store = RecordStore(max_records, max_bytes, agent_max_records, agent_max_bytes)
        self._conns: set[AgentConnection] = set()
        self._peer_conns: dict[str, int] = {}  # open connections per peer address
        self._capture_files: list[Path] = []
        self._capture_total = 0  # bytes written to every capture file
        self._capture_full = False  # said once that new connections go uncaptured
        self._arena: ReadArena | None = None  # the read buffer of all connections (one thread)
        self._arena_pool: deque[bytearray] = deque(maxlen=ARENA_POOL)
        # records kept in read buffers (ReadArena): a batch of up to a whole read, charged up
        # to a whole buffer; only where the caps are large against that (eviction stays
        # fine-grained), else each frame is copied out and a batch of its own
        store = self._store
        self._keep_reads = all(
            cap is None or cap >= 8 * READ_BUFFER for cap in (store.max_bytes, store.agent_max_bytes)
        ) and all(
            cap is None or cap >= 8 * (READ_BUFFER // PROCESS_PREFIX_LEN)
            for cap in (store.max_records, store.agent_max_records)
        )
        self._limited_log = LogLimiter(log)
        self._error_count = 0
        self._frames_decoded = 0  # by connections that have ended
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> Collector:
        if self._thread is not None:
            return self
        if self.capture_dir is not None:
            self.capture_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="hil-collector", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._start_error is not None or not self._started.is_set():
            self._thread.join(5)
            self._thread = None
            raise EnvironmentProblem(
                f"collector could not listen on {self.host}:{self.port}: {self._start_error}",
                "pick another --port (or 0 for a free one), or stop what holds this one",
            )
        log.info("collector listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            fut.result(10)
        except Exception:  # loop already gone
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(loop.create_server(self._new_connection, self.host, self.port))
        except OSError as exc:
            self._start_error = exc
            self._started.set()
            loop.close()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        housekeeping = loop.create_task(self._housekeeping())
        self._started.set()
        try:
            loop.run_forever()
        finally:
            housekeeping.cancel()
            loop.run_until_complete(asyncio.gather(housekeeping, return_exceptions=True))
            loop.close()

    def _new_connection(self) -> AgentConnection:
        self._seq += 1
        return AgentConnection(self, self._seq)

    def read_buffer(self) -> memoryview:
        """The buffer every connection reads into: the event loop reads one socket at a time
        and each connection takes what it keeps out of it before the next read (or keeps the
        buffer: see :class:`~hil.collector.connection.ReadArena`)."""
        return self.read_arena().write

    def read_arena(self) -> ReadArena:
        """The shared read buffer: one from the pool, or a new one, once the last was kept."""
        arena = self._arena
        if arena is None:
            try:
                buf = self._arena_pool.pop()  # a kept read whose records are all gone
            except IndexError:
                buf = bytearray(READ_BUFFER)
            arena = self._arena = ReadArena(buf, self._arena_pool)
        return arena

    async def _shutdown(self) -> None:
        server = self._server
        assert server is not None  # the loop runs only once the server is up
        server.close()
        for conn in list(self._conns):
            conn.close()
        await server.wait_closed()

    async def _housekeeping(self) -> None:
        next_poll = time.monotonic() + self.interval
        tick = min(_TICK, self.interval)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            stalled = now - last > tick + 1.0
            last = now
            if not stalled:  # after a stall of this process, let pending reads run first
                for conn in list(self._conns):
                    conn.check_deadlines(now)
            self._limited_log.flush(now)
            if now >= next_poll:
                next_poll = now + self.interval
                for conn in list(self._conns):
                    if conn.agent is not None and not conn.outstanding:
                        conn.request()

    # ------------------------------------------------------------------ polling

    def flush(self, timeout: float = 10.0) -> None:
        """Send REQUEST to every connected agent and wait until each answered with its END.

        Covers agents that have said HELLO (use wait_for_agent first for a fresh one);
        agents whose connection ends meanwhile are not waited for. Raises HilError naming the
        agents that did not answer within ``timeout``.
        """
        loop = self._require_loop()

        async def _flush() -> list[AgentId]:
            waiters = []
            for conn in list(self._conns):
                if conn.agent is not None:
                    fut = loop.create_future()
                    conn.request(fut)
                    waiters.append((conn.agent, fut))
            if not waiters:
                return []
            await asyncio.wait([f for _, f in waiters], timeout=timeout)
            return [agent for agent, fut in waiters if not fut.done()]

        late = asyncio.run_coroutine_threadsafe(_flush(), loop).result(timeout + 5)
        if late:
            raise HilError(
                f"flush: {len(late)} agent(s) did not answer REQUEST within {timeout:g} s: "
                + ", ".join(map(str, late)),
                "the agent is hung or its reply path is broken; see the capture file",
            )

    def _poke(self) -> None:
        """Ask every idle agent for its records now (non-blocking)."""
        loop = self._loop
        if loop is None:
            return

        def _go():
            for conn in list(self._conns):
                if conn.agent is not None and not conn.outstanding:
                    conn.request()

        loop.call_soon_threadsafe(_go)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._thread is None:
            raise HilError("the collector is not running", "call start() or use it in a with block")
        return self._loop

    # ------------------------------------------------------------------ queries

    def agents(self) -> list[AgentId]:
        """Every agent identity that said HELLO (connected now or before)."""
        with self._store.cond:
            return list(self._store.stats)

    def resolve_agent(self, agent: AgentId | str) -> AgentId:
        """An AgentId, or a host name that identifies exactly one agent."""
        if isinstance(agent, AgentId):
            return agent
        with self._store.cond:
            found = [a for a in self._store.stats if a.host == agent]
            known = list(self._store.stats)
        if len(found) == 1:
            return found[0]
        if not found:
            raise HilError(
                f"no agent with host name {agent!r} has connected; known: " + (", ".join(map(str, known)) or "none"),
                f"wait_for_agent(host=...) first, or check the guest reaches the collector at 10.0.2.2:{self.port}",
            )
        raise HilError(
            f"host name {agent!r} matches {len(found)} agents: " + ", ".join(map(str, found)),
            "pass the AgentId instead of the host name",
        )

    def stats(self, agent: AgentId | str) -> AgentStats:
        aid = self.resolve_agent(agent)
        with self._store.cond:
            st = self._store.stats[aid]
            return AgentStats(**{**st.__dict__, "capture_files": list(st.capture_files)})

    def errors(self) -> list[ProtocolErrorEvent]:
        """Protocol errors seen so far (also from peers that never said HELLO)."""
        with self._store.cond:
            return list(self._store.errors)

    @property
    def protocol_errors(self) -> int:
        return self._error_count

    def error_counts(self) -> dict[str, int]:
        """Every protocol error so far, by class name (errors() keeps only recent ones)."""
        with self._store.cond:
            return dict(self._store.error_counts)

    @property
    def frames_decoded(self) -> int:
        """Valid frames decoded on all connections (open ones included)."""
        return self._frames_decoded + sum(conn.decoder.frames for conn in list(self._conns))

    def capture_files(self) -> list[Path]:
        with self._store.cond:
            return list(self._capture_files)

    def follow(self, stop: threading.Event | None = None, poll: float = 0.5) -> Iterator[Record]:
        """Yield every record as it arrives (from the first one on) until ``stop`` is set."""
        start = 0
        store = self._store
        while stop is None or not stop.is_set():
            with store.cond:
                new = [rec for _, rec in store.iter_records(start)]
                start = store.next_batch
                if not new:
                    store.cond.wait(poll)
                    continue
            yield from new

    def records(self, agent: AgentId | str | None = None, **fields: Any) -> list[Record]:
        """Records received so far (in arrival order), optionally filtered."""
        aid = self.resolve_agent(agent) if agent is not None else None
        want = normalize_fields(fields)
        with self._store.cond:
            return [
                r
                for _, r in self._store.iter_records(agent=aid)
                if all(field_matches(r, k, v) for k, v in want.items())
            ]

    def wait_for(
        self,
        predicate: Callable[[Record], bool] | None = None,
        *,
        timeout: float = 10.0,
        agent: AgentId | str | None = None,
        **fields: Any,
    ) -> Record:
        """The first record (oldest first) matching every field (exact value, or a callable
        applied to the field) and ``predicate``; waits up to ``timeout`` seconds for it.

        Fields: kind ("created"/"exited"), pid, image_path, image_size, sha256 (bytes or hex),
        host, agent. On timeout raises RecordTimeout listing the nearest records seen.
        """
        want = normalize_fields(fields)
        if isinstance(agent, str):  # a host name: the agent may not have connected yet
            want["host"] = agent
        elif agent is not None:
            want["agent"] = agent

        def match(r: Record) -> bool:
            return all(field_matches(r, k, v) for k, v in want.items()) and (predicate is None or bool(predicate(r)))

        only_agent = want.get("agent") if isinstance(want.get("agent"), AgentId) else None
        only_host = want.get("host") if isinstance(want.get("host"), str) else None
        deadline = time.monotonic() + timeout
        self._poke()
        start = 0
        store = self._store
        with store.cond:
            while True:
                for _, rec in store.iter_records(start, only_agent, only_host):
                    if match(rec):
                        return rec
                start = store.next_batch
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                store.cond.wait(left)
            message = self._timeout_message(want, predicate, timeout)
            lost = store.evictions(only_agent, only_host)
            if lost:
                raise RecordsEvicted(
                    f"{message}\nthe record may have been evicted: " + _describe_lost(lost), _EVICTED_FIX
                )
            raise RecordTimeout(message, self._timeout_fix())

    def assert_none(
        self,
        *,
        agent: AgentId | str | None = None,
        flush: bool = True,
        predicate: Callable[[Record], bool] | None = None,
        **fields: Any,
    ) -> None:
        """Fail if any record received so far matches (after a flush of every agent)."""
        if flush:
            self.flush()
        found = self.records(agent=agent, **fields)
        if predicate is not None:
            found = [r for r in found if predicate(r)]
        query = describe_query(normalize_fields(fields), predicate)
        if found:
            raise UnexpectedRecord(
                f"{len(found)} record(s) match {query}, expected none:\n" + "\n".join(f"  {r}" for r in found[:10]),
                "the driver reported an event the test says must not happen",
            )
        aid = self.resolve_agent(agent) if agent is not None else None
        host = fields.get("host") if isinstance(fields.get("host"), str) else None
        with self._store.cond:
            lost = self._store.evictions(aid, host)
        if lost:
            raise RecordsEvicted(
                f"assert_none({query}) cannot tell: records it would have checked were "
                "evicted: " + _describe_lost(lost),
                _EVICTED_FIX,
            )

    def wait_for_agent(self, host: str | None = None, *, kind: str | None = None, timeout: float = 30.0) -> AgentId:
        """Wait until an agent (with this host name / kind) is connected; returns its id."""
        deadline = time.monotonic() + timeout
        store = self._store
        with store.cond:
            while True:
                for aid, st in store.stats.items():
                    if st.connected and (host is None or aid.host == host) and (kind is None or aid.kind == kind):
                        return aid
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                store.cond.wait(left)
            seen = (
                ", ".join(f"{a} ({'connected' if s.connected else 'disconnected'})" for a, s in store.stats.items())
                or "none"
            )
            errs = len(store.errors)
        want = " ".join(filter(None, [f"host={host!r}" if host else "", f"kind={kind!r}" if kind else ""])) or "any"
        raise RecordTimeout(
            f"no agent ({want}) connected within {timeout:g} s; agents seen: {seen}; protocol errors: {errs}",
            f"check the agent runs and reaches the collector at 10.0.2.2:{self.port} "
            f"(guest) / {self.host}:{self.port} (host)",
        )

    # ------------------------------------------------------------------ messages

    def _timeout_message(self, want: dict, predicate, timeout: float) -> str:
        store = self._store
        total = store.stored
        scored = []
        for _, rec in store.iter_records():
            score = sum(field_matches(rec, k, v) for k, v in want.items())
            scored.append((score, rec))
        scored.sort(key=lambda x: -x[0])
        nearest = scored[:5]
        agents = (
            ", ".join(
                f"{a} ({s.records} records"
                f"{f', {s.evicted} evicted' if s.evicted else ''}"
                f"{', connected' if s.connected else ', disconnected'})"
                for a, s in list(store.stats.items())[:20]
            )
            or "no agent connected"
        )
        if len(store.stats) > 20:
            agents += f" and {len(store.stats) - 20} more"
        lines = [
            f"no record matching {describe_query(want, predicate)} within {timeout:g} s; "
            f"{total} records seen from: {agents}"
        ]
        if store.errors:
            lines.append(
                f"protocol errors: {len(store.errors)}, last: {store.errors[-1].error}: {store.errors[-1].message}"
            )
        if nearest:
            lines.append(f"nearest records (fields matched out of {len(want)}):")
            lines += [f"  [{score}/{len(want)}] {rec}" for score, rec in nearest]
        return "\n".join(lines)

    def _timeout_fix(self) -> str:
        return (
            f"check the driver is loaded and the agent is connected to port {self.port}; "
            "records arrive when the collector polls (interval) or on flush()"
        )


def _describe_lost(lost: list[tuple[str, int]]) -> str:
    return "; ".join(f"{who} lost {n} record(s)" for who, n in lost[:10]) + (
        f"; and {len(lost) - 10} more agents" if len(lost) > 10 else ""
    )


def _check_token(token: str | bytes | None) -> bytes | None:
    """The token as HELLO carries it (text as UTF-8); an empty one would accept agents that
    send none, so it is refused like one the protocol cannot carry."""
    if token is None:
        return None
    raw = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    if not 1 <= len(raw) <= MAX_TOKEN:
        raise HilError(
            f"collector token must be 1..{MAX_TOKEN} bytes, got {len(raw)}",
            "pass a shorter secret, or token=None to accept agents without one",
        )
    return raw
