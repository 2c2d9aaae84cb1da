"""Protocol errors: one class per way a peer can break the wire protocol (section 5 of
drivers/protocol/PROTOCOL.md).

The class names are shared with the C codec (``hil_strerror_name()``) and the golden vectors.
"""

from __future__ import annotations

from hil.errors import HilError

_FIX = (
    "the peer is not speaking kernel-hil protocol v1 correctly: compare its encoder with "
    "drivers/protocol/PROTOCOL.md and the golden vectors in drivers/protocol/vectors/"
)


class ProtocolError(HilError):
    """A peer sent bytes that break the wire protocol. ``name`` is the error class name."""

    def __init__(self, problem: str, fix: str | None = _FIX):
        super().__init__(problem, fix)

    @property
    def name(self) -> str:
        return type(self).__name__


class BadMagic(ProtocolError):
    """A frame does not start with the magic bytes ``KH``."""


class UnsupportedVersion(ProtocolError):
    """The frame header names a protocol version this side does not speak."""


class UnknownFrameType(ProtocolError):
    """The frame header names a frame type that version 1 does not define."""


class FrameTooLarge(ProtocolError):
    """The frame header announces a payload larger than the 64 KiB frame limit."""


class MalformedFrame(ProtocolError):
    """A payload is too short for its fields, or a HELLO string is out of bounds."""


class MalformedRecord(ProtocolError):
    """A record's header, body or field lengths are inconsistent or overrun the payload."""


class TruncatedFrame(ProtocolError):
    """The stream ended in the middle of a frame."""


class UnexpectedFrame(ProtocolError):
    """A valid frame arrived where the session rules do not allow it (drivers/protocol/PROTOCOL.md 3.2)."""


class StalledPeer(ProtocolError):
    """A peer left a frame incomplete, or did not say HELLO / answer a REQUEST, in time."""


class Unauthorized(ProtocolError):
    """The collector requires a shared token and the HELLO's token is absent or wrong."""

    def __init__(
        self,
        problem: str,
        fix: str | None = (
            "give the agent the collector's token (Linux: hil_agent token=...; Windows: the "
            "Token value under the driver's Parameters key; Python: ReferenceAgent(token=...))"
        ),
    ):
        super().__init__(problem, fix)


class ResourceLimit(ProtocolError):
    """A peer went beyond one of the collector's caps (connections, identities)."""


ERROR_CLASSES: dict[str, type[ProtocolError]] = {
    cls.__name__: cls
    for cls in (
        BadMagic,
        UnsupportedVersion,
        UnknownFrameType,
        FrameTooLarge,
        MalformedFrame,
        MalformedRecord,
        TruncatedFrame,
        UnexpectedFrame,
        StalledPeer,
        Unauthorized,
        ResourceLimit,
    )
}
