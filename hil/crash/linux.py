"""Naming a Linux crash report: header matching, stack frames, guilty function, title.

The rows live in :mod:`hil.crash.linux_table`; this module only interprets them.  Collecting
the lines of a report from a console stream is :mod:`hil.crash.stream`'s job.

:class:`BootTracker` tells an unexpected reboot from the first boot on a console.

Frame parsing is public so that everything reading a Linux stack uses one parser:
:func:`frame_of` (one line), :func:`rip_function` (the faulting instruction's function) and
:func:`interrupted_function` (what an NMI caught a CPU doing: the crash monitor names a hang
after it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from hil.crash import linux_table as table
from hil.crash.kinds import CrashKind
from hil.crash.normalize import console_time, function_name, normalize_text, split_prefix

_LEADS = re.compile(table.HEADER_LEADS)
_MIDLINE_TS = re.compile(r"\[ *\d+\.\d+\](?:\[ *[CT]\d+\])? ")
_STACK_START = re.compile(table.STACK_START)
_END = re.compile(table.END_MARKERS)
_FOLLOW_UPS = re.compile("|".join(table.FOLLOW_UPS))
_SEPARATOR = re.compile(r"^={20,}\s*$")

_FN = r"[A-Za-z_][\w.]*"
_FRAME = re.compile(
    r"^\s*(?:<(?:IRQ|EOI|NMI)>\s*)?(?:\[<?[0-9a-fx]+>?\]\s*){0,2}(?:[0-9]+:)?(?P<func>" + _FN + r")"
    r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+|\s+\S+\.[chsS]:\d+(?::\d+)?\s+\[inline\])"
)
_QUESTIONABLE_FRAME = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?\?\s+(?P<func>" + _FN + r")\+0x")
_ARM_FRAME = re.compile(r"^\s*\[<[0-9a-f]+>\] \((?P<func>" + _FN + r")(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?\) from")
_QUESTIONABLE = re.compile(r"^\s*(?:<(?:IRQ|EOI|NMI)>\s*)?(?:\[<[0-9a-f]+>\]\s*)?\?\s|^.*\(unreliable\)\s*$")
_RIP = re.compile(
    r"(?:^RIP: [0-9a-f]{4}:|^EIP: (?:[0-9a-f]{4}:)?|^IP: |PC is at |^pc : |^NIP \[[0-9a-f]+\] |^epc\s*: )"
    r"(?:\[<[0-9a-f]+>\]\s*){0,2}(?:[0-9]+:)?(?P<func>" + _FN + r")\+0x"
)
_TOKEN = re.compile(
    r"(?:\[<[0-9a-f]+>\] +)?(?P<func>" + _FN + r")\+0x[0-9a-f]+/0x[0-9a-f]+|\[<[0-9a-f]+>\] +(?P<func2>" + _FN + r")"
    r"|at: (?P<func3>" + _FN + r") \S+:\d+"
)
_NEUTRAL = re.compile(
    r"^\s*(?:</?(?:IRQ|TASK|NMI|EOI|SOFTIRQ)>|Code:|R[A-Z0-9]{1,2}: |[A-Z]S: |CR\d: |DR\d: |E?FLAGS|ORIG_RAX|"
    r"irq event stamp|hardirqs last|softirqs last|lr : |sp : |x\d+ : |r\d+ ?: ?[0-9a-f]|\? |Exception stack|Modules linked in|"
    r"LR = |--- interrupt:)"
)
_TIMESTAMP_IN_TITLE = re.compile(r"\[ *\d+\.\d+\]")
_FIRMWARE_BANNER = re.compile(table.FIRMWARE_BANNERS)
_KERNEL_BANNER = re.compile(table.KERNEL_BANNERS)
_BOOTED = re.compile(table.BOOTED_MARKERS)


@dataclass(frozen=True)
class Description:
    """What :func:`describe` found: the title and where it came from."""

    title: str
    kind: CrashKind
    function: str
    corrupted: bool
    fmt: table.Format


@cache
def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_SKIP = re.compile("|".join(table.SKIP_FRAMES))
_ANCHORS = re.compile("|".join(table.STALL_ANCHORS))


def _skipped(func: str, extra: tuple[str, ...]) -> bool:
    return bool(_SKIP.search(func)) or bool(extra and _re("|".join(extra)).search(func))


def match_header(message: str) -> tuple[table.Oops, str] | None:
    """The crash header that starts ``message`` (after a console prefix), and the message
    from the header on; also tries headers glued after another line's timestamp."""
    lead = _LEADS.match(message)
    starts = [lead.end() if lead else 0]
    starts += [m.end() for m in _MIDLINE_TS.finditer(message)]
    for start in starts:
        text = message[start:]
        for oops in table.OOPSES:
            if _re(oops.header).match(text) and not any(_re(i).search(text) for i in oops.ignores):
                return oops, text.rstrip()
    return None


def is_follow_up(message: str) -> bool:
    """A header that belongs to the report before it (``Kernel panic`` after an oops)."""
    return bool(_FOLLOW_UPS.search(message))


def continues(message: str, header: str) -> bool:
    """``message`` is a header that continues the report whose header line is ``header``, when
    it comes right after it (kmemleak's ``unreferenced object`` after ``BUG: memory leak``)."""
    found = match_header(message)
    return found is not None and bool(found[0].continues) and bool(_re(found[0].continues).match(header))


def is_end(message: str, lines_so_far: int) -> bool:
    """The line closes a report (``---[ end trace``, KASAN's closing ``====`` line)."""
    return bool(_END.search(message)) or (lines_so_far > 3 and bool(_SEPARATOR.match(message)))


def frame_of(message: str) -> str | None:
    """The function of a stack-frame line, or None (questionable ``? f`` frames are None)."""
    if _QUESTIONABLE.match(message):
        return None
    m = _FRAME.match(message) or _ARM_FRAME.match(message)
    if m:
        return m.group("func")
    m = _RIP.search(message)
    return m.group("func") if m else None


def _questionable_frame(message: str) -> str | None:
    """The function of a ``? f+0x1/0x2`` frame line, or None."""
    m = _QUESTIONABLE_FRAME.match(message)
    return m.group("func") if m else None


def is_neutral(message: str) -> bool:
    """Lines that may sit inside a stack trace without ending it (registers, markers)."""
    return bool(_NEUTRAL.match(message)) or not message.strip()


def _trace_frames(lines: list[str], implicit: bool = False) -> list[str]:
    for i, line in enumerate(lines):
        if _STACK_START.search(line):
            return _frames_from(lines[i + 1 :])
    # KMSAN, KFENCE: the stack follows the header without a "Call Trace:" line.
    return _frames_from(lines[1:]) if implicit else []


def _frames_from(lines: list[str]) -> list[str]:
    frames: list[str] = []
    misses = 0
    for line in lines:
        func = frame_of(line)
        if func:
            frames.append(func)
            misses = 0
            continue
        if _QUESTIONABLE.match(line) or is_neutral(line):
            continue
        if frames and _STACK_START.search(line):
            break
        # Tolerate two foreign lines inside a trace (another printk cut in).
        misses += 1
        if misses > (2 if frames else 5):
            break
    return frames


def has_trace(lines: list[str], implicit: bool = False) -> bool:
    return bool(_trace_frames(lines, implicit))


_LOCK_SITE = re.compile(r"\bat: ")


def _after(lines: list[str], trigger: str, span: int | None = None, sites: bool = False) -> list[str]:
    """Functions from the first line matching ``trigger`` on (``span`` lines after it at most;
    with ``sites``, only the lock-site lines that directly follow it)."""
    rx = _re(trigger)
    out: list[str] = []
    for i, line in enumerate(lines):
        m = rx.search(line)
        if not m:
            continue
        first = line[m.end() :]
        rest = lines[i + 1 :] if span is None else lines[i + 1 : i + 1 + span]
        if sites:
            first, count = "", 0
            while count < len(rest) and _LOCK_SITE.search(rest[count]):
                count += 1
            rest = rest[:count]
        for text in [first] + rest:
            if _QUESTIONABLE.match(text):
                continue
            func = frame_of(text)
            if func:
                out.append(func)
                continue
            for t in _TOKEN.finditer(text):
                out.append(t.group("func") or t.group("func2") or t.group("func3"))
        return out
    return out


def _rip(lines: list[str]) -> list[str]:
    func = rip_function(lines)
    return [func] if func else []


def rip_function(lines: list[str]) -> str | None:
    """The function of the first faulting-instruction line (``RIP: 0010:f+0x1/0x2``,
    ``pc : f+...``, ``PC is at f``) in prefix-free ``lines``, as printed (offset stripped)."""
    for line in lines:
        m = _RIP.search(line)
        if m:
            return m.group("func")
    return None


_INTERRUPTED_GENERIC = re.compile("|".join(table.INTERRUPTED_GENERIC))
_TRACE_CLOSE = ("</TASK>", "</IRQ>")


def interrupted_function(text: str) -> str:
    """The function an NMI caught the CPU in, from console ``text`` (prefixes allowed): the
    faulting-instruction line's function, then the interrupted context's frames (after
    ``</NMI>``, up to ``</TASK>``/``</IRQ>``), skipping what a spinning CPU merely sits in
    (:data:`~hil.crash.linux_table.INTERRUPTED_GENERIC`: clock reads, delays, idle loops);
    the first candidate when all are generic, ``""`` when there is none."""
    lines = [split_prefix(line)[1] for line in text.splitlines()]
    candidates: list[str] = []
    rip = rip_function(lines)
    if rip:
        candidates.append(rip)
    ends = [i for i, line in enumerate(lines) if line.strip() == "</NMI>"]
    if ends:
        interrupted: list[str] = []
        for line in lines[ends[0] + 1 :]:
            if line.strip() in _TRACE_CLOSE:
                break
            interrupted.append(line)
        reliable = [f for f in map(frame_of, interrupted) if f]
        # An NMI in a retpoline thunk leaves the unwinder nothing reliable: every frame is
        # "? f", read off the stack from the top, so the thunk's caller comes first.
        candidates += reliable or [f for f in map(_questionable_frame, interrupted) if f]
    names = [function_name(c) for c in candidates]
    for name in names:
        if not _INTERRUPTED_GENERIC.match(name):
            return name
    return names[0] if names else ""


def _source(source: str, fmt: table.Format, groups: dict[str, str], lines: list[str]) -> list[str]:
    if source in ("header", "report"):
        return [groups["func"]] if groups.get("func") else []
    if source == "rip":
        return _rip(lines)
    if source == "trace":
        return _trace_frames(lines, fmt.implicit_stack)
    if source.startswith("after:"):
        return _after(lines, source[len("after:") :])
    if source.startswith("line:"):
        return _after(lines, source[len("line:") :], span=1)
    if source.startswith("sites:"):
        return _after(lines, source[len("sites:") :], sites=True)
    raise ValueError(f"unknown guilty-function source {source!r}")


def _candidates(fmt: table.Format, groups: dict[str, str], lines: list[str]) -> list[str]:
    frames: list[str] = []
    sources = fmt.guilty or (("header",) if groups.get("func") else ())
    for source in sources:
        if isinstance(source, tuple):  # alternatives: the first that yields frames
            for alternative in source:
                found = _source(alternative, fmt, groups, lines)
                if found:
                    frames += found
                    break
        else:
            frames += _source(source, fmt, groups, lines)
    return [function_name(f) for f in frames]


def _stall(frames: list[str]) -> str:
    if not frames:
        return ""
    prev = frames[0]
    for i, frame in enumerate(frames):
        for group, name in table.STALL_GROUPS:
            if frame.startswith(group):
                return name
        if _ANCHORS.search(frame) and i > 0:  # an anchor with nothing above it names nothing
            # A compat wrapper only translates arguments: name what it wraps.
            j = frames.index(prev)
            if "compat" in prev and j > 0 and not prev.startswith(table.STALL_STRIP_PREFIXES):
                prev = frames[j - 1]
            for prefix in table.STALL_STRIP_PREFIXES:
                if prev.startswith(prefix):
                    prev = prev[len(prefix) :]
            return prev
        prev = frame
    return ""


def _hang(frames: list[str]) -> str:
    for frame in frames:
        for anchor, name in table.HANG_ANCHORS:
            if frame.startswith(anchor):
                return name
    kept = [f for f in frames if not any(s in f for s in table.HANG_SKIP)]
    if not kept:
        return ""
    first = kept[0]
    # A public wrapper right above its implementation (do_foo / __foo called by foo) names it.
    following = frames[frames.index(first) + 1 :]
    for prefix in ("do_", "__"):
        if first.startswith(prefix) and following and following[0] == first[len(prefix) :]:
            return following[0]
    return first


def guilty_function(fmt: table.Format, groups: dict[str, str], lines: list[str]) -> str:
    """The guilty function of a report matched by ``fmt``, or ``""`` if none is found."""
    frames = [f for f in _candidates(fmt, groups, lines) if f and not _skipped(f, fmt.skip)]
    if fmt.extractor == "stall":
        return _stall(frames)
    if fmt.extractor == "hang":
        return _hang(frames)
    return frames[0] if frames else ""


def describe(oops: table.Oops, lines: list[str]) -> Description | None:
    """Name the report whose (prefix-free) lines are ``lines``, ``lines[0]`` the header.

    Returns None when no row applies (e.g. an unknown ``WARNING:`` line without a stack trace:
    user space prints those too).
    """
    header = lines[0]
    text = "\n".join(lines)
    for fmt in oops.formats:
        m = _re(fmt.title).match(header)
        if not m:
            continue
        groups = {k: v for k, v in m.groupdict().items() if v is not None}
        if fmt.report:
            rm = _re(fmt.report).search(text)
            if not rm:
                continue
            groups.update({k: v for k, v in rm.groupdict().items() if v is not None})
        traced = has_trace(lines, fmt.implicit_stack)
        if fmt.needs_trace and not traced:
            continue
        corrupted = fmt.corrupted or (not fmt.no_stack and not traced)
        func = ""
        if "{func}" in fmt.fmt:
            func = guilty_function(fmt, groups, lines)
            if not func and fmt.needs_func:
                continue
            if not func:
                corrupted = True
        values = {}
        for key, value in groups.items():
            if key == "func":
                continue
            value = normalize_text(value)
            if key in fmt.lower:
                value = "-".join(value.lower().split())
            values[key] = value
        title = fmt.fmt.format(func=func or "corrupted", **values)
        title = " ".join(title.split())
        if _TIMESTAMP_IN_TITLE.search(header):
            corrupted = True
        return Description(title, fmt.kind, func, corrupted, fmt)
    return None


class BootTracker:
    """Follows a console line by line and says when the guest starts booting again after it
    had booted: an unexpected reboot (see ``FIRMWARE_BANNERS`` in :mod:`hil.crash.linux_table`).

    A boot banner at the start of a log is the first boot; one after the log showed a booted
    guest (a line stamped ``BOOT_BANNER_MAX_S`` or later, a ``BOOTED_MARKERS`` line) is a reboot.
    Only the first banner of a new boot counts: the guest is booting again until it has booted.
    """

    def __init__(self) -> None:
        self.booted = False

    def line(self, raw: str, ctx: str, msg: str) -> bool:
        """Take one console line (``ctx``, ``msg``: its :func:`split_prefix`); True when it is
        the first sign of an unexpected reboot."""
        stamp = console_time(raw) if ctx else None
        if is_boot_banner(ctx, stamp, msg):
            rebooted, self.booted = self.booted, False
            return rebooted
        if (stamp is not None and stamp >= table.BOOT_BANNER_MAX_S) or _BOOTED.search(raw):
            self.booted = True
        return False


def is_boot_banner(ctx: str, stamp: float | None, message: str) -> bool:
    """``message`` (a console line without its prefix) is one only a booting machine prints:
    firmware or decompressor output (no timestamp), or the kernel's first lines (an early one)."""
    if not ctx:
        return bool(_FIRMWARE_BANNER.match(message))
    return stamp is not None and stamp < table.BOOT_BANNER_MAX_S and bool(_KERNEL_BANNER.match(message))
