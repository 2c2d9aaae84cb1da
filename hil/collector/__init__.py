"""Host-side collector for the kernel agents' wire protocol (drivers/protocol/PROTOCOL.md)."""

from hil.collector.agent_client import ReferenceAgent
from hil.collector.collector import Collector
from hil.collector.store import (
    AgentId,
    AgentStats,
    ProtocolErrorEvent,
    RecordsEvicted,
    RecordTimeout,
    UnexpectedRecord,
)

__all__ = [
    "AgentId",
    "AgentStats",
    "Collector",
    "ProtocolErrorEvent",
    "RecordTimeout",
    "RecordsEvicted",
    "ReferenceAgent",
    "UnexpectedRecord",
]
