"""Unhandled exceptions in a Wine debug log, named like kernel crashes.

A driver running under Wine lives in ``winedevice.exe``; when it faults, nothing catches the
exception and Wine says so on the process's stderr (the prefix's debug log, see
:mod:`hil.wine.guest`)::

    wine: Unhandled page fault on read access to 0000000000000000 at address 00000002B5C61067 (thread 0108), starting debugger...

then starts ``winedbg --auto``, which prints the exception again, the registers, a stack dump,
a backtrace and the module list -- on *its* standard output, which a driver's process only
has when the prefix was started with stdout going to the log as well::

    Unhandled exception: page fault on read access to 0x0000000000000000 in 64-bit code (0x00000140001599).
    Register dump:
     rip:0000000140001599 rsp:000000000021fd18 ...
    Backtrace:
    =>0 0x00000140001599 KspOpFinish+0x7() [Z:\\src\\drv.c:3] in hilsockc (0x00000000c812e0)
      1 0x000001400015c4 in hilsockc (+0x15c4) (0x00000000c812e0)
    Modules:
    ...

:func:`parse` turns each unhandled exception into a :class:`~hil.crash.report.Report` of kind
:attr:`~hil.crash.kinds.CrashKind.WINE` titled::

    Wine: unhandled <what> in <module>!<function or +offset>

e.g. ``Wine: unhandled page fault on read access in hilsockc!KspOpFinish``.  ``<what>`` is the
exception with its addresses dropped (``page fault on write access``, ``illegal instruction``,
``breakpoint``, ``call to unimplemented function ntoskrnl.exe.ExRaiseStatus``); the module is
named as Wine and WinDbg name it, without its extension.  Where the fault is found, best first:

1. the backtrace: the first frame in a module that is not Wine's own (``ntoskrnl``, ``ntdll``,
   ``kernelbase``...), else the faulting frame;
2. the fault address inside a module of winedbg's ``Modules:`` list, or of the
   ``trace:loaddll`` lines (``WINEDEBUG=+loaddll``: ``Loaded L"...\\hilsockc.sys" at <base>``),
   giving ``+0x<offset>`` in that module;
3. nowhere: the title is just ``Wine: unhandled <what>``.

Without symbols the function is the module-relative offset, stable for one build of the driver
(absolute addresses differ on every load and are never in a title).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hil.crash.kinds import CrashKind
from hil.crash.report import Report

# Wine's own modules: a fault inside one of them is the driver's doing (a bad argument).
SYSTEM_MODULES = frozenset(
    {
        "ntoskrnl",
        "ntdll",
        "kernelbase",
        "kernel32",
        "hal",
        "winedevice",
        "msvcrt",
        "ucrtbase",
        "netio",
        "fltmgr",
        "ndis",
        "wdfldr",
        "ksecdd",
        "cng",
        "advapi32",
        "sechost",
        "rpcrt4",
        "user32",
        "ws2_32",
        "<wine-loader>",
    }
)

# Exception codes Wine prints as numbers ("Unhandled exception 0x80000003 in thread 134").
EXCEPTION_NAMES: dict[int, str] = {
    0x80000002: "data type misalignment",
    0x80000003: "breakpoint",
    0x80000004: "single step",
    0xC0000005: "page fault",
    0xC000001D: "illegal instruction",
    0xC0000025: "noncontinuable exception",
    0xC000008C: "array bounds",
    0xC0000094: "divide by zero",
    0xC0000095: "integer overflow",
    0xC0000096: "privileged instruction",
    0xC00000FD: "stack overflow",
    0xC0000374: "heap corruption",
    0xC0000409: "stack buffer overrun",
    0xE06D7363: "C++ exception",
}

# What the two messages call an exception -> one phrase, so both forms give one title.
_SYNONYMS = {
    "division by zero": "divide by zero",
    "integer divide by zero": "divide by zero",
    "overflow": "integer overflow",
    "alignment": "data type misalignment",
    "^c": "control-c",
    "assertion failed": "assertion failure",
}

# "wine: Unhandled page fault on read access to 0000000000000000 at address 00000002B5C61067 (thread 0108), ..."
_WINE_LINE = re.compile(
    r"^(?:wine: )?(?P<what>Unhandled .+?|Unimplemented function \S+ called|Assertion failed|"
    r"Critical section \S+ wait failed)"
    r" at address (?:0x)?(?P<addr>[0-9A-Fa-f]+)(?: \(thread (?P<thread>[0-9A-Fa-f]+)\))?"
)
# "Unhandled exception: page fault on read access to 0x0000000000000000 in 64-bit code (0x00000140001599)."
_DBG_LINE = re.compile(
    r"^Unhandled exception: (?P<what>.+?) in (?:\d+-bit|vm86|16-bit) code \((?:0x)?(?P<addr>[0-9A-Fa-f]+)\)"
)
# "=>0 0x00000140001599 KspOpFinish+0x7() [Z:\src\drv.c:3] in hilsockc (0x00000000c812e0)"
# "  1 0x000001400013da in ucrash (+0x13da) (0x00000000c81360)"
_FRAME = re.compile(
    r"^\s*(?:=>)?\s*\d+\s+0x[0-9A-Fa-f]+\s+(?P<sym>.*?)\s*\bin (?P<module>\S+)"
    r"(?: \((?P<inner>[^()]*)\))? \((?:0x)?[0-9A-Fa-f]+\)\s*$"
)
_SYMBOL = re.compile(r"^(?P<func>[A-Za-z_?@$][\w?@$:<>~.]*?)(?:\+0x[0-9A-Fa-f]+)?(?:\(|\s|$)")
_MODULE_ROW = re.compile(r"^(?:PE|ELF|DLL)\s+(?P<lo>[0-9A-Fa-f]+)-(?P<hi>[0-9A-Fa-f]+)\s+\S+\s+(?P<name>\S+)\s*$")
_LOADDLL = re.compile(r'trace:loaddll:\w+ Loaded L"(?P<path>[^"]+)" at (?P<base>[0-9A-Fa-f]+)')
_ACCESS = re.compile(r"^(?:Unhandled )?(?P<kind>page fault)(?: on (?P<op>read|write|execute) access to \S+)?$")
_CODE = re.compile(r"^(?:Unhandled )?exception (?:0x)?(?P<code>[0-9A-Fa-f]{8})(?: in thread \S+)?$")
_STUB = re.compile(r"^(?:Unimplemented|unimplemented) function (?P<name>\S+) called$")
_CXX = re.compile(r"^C\+\+ exception\(.*\)$")
_STUB_CALL = re.compile(r"^(?:wine: )?Call from \S+ to unimplemented function \S+, aborting")
_CRITSEC = re.compile(r"^(?:wait failed on critical section|Critical section)\b.*$", re.IGNORECASE)
_SECTION_END = ("Modules:", "Threads:", "System information:")
_SAME_CRASH_LINES = 400  # winedbg's block follows Wine's line within this many lines
_MAX_MODULE_SPAN = 0x4000000  # loaddll gives bases only: an offset beyond this is not in the module


@dataclass(frozen=True)
class _Frame:
    module: str
    function: str  # "" without a symbol
    offset: str  # "+0x1067" when Wine printed the module-relative offset


def describe_exception(what: str) -> str:
    """The exception as a title phrase, addresses dropped: ``page fault on read access``,
    ``illegal instruction``, ``breakpoint``, ``call to unimplemented function ntoskrnl.exe.X``."""
    what = what.strip().rstrip(".")
    if what.startswith("Unhandled "):
        what = what[len("Unhandled ") :]
    m = _ACCESS.match(what)
    if m:
        return f"page fault on {m.group('op')} access" if m.group("op") else "page fault"
    m = _CODE.match(what) or re.fullmatch(r"0x(?P<code>[0-9A-Fa-f]{8})", what)
    if m:
        code = int(m.group("code"), 16)
        return EXCEPTION_NAMES.get(code, f"exception 0x{code:08X}")
    m = _STUB.match(what)
    if m:
        return f"call to unimplemented function {m.group('name')}"
    if _CXX.match(what):
        return "C++ exception"
    if _CRITSEC.match(what):
        return "wait failed on critical section"
    what = what[0].lower() + what[1:] if what else what
    return _SYNONYMS.get(what, what)


def _module_name(name: str) -> str:
    """``C:\\windows\\system32\\drivers\\hilsockc.sys`` / ``hilsockc.sys`` / ``HilSockC`` -> ``hilsockc``."""
    base = re.split(r"[\\/]", name)[-1].lower()
    return re.sub(r"\.(?:sys|dll|exe|drv)$", "", base)


def _frames(lines: list[str]) -> list[_Frame]:
    """The frames after the first ``Backtrace:`` line."""
    out: list[_Frame] = []
    start = next((i for i, line in enumerate(lines) if line.strip() == "Backtrace:"), None)
    if start is None:
        return out
    for line in lines[start + 1 :]:
        m = _FRAME.match(line)
        if m is None:
            break
        module = _module_name(m.group("module"))
        sym, inner = m.group("sym"), (m.group("inner") or "").strip()
        function, offset = "", ""
        if inner.startswith("+0x"):
            offset = inner
        elif inner:  # "in hilsockc (KspOpFinish+0x23)"
            sm = _SYMBOL.match(inner)
            function = sm.group("func") if sm else ""
        if sym:
            sm = _SYMBOL.match(sym)
            function = function or (sm.group("func") if sm else "")
        out.append(_Frame(module, function, offset))
    return out


def _guilty_frame(frames: list[_Frame]) -> _Frame | None:
    for frame in frames:
        if frame.module not in SYSTEM_MODULES:
            return frame
    return frames[0] if frames else None


def _modules(text_before: str, block: list[str]) -> list[tuple[int, int | None, str]]:
    """(base, end or None, name) of the modules the log names: winedbg's list, loaddll lines."""
    mods: list[tuple[int, int | None, str]] = []
    for line in block:
        m = _MODULE_ROW.match(line.strip())
        if m:
            mods.append((int(m.group("lo"), 16), int(m.group("hi"), 16), _module_name(m.group("name"))))
    for m in _LOADDLL.finditer(text_before):
        mods.append((int(m.group("base"), 16), None, _module_name(m.group("path"))))
    return mods


def _locate(address: int, mods: list[tuple[int, int | None, str]]) -> tuple[str, int] | None:
    """(module, offset) of ``address``: a module whose range holds it, else the nearest
    loaddll base below it (within :data:`_MAX_MODULE_SPAN`)."""
    for base, end, name in mods:
        if end is not None and base <= address < end:
            return name, address - base
    below = [(base, name) for base, end, name in mods if end is None and base <= address]
    if not below:
        return None
    base, name = max(below)
    return (name, address - base) if address - base < _MAX_MODULE_SPAN else None


def _block_end(lines: list[str], start: int) -> int:
    """Index after the last line of winedbg's block that starts at ``start`` (registers, stack,
    backtrace and the disassembled faulting instruction; the module and thread lists stay out)."""
    i = start + 1
    while i < len(lines):
        s = lines[i].strip()
        if s in _SECTION_END or s.startswith(_SECTION_END):
            return i
        if _WINE_LINE.match(s) or _DBG_LINE.match(s):
            return i
        i += 1
    return i


def _module_rows(lines: list[str], start: int) -> list[str]:
    """winedbg's ``Modules:`` rows after ``start`` (up to the next section)."""
    for i in range(start, min(len(lines), start + 50)):
        if lines[i].strip() == "Modules:":
            rows = []
            for line in lines[i + 1 :]:
                if line.strip() in ("Threads:", "System information:") or _WINE_LINE.match(line):
                    break
                rows.append(line)
            return rows
    return []


def parse(text: str) -> list[Report]:
    """Every unhandled exception in a Wine debug log, in order (see the module docstring)."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    plain = [line.rstrip("\r\n") for line in lines]
    reports: list[Report] = []
    i = 0
    while i < len(plain):
        wine_m = _WINE_LINE.match(plain[i])
        dbg_m = None if wine_m else _DBG_LINE.match(plain[i])
        if wine_m is None and dbg_m is None:
            i += 1
            continue
        first = i - 1 if i > 0 and wine_m and _STUB_CALL.match(plain[i - 1]) else i
        block_start = i if dbg_m else _debugger_block(plain, i)
        last = i + 1
        frames: list[_Frame] = []
        module_rows: list[str] = []
        if block_start is not None:
            last = _block_end(plain, block_start)
            frames = _frames(plain[block_start:last])
            module_rows = _module_rows(plain, last)
            dbg_m = dbg_m or _DBG_LINE.match(plain[block_start])
        # Wine's own line names stubs and numbered exceptions best: it wins when both are there
        found = wine_m or dbg_m
        assert found is not None
        what = describe_exception(found.group("what"))
        address = int(found.group("addr"), 16)
        title, function = _name(what, address, frames, _modules(text[: offsets[first]], module_rows))
        reports.append(
            Report(
                title=title,
                kind=CrashKind.WINE,
                function=function,
                start=offsets[first],
                end=offsets[last],
                text="".join(lines[first:last]),
            )
        )
        i = last
    return reports


def _debugger_block(lines: list[str], at: int) -> int | None:
    """Where winedbg's ``Unhandled exception:`` block for Wine's line at ``at`` starts, if the
    log has it (before the next crash Wine reports)."""
    for j in range(at + 1, min(len(lines), at + _SAME_CRASH_LINES)):
        if _WINE_LINE.match(lines[j]):
            return None
        if _DBG_LINE.match(lines[j]):
            return j
    return None


def _name(what: str, address: int, frames: list[_Frame], mods: list[tuple[int, int | None, str]]) -> tuple[str, str]:
    """(title, function) from the exception, its address, the backtrace and the modules."""
    frame = _guilty_frame(frames)
    where = function = ""
    if frame is not None:
        if frame.function:
            function, where = frame.function, f"{frame.module}!{frame.function}"
        elif frame.offset:
            function, where = f"{frame.module}{frame.offset}", f"{frame.module}!{frame.offset}"
        else:
            function = where = frame.module
    elif not what.startswith("call to unimplemented function"):
        # (a stub's address is Wine's thunk, not its caller: only a backtrace names the caller)
        located = _locate(address, mods)
        if located is not None:
            name, offset = located
            function, where = f"{name}+0x{offset:x}", f"{name}!+0x{offset:x}"
    return f"Wine: unhandled {what}" + (f" in {where}" if where else ""), function
