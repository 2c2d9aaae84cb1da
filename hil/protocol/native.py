"""The drivers' own C codec (``drivers/protocol/hil_proto.c``), loaded into the collector.

The collector's hot path is indexing RECORDS payloads: finding where each process record starts
and checking that it is well formed.  In Python that costs a bytecode loop per record; the C
codec does it at memory speed.  So the same ``hil_proto.c`` the agents are built from is
compiled here as a shared library (with the host's C compiler, once per source hash, cached
outside the repo) and called through :mod:`ctypes`: one call per socket read splits it into
frames and indexes every RECORDS payload in it (:class:`FrameSplitter`).

Only the fast, common case runs in C: a payload of v1-sized process records.  Everything else
(unknown record types, trailing fields, errors) is decided by the Python codec, so both give
the same records and the same errors (``tests/protocol/test_native.py``).  Where no compiler
exists, or ``HIL_NATIVE_CODEC=0``, the Python codec does all the work; :func:`status` says which.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import threading
from array import array
from pathlib import Path
from typing import cast

from hil.deploy.host_build import compile_c
from hil.errors import EnvironmentProblem, HilError
from hil.paths import bundled
from hil.protocol.codec import MAX_PAYLOAD, UNINDEXED
from hil.protocol.records import PROCESS_PREFIX_LEN

log = logging.getLogger("hil.protocol")

SOURCE_DIR = bundled("drivers") / "protocol"
CFLAGS = ("-std=c99", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")
MAX_RECORDS = MAX_PAYLOAD // PROCESS_PREFIX_LEN + 1  # the most one RECORDS payload can hold
SPLIT_FRAMES = 1024  # frames one hil_split_frames call reports at most
SPLIT_STARTS = 32 * MAX_RECORDS  # record starts it writes at most (a 1 MiB read holds ~16 frames)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
NOT_LOADED = "not loaded yet"
_status = NOT_LOADED


def _compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build() -> Path:
    """Compile the codec once per source hash; returns the shared library's path."""
    cc = _compiler()
    if cc is None:
        raise EnvironmentProblem("no C compiler (cc, gcc or clang)", "apt-get install gcc")
    return compile_c(
        SOURCE_DIR / "hil_proto.c",
        cc=cc,
        flags=CFLAGS,
        depends=[SOURCE_DIR / "hil_proto.h"],
        cache="build/native",
        output="libhilproto.so",
    )


def load() -> ctypes.CDLL | None:
    """The loaded codec, building it on first use; None (with :func:`status` saying why) when
    the Python codec must do the work."""
    global _lib, _status
    with _lock:
        if _status != NOT_LOADED:  # loaded, or known not to load
            return _lib
        if os.environ.get("HIL_NATIVE_CODEC", "1") == "0":
            _status = "off (HIL_NATIVE_CODEC=0): the Python codec indexes records"
            return None
        try:
            lib = ctypes.CDLL(str(_build()))
        except (HilError, OSError) as exc:
            _status = f"unavailable ({exc}): the Python codec indexes records"
            log.warning("native protocol codec %s", _status)
            return None
        fn = lib.hil_index_process_records
        fn.restype = ctypes.c_long
        fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t)
        fn = lib.hil_split_frames
        fn.restype = ctypes.c_long
        fn.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
        )
        _lib, _status = lib, "on (drivers/protocol/hil_proto.c through ctypes)"
        return _lib


def status() -> str:
    load()
    return _status


class RecordIndexer:
    """Indexes RECORDS payloads with the C codec; one per decoder (it owns a scratch array)."""

    def __init__(self, lib: ctypes.CDLL):
        self._fn = lib.hil_index_process_records
        self._starts = (ctypes.c_uint32 * MAX_RECORDS)()
        self._starts_addr = ctypes.addressof(self._starts)
        self._data: bytes | memoryview | None = None  # the last buffer seen and its address: several frames
        self._base = 0  # arrive in one read, so most calls skip the lookup

    def index(self, data: bytes | memoryview, off: int, end: int) -> array[int] | None:
        """Payload-relative starts of the records in ``data[off:end]`` (a compact ``uint32``
        array), or None when the payload is not all v1 process records (the Python codec
        decides then). ``data`` is ``bytes`` or a writable buffer (the collector's read buffer);
        the C code only reads it, during this call."""
        if data is not self._data:
            base = _address(data)
            if base is None:  # read-only or empty: the Python codec copes
                return None
            self._data, self._base = data, base
        n = self._fn(self._base + off, end - off, self._starts_addr, MAX_RECORDS)
        if n < 0:
            return None
        starts = array("I")
        starts.frombytes(ctypes.string_at(self._starts_addr, 4 * n))
        return starts


def _address(data: bytes | memoryview) -> int | None:
    """Where the bytes of ``data`` start in memory, or None for a read-only or empty view."""
    if type(data) is bytes:
        return cast(int, ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value)
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(data))
    except (TypeError, ValueError):
        return None


class _Scratch(threading.local):
    """hil_split_frames writes here; one per thread (ctypes lets other threads run during the
    call), copied out before :meth:`FrameSplitter.split` returns."""

    def __init__(self) -> None:
        self.frames = array("I", bytes(16 * SPLIT_FRAMES))
        self.starts = array("I", bytes(4 * SPLIT_STARTS))
        self.frames_addr = self.frames.buffer_info()[0]
        self.starts_addr = self.starts.buffer_info()[0]


_scratch = _Scratch()
_NOTHING: tuple[list[int], array[int]] = ([], array("I"))


class FrameSplitter:
    """Splits what a socket read brought into whole frames, and indexes the RECORDS payloads
    among them, in one C call (``hil_split_frames``) instead of Python work per frame."""

    def __init__(self, lib: ctypes.CDLL):
        self._fn = lib.hil_split_frames
        self._data: bytes | memoryview | None = None  # the last buffer seen and its address
        self._base = 0

    def split(self, data: bytes | memoryview, off: int, end: int) -> tuple[list[int], array[int]]:
        """The whole frames at the start of ``data[off:end]``: ``(table, starts)``, the table
        holding four numbers per frame (its offset, its type, its payload length, the number of
        its records or :data:`UNINDEXED`), ``starts`` the records' offsets, frame after frame;
        every offset counted from ``data[off]``. A frame is UNINDEXED unless it is a RECORDS
        frame of v1 process records only: the Python codec decodes it. Stops before an
        incomplete frame and before a bad header (the Python codec names the error); no frames
        when the first one is either, or ``data`` has no address the C code can read."""
        if data is not self._data:
            base = _address(data)
            if base is None:
                return _NOTHING
            self._data, self._base = data, base
        scratch = _scratch
        n = self._fn(self._base + off, end - off, scratch.frames_addr, SPLIT_FRAMES, scratch.starts_addr, SPLIT_STARTS)
        if n <= 0:
            return _NOTHING
        table = scratch.frames[: 4 * n].tolist()
        ns = 0
        for count in table[3::4]:
            if count != UNINDEXED:
                ns += count
        return table, scratch.starts[:ns]


def indexer() -> RecordIndexer | None:
    lib = load()
    return RecordIndexer(lib) if lib is not None else None


def splitter() -> FrameSplitter | None:
    lib = load()
    return FrameSplitter(lib) if lib is not None else None
