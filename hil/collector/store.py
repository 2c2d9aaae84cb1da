"""Thread-safe store of the records a collector received, and the queries tests run on it.

The asyncio thread appends whole RECORDS frames (a batch of raw records with one receive
time); test threads query. Records stay raw until a query looks at them (a sequence of
``bytes``: a :class:`~hil.protocol.codec.RawRecords` view into the received bytes when the C
codec indexed the frame), which keeps the receive path fast and memory compact.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hil.errors import HilError
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
    evicted: int = 0  # records discarded by the collector's max_records cap
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
    parts = [f"{k}={getattr(v, '__name__', None) or v!r}" if callable(v) else f"{k}={v!r}"
             for k, v in fields.items()]
    if predicate is not None:
        parts.append(f"predicate {getattr(predicate, '__name__', repr(predicate))}")
    return ", ".join(parts) or "any record"


class RecordStore:
    """All records, in arrival order, as batches ``(agent, mono, wall, raw_records)``."""

    def __init__(self, max_records: int | None = None):
        self.max_records = max_records
        self.cond = threading.Condition()
        self._batches: deque[tuple[AgentId, float, float, Sequence[bytes]]] = deque()
        self._evicted_batches = 0  # index of _batches[0] in the arrival sequence
        self._stored = 0
        self.stats: dict[AgentId, AgentStats] = {}
        self.errors: list[ProtocolErrorEvent] = []  # the most recent ones (bounded)
        self.error_counts: dict[str, int] = {}  # every error ever, by class name
        self.version = 0  # bumped on every change: waiters re-check

    # --- writer side (collector thread) ---

    def add_frames(self, agent: AgentId, frames, mono: float, wall: float) -> None:
        """The RECORDS frames of one read (each a batch of raw records received at
        ``mono``/``wall``): one lock and one wake-up for all of them."""
        with self.cond:
            for frame in frames:
                self._add(agent, frame.records, len(frame.skipped), mono, wall)
            self.version += 1
            self.cond.notify_all()

    def _add(self, agent: AgentId, raws: Sequence[bytes], skipped: int, mono: float,
             wall: float) -> None:
        st = self.stats[agent]
        st.records += len(raws)
        st.skipped += skipped
        if raws:
            self._batches.append((agent, mono, wall, raws))
            self._stored += len(raws)
            if self.max_records is not None:
                while self._stored > self.max_records and len(self._batches) > 1:
                    old_agent, _, _, old = self._batches.popleft()
                    self._evicted_batches += 1
                    self._stored -= len(old)
                    self.stats[old_agent].evicted += len(old)

    def changed(self) -> None:
        with self.cond:
            self.version += 1
            self.cond.notify_all()

    # --- reader side ---

    def iter_records(self, start_batch: int = 0, agent: AgentId | None = None,
                     host: str | None = None) -> Iterator[tuple[int, Record]]:
        """(batch sequence number, record) from ``start_batch`` on, optionally only from one
        agent / host (filtered per batch, before decoding). Call with cond held."""
        first = max(start_batch - self._evicted_batches, 0)
        batches = self._batches
        if first:
            batches = itertools.islice(batches, first, None)
        for i, (who, mono, wall, raws) in enumerate(batches, self._evicted_batches + first):
            if (agent is not None and who != agent) or (host is not None and who.host != host):
                continue
            for raw in raws:
                yield i, decode_record(raw, who, mono, wall)

    @property
    def next_batch(self) -> int:
        return self._evicted_batches + len(self._batches)

    @property
    def stored(self) -> int:
        return self._stored
