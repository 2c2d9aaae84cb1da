"""kernel-hil agent wire protocol v1: Python codec (spec: drivers/protocol/PROTOCOL.md)."""

from hil.protocol.codec import (
    END,
    HEADER_LEN,
    HELLO,
    MAGIC,
    MAX_FRAME,
    MAX_PAYLOAD,
    RECORDS,
    REQUEST,
    VERSION,
    End,
    Frame,
    Hello,
    Records,
    Request,
    StreamDecoder,
    decode_stream,
    encode_batch,
    encode_end,
    encode_frame,
    encode_hello,
    encode_records_frames,
    encode_request,
)
from hil.protocol.errors import (
    ERROR_CLASSES,
    BadMagic,
    FrameTooLarge,
    MalformedFrame,
    MalformedRecord,
    ProtocolError,
    StalledPeer,
    TruncatedFrame,
    UnexpectedFrame,
    UnknownFrameType,
    UnsupportedVersion,
)
from hil.protocol.records import (
    MAX_PATH,
    NO_SHA256,
    PROCESS_CREATED,
    PROCESS_EXITED,
    Record,
    decode_record,
    encode_process_record,
    encode_raw_record,
)

__all__ = [name for name in dir() if not name.startswith("_")]
