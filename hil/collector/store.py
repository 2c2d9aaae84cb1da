"""Thread-safe store of the records a collector received, and the queries tests run on it.

The asyncio thread appends whole RECORDS frames (a batch of raw records with one receive
time), or a run of frames of one socket read as one batch; test threads query. Records stay
raw until a query looks at them (a sequence of ``bytes``: a
:class:`~hil.protocol.codec.RawRecords` view into the frame's own bytes when the C codec indexed
it, a :class:`~hil.protocol.codec.RunRecords` view into a copy of the run or into the read
buffer itself), which keeps the receive path fast and memory compact.

Memory is bounded by records and by bytes (what each batch really holds), per agent and over
all agents. Any peer that reaches the collector can send records, so one agent's flood must
not cost another agent its records: an agent over its own quota loses its own oldest batches,
and when the store as a whole is full the agent holding the most loses its oldest. Queries
that cannot see evicted records say so (:class:`RecordsEvicted`) instead of answering.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hil.errors import HilError
from hil.protocol.codec import RawRecords, Records, RunRecords
from hil.protocol.records import Record, decode_record


class AgentId(NamedTuple):
    """An agent's identity, from its HELLO."""

    kind: str
    os: str
    host: str

    def __str__(self) -> str:
        return f"{self.host} ({self.kind}, {self.os or 'os?'})"


@dataclass
class AgentStats:
    """Counters for one agent identity (over all its connections)."""

    agent: AgentId
    records: int = 0  # process records received (stored or evicted)
    bytes: int = 0  # raw bytes received on its connections
    protocol_errors: int = 0
    reconnects: int = 0  # connections after the first
    connections: int = 0
    connected: bool = False
    dropped_by_agent: int = 0  # sum of END.dropped: records the agent lost (its buffer full)
    skipped: int = 0  # records of unknown types
    evicted: int = 0  # records discarded by the collector's caps (max_records, max_bytes...)
    stored: int = 0  # records held now (received minus evicted)
    stored_bytes: int = 0  # memory they take, as max_bytes / agent_max_bytes count it
    batches: int = 0  # END frames received
    capture_dropped_bytes: int = 0
    capture_files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class ProtocolErrorEvent:
    """One protocol error: when, from whom, what."""

    mono: float
    wall: float
    peer: str
    agent: AgentId | None
    error: str  # ProtocolError class name
    message: str


class RecordTimeout(HilError, AssertionError):
    """wait_for / wait_for_agent gave up; the message lists what was seen instead."""


class UnexpectedRecord(HilError, AssertionError):
    """assert_none found a record it should not have."""


class RecordsEvicted(HilError, AssertionError):
    """A query cannot be answered: the collector evicted records it would have looked at
    (assert_none would pass on missing data; wait_for may have missed its record)."""


_FIELD_ALIASES = {"path": "image_path", "size": "image_size", "sha": "sha256"}
_FIELDS = ("kind", "pid", "image_path", "image_size", "sha256", "host", "agent")


def normalize_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in fields.items():
        key = _FIELD_ALIASES.get(key, key)
        if key not in _FIELDS and key != "image_path_bytes":
            raise HilError(
                f"unknown record field {key!r} in a collector query",
                f"use one of: {', '.join(_FIELDS)} (or a callable predicate)",
            )
        if key == "sha256" and isinstance(value, str):
            value = bytes.fromhex(value)
        out[key] = value
    return out


def field_matches(record: Record, key: str, want: Any) -> bool:
    value = record.host if key == "host" else getattr(record, key)
    if callable(want) and not isinstance(want, (str, bytes, int)):
        try:
            return bool(want(value))
        except Exception:
            return False
    return value == want


def describe_query(fields: dict[str, Any], predicate: Callable | None) -> str:
    parts = [f"{k}={getattr(v, '__name__', None) or v!r}" if callable(v) else f"{k}={v!r}" for k, v in fields.items()]
    if predicate is not None:
        parts.append(f"predicate {getattr(predicate, '__name__', repr(predicate))}")
    return ", ".join(parts) or "any record"


class _Batch:
    """One stored RECORDS frame, or a run of them (one read's); ``raws`` is None once evicted.
    ``shared``: the part of ``cost`` that is a read buffer other batches live in too (see
    :meth:`RecordStore._evict_oldest`)."""

    __slots__ = ("agent", "cost", "mono", "raws", "seq", "shared", "wall")

    raws: Sequence[bytes] | None

    def __init__(self, agent: AgentId, mono: float, wall: float, raws: Sequence[bytes], seq: int, cost: int):
        self.agent, self.mono, self.wall, self.raws, self.seq, self.cost = (agent, mono, wall, raws, seq, cost)
        self.shared = 0


# the batch object, its two floats and its slots in two deques
_BATCH_COST = sys.getsizeof(_Batch(AgentId("", "", ""), 0.0, 0.0, (), 0, 0)) + 2 * sys.getsizeof(0.0) + 16


def batch_cost(raws: Sequence[bytes]) -> int:
    """Bytes of memory one batch holds: what ``max_bytes`` and ``agent_max_bytes`` count."""
    if isinstance(raws, RawRecords):  # (a RunRecords counts the read buffer it is charged)
        return raws.nbytes + _BATCH_COST
    return sys.getsizeof(raws) + sum(map(sys.getsizeof, raws)) + _BATCH_COST


class RecordStore:
    """All records, in arrival order, as batches (agent, mono, wall, raw_records).

    Caps (None: none): ``max_records`` / ``max_bytes`` over all agents, ``agent_max_records``
    / ``agent_max_bytes`` per agent (None: the global cap). Each batch is in two queues: the
    arrival order (where an evicted one stays as a tombstone until compacted) and its agent's.
    """

    def __init__(
        self,
        max_records: int | None = None,
        max_bytes: int | None = None,
        agent_max_records: int | None = None,
        agent_max_bytes: int | None = None,
    ):
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.agent_max_records = max_records if agent_max_records is None else agent_max_records
        self.agent_max_bytes = max_bytes if agent_max_bytes is None else agent_max_bytes
        self.cond = threading.Condition()
        self._order: deque[_Batch] = deque()
        self._by_agent: dict[AgentId, deque[_Batch]] = {}
        self._tombstones = 0  # evicted batches still in _order
        # read buffers holding records of several batches (RunRecords owners): those batches,
        # oldest first; the oldest carries the buffer's cost (``shared``)
        self._owned: dict[object, deque[_Batch]] = {}
        self._next_seq = 0
        self._stored = 0
        self._bytes = 0
        self.stats: dict[AgentId, AgentStats] = {}
        self._idle: OrderedDict[AgentId, None] = OrderedDict()  # disconnected, nothing stored
        self.forgotten = 0  # identities dropped from stats to make room (max_agents)
        self.forgotten_evicted = 0  # records those identities had lost to eviction
        self.errors: list[ProtocolErrorEvent] = []  # the most recent ones (bounded)
        self.error_counts: dict[str, int] = {}  # every error ever, by class name
        self.version = 0  # bumped on every change: waiters re-check

    # --- writer side (collector thread) ---

    def add_frames(self, agent: AgentId, frames: Iterable[Records], mono: float, wall: float) -> None:
        """The RECORDS frames of one read (each a batch of raw records received at
        ``mono``/``wall``): one lock and one wake-up for all of them."""
        with self.cond:
            st = self.stats[agent]
            queue = self._by_agent.get(agent)
            cap_n, cap_b = self.agent_max_records, self.agent_max_bytes
            for frame in frames:
                raws = frame.records
                n = len(raws)
                st.records += n
                if frame.skipped:
                    st.skipped += len(frame.skipped)
                if not n:
                    continue
                cost = batch_cost(raws)
                batch = _Batch(agent, mono, wall, raws, self._next_seq, cost)
                self._next_seq += 1
                if type(raws) is RunRecords and raws.owner is not None:  # lives in a read buffer
                    batch.shared = raws.size
                    owned = self._owned.get(raws.owner)
                    if owned is None:
                        owned = self._owned[raws.owner] = deque()
                    owned.append(batch)
                self._order.append(batch)
                if queue is None:
                    queue = self._by_agent[agent] = deque()
                queue.append(batch)  # (eviction spares it: the queue never empties here)
                st.stored += n
                st.stored_bytes += cost
                self._stored += n
                self._bytes += cost
                while len(queue) > 1 and (
                    (cap_n is not None and st.stored > cap_n) or (cap_b is not None and st.stored_bytes > cap_b)
                ):
                    self._evict_oldest(queue)
                if (self.max_bytes is not None and self._bytes > self.max_bytes) or (
                    self.max_records is not None and self._stored > self.max_records
                ):
                    self._evict_over_global_caps()
            self.version += 1
            self.cond.notify_all()

    def _evict_over_global_caps(self) -> None:
        cap_n, cap_b = self.max_records, self.max_bytes
        while True:
            over_b = cap_b is not None and self._bytes > cap_b
            if not over_b and (cap_n is None or self._stored <= cap_n):
                break
            victim = self._largest(over_b)
            if victim is None:
                break
            self._evict_oldest(victim)

    def _largest(self, by_bytes: bool) -> deque[_Batch] | None:
        """The queue of the agent holding the most (records, or bytes), sparing the batch
        just added."""
        newest = self._order[-1]
        best, most = None, -1
        for queue in self._by_agent.values():
            if len(queue) == 1 and queue[0] is newest:
                continue
            st = self.stats[queue[0].agent]
            held = st.stored_bytes if by_bytes else st.stored
            if held > most:
                best, most = queue, held
        return best

    def _evict_oldest(self, queue: deque[_Batch]) -> None:
        batch = queue.popleft()
        raws = batch.raws
        assert raws is not None  # a queue holds only batches not yet evicted
        n = len(raws)
        freed = batch.cost
        if type(raws) is RunRecords and raws.owner is not None:
            # A read buffer is freed with the last batch living in it: until then the next
            # one carries its cost (the batches of one buffer are one agent's, in order).
            owned = self._owned[raws.owner]
            if owned[0] is batch:
                owned.popleft()
            else:
                owned.remove(batch)
            if owned:
                heir = owned[0]
                heir.cost += batch.shared
                heir.shared += batch.shared
                freed -= batch.shared
            else:
                del self._owned[raws.owner]
                raws.owner.used = False  # charged to no batch: records kept in it again pay again
        st = self.stats[batch.agent]
        st.stored -= n
        st.stored_bytes -= freed
        st.evicted += n
        self._stored -= n
        self._bytes -= freed
        batch.raws = None
        if not queue:
            del self._by_agent[batch.agent]
            if not st.connected:
                self._idle[batch.agent] = None
        order = self._order
        if order[0] is batch:
            order.popleft()
            while order and order[0].raws is None:
                order.popleft()
                self._tombstones -= 1
        else:
            self._tombstones += 1
            if self._tombstones > 256 and 2 * self._tombstones > len(order):
                self._order = deque(b for b in order if b.raws is not None)
                self._tombstones = 0

    def changed(self) -> None:
        with self.cond:
            self.version += 1
            self.cond.notify_all()

    # --- identities (call with cond held) ---

    def disconnected(self, agent: AgentId) -> None:
        """``agent`` has no connection left: it may be forgotten once it holds no records."""
        if agent not in self._by_agent:
            self._idle[agent] = None

    def reconnected(self, agent: AgentId) -> None:
        self._idle.pop(agent, None)

    def forget_idle(self) -> bool:
        """Drop the longest-idle identity that is disconnected and holds no records, to make
        room for a new one; False when there is none."""
        if not self._idle:
            return False
        agent, _ = self._idle.popitem(last=False)
        st = self.stats.pop(agent)
        self.forgotten += 1
        self.forgotten_evicted += st.evicted
        return True

    # --- reader side ---

    def iter_records(
        self, start_batch: int = 0, agent: AgentId | None = None, host: str | None = None
    ) -> Iterator[tuple[int, Record]]:
        """(batch sequence number, record) from ``start_batch`` on, optionally only from one
        agent / host (filtered per batch, before decoding). Call with cond held."""
        source: Sequence[_Batch] = self._by_agent.get(agent, ()) if agent is not None else self._order
        if start_batch > 0 and source and source[0].seq < start_batch:
            tail = []  # the batches that came since: walk back from the newest
            for batch in reversed(source):
                if batch.seq < start_batch:
                    break
                tail.append(batch)
            tail.reverse()
            source = tail
        for batch in source:
            raws = batch.raws
            if raws is None or (host is not None and batch.agent.host != host):
                continue
            who, mono, wall, seq = batch.agent, batch.mono, batch.wall, batch.seq
            for raw in raws:
                yield seq, decode_record(raw, who, mono, wall)

    def batches(self) -> list[tuple[AgentId, float, float, Sequence[bytes]]]:
        """Every stored batch as (agent, mono, wall, raw records), oldest first. Call with
        cond held."""
        return [(b.agent, b.mono, b.wall, b.raws) for b in self._order if b.raws is not None]

    @property
    def _batches(self) -> list[tuple[AgentId, float, float, Sequence[bytes]]]:
        return self.batches()  # what hil/bench/collector.py and tests/collector/fuzz_collector.py read

    def evictions(self, agent: AgentId | None = None, host: str | None = None) -> list[tuple[str, int]]:
        """(who, records evicted) for the agents a query covers (one agent, a host name's, or
        all), those that lost any. Call with cond held."""
        if agent is not None:
            st = self.stats.get(agent)
            return [(str(agent), st.evicted)] if st is not None and st.evicted else []
        lost = [(str(a), st.evicted) for a, st in self.stats.items() if st.evicted and (host is None or a.host == host)]
        if host is None and self.forgotten_evicted:
            lost.append((f"{self.forgotten} forgotten identities", self.forgotten_evicted))
        return lost

    @property
    def next_batch(self) -> int:
        return self._next_seq

    @property
    def stored(self) -> int:
        return self._stored

    @property
    def stored_bytes(self) -> int:
        return self._bytes
