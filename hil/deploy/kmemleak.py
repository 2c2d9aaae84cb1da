"""Memory a module leaked, found by the kernel's kmemleak once the module is unloaded.

A kernel built with ``CONFIG_DEBUG_KMEMLEAK`` (the debug flavour of the guest) keeps the
allocation backtrace of every object and, on ``echo scan > /sys/kernel/debug/kmemleak``, lists
the objects nothing points to any more.  A module that allocates and never frees shows there
once it is unloaded (its data no longer holds the pointers)::

    code = module_code(guest, "mymod", ko)      # before rmmod: where its functions are
    unload_module(guest, "mymod")
    reports = find_leaks(guest, [code], wait_s=...)   # "memory leak in mymod_open", ...

How kmemleak decides (``mm/kmemleak.c``), and what that makes reliable:

- an object is reported only when it is at least :data:`MIN_AGE_S` old at the start of a scan
  (``MSECS_MIN_AGE``: a pointer may sit in a register for a while), and
- only when its contents did not change since the previous scan (the first scan that sees an
  object records its checksum), so it takes two scans, the second one :data:`MIN_AGE_S` after
  the allocation: every allocation by a module's code happened before its ``rmmod`` returned.

After ``rmmod`` the kernel can no longer name the module's frames: kmemleak prints the bare
address (``[<hash>] 0xffffffffc0a3b0e5``).  So :func:`module_code` records, while the module is
loaded, the address of each of its sections (``/sys/module/<m>/sections``, one command) and
:func:`find_leaks` names those addresses from the ``.ko``'s own symbol table (its ``module_init``
function too, whose code the kernel frees after loading); a module whose ``.ko`` is not known
here is named from ``/proc/kallsyms`` instead.  A leak is the module's when a frame of its
backtrace is in the module's code; it is named by the crash detector like any kmemleak report
(:mod:`hil.crash`: ``memory leak in <first frame past the allocators>``).

Without kmemleak (a stock kernel) none of this runs: :func:`module_code` costs one ``test -e``.
"""

from __future__ import annotations

import bisect
import re
import shlex
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from hil.crash import parse
from hil.crash.kinds import CrashKind
from hil.crash.report import Report
from hil.errors import GuestError

KMEMLEAK = "/sys/kernel/debug/kmemleak"
MIN_AGE_S = 5.0  # kmemleak's MSECS_MIN_AGE: younger objects are never reported
AGE_MARGIN_S = 0.5  # host and guest clocks, the agent's round trip
SCAN_TIMEOUT_S = 600.0  # a scan reads all of the guest's memory: long under TCG with KASAN

_OBJECT = re.compile(r"^unreferenced object 0x[0-9a-f]+ \(size \d+\):", re.M)
# "    [<00000000c2d1a7f3>] hil_crash_leak+0x35/0x80 [hil_crash]", after rmmod
# "    [<00000000c2d1a7f3>] 0xffffffffc0a3b0e5"
_FRAME = re.compile(r"^(?P<lead>\s*\[<[0-9a-f]+>\]\s+)(?P<sym>\S+)(?P<rest>.*)$")
_BARE = re.compile(r"0x(?P<addr>[0-9a-f]+)$")
_MODULE_SUFFIX = re.compile(r"\[(?P<mod>[\w-]+)\]\s*$")

_ALIASES = ("init_module", "cleanup_module")  # what module_init()/module_exit() alias
_SHT_SYMTAB = 2
_STT_FUNC = 2
_SHN_LORESERVE = 0xFF00


@dataclass(frozen=True)
class ModuleCode:
    """Where a loaded module's functions are: ``(start, end, name)`` sorted by address."""

    name: str
    functions: tuple[tuple[int, int, str], ...]

    def symbol(self, address: int) -> str | None:
        """``f+0x1a/0x40`` for an address inside one of the module's functions, else None."""
        i = bisect.bisect_right([f[0] for f in self.functions], address) - 1
        if i < 0:
            return None
        start, end, name = self.functions[i]
        if not start <= address < end:
            return None
        return f"{name}+{address - start:#x}/{end - start:#x}"


def ko_functions(ko: Path) -> list[tuple[str, int, int, str]]:
    """The functions of a ``.ko`` (64-bit little-endian ELF relocatable, as x86_64 modules
    are): ``(section, offset in it, size, name)``."""
    data = Path(ko).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    try:
        (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQII", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
        shstr_off = sections[e_shstrndx][4]

        def cstring(off: int) -> str:
            return data[off : data.index(b"\0", off)].decode(errors="replace")

        names = [cstring(shstr_off + s[0]) for s in sections]
        out: list[tuple[str, int, int, str]] = []
        for _n, sh_type, _f, _a, off, size, link, _i in sections:
            if sh_type != _SHT_SYMTAB:
                continue
            strtab_off = sections[link][4]
            for pos in range(off, off + size, 24):
                st_name, st_info, _o, st_shndx, st_value, st_size = struct.unpack_from("<IBBHQQ", data, pos)
                if st_info & 0xF != _STT_FUNC or not st_size or not 0 < st_shndx < _SHN_LORESERVE:
                    continue
                out.append((names[st_shndx], st_value, st_size, cstring(strtab_off + st_name)))
        return out
    except (struct.error, ValueError, IndexError):
        return []


class NoKmemleak(GuestError):
    """The guest's kernel has no ``/sys/kernel/debug/kmemleak``, or kmemleak turned itself off
    (its object pool ran out, an internal error: it then refuses to scan)."""


def module_code(guest, name: str, ko: Path | None = None) -> ModuleCode | None:
    """Where the loaded module ``name``'s functions are (named from ``ko``'s symbol table, else
    from ``/proc/kallsyms``), or None when it is not loaded.  One guest command; raises
    :class:`NoKmemleak` when the kernel has no kmemleak (then that command was a ``test -e``)."""
    name = name.replace("-", "_")  # the kernel's name (sysfs, kallsyms): my-mod.ko is my_mod
    quoted = shlex.quote(name)
    cmd = f"test -e {KMEMLEAK} || exit 3; grep -Hs . /sys/module/{quoted}/sections/.*"
    if ko is None:
        cmd += f"; echo ===; grep -F {shlex.quote(f'[{name}]')} /proc/kallsyms"
    res = guest.run(cmd, timeout=60)
    if res.exit_code == 3:
        raise NoKmemleak(f"{KMEMLEAK} does not exist")
    text = res.stdout.decode(errors="replace")
    sections_text, _, kallsyms = text.partition("===\n")
    bases: dict[str, int] = {}
    for line in sections_text.splitlines():
        path, _, value = line.rpartition(":")
        if path and value.startswith("0x"):
            bases[path.rsplit("/", 1)[-1]] = int(value, 16)
    if not bases:
        return None
    functions: dict[int, tuple[int, int, str]] = {}
    if ko is not None:
        found = [
            (bases[section] + offset, bases[section] + offset + size, fn)
            for section, offset, size, fn in ko_functions(ko)
            if section in bases
        ]
    else:
        found = _kallsyms_functions(kallsyms)
    for start, end, fn in found:  # one name per address: hil_crash_init, not its alias init_module
        if start not in functions or functions[start][2] in _ALIASES:
            functions[start] = (start, end, fn)
    return ModuleCode(name, tuple(sorted(functions.values())))


def _kallsyms_functions(text: str) -> list[tuple[int, int, str]]:
    """Functions from ``/proc/kallsyms`` lines of one module (each ends where the next symbol
    starts; the last one gets 4 KiB: kallsyms says no sizes)."""
    starts: list[tuple[int, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("t", "T"):
            try:
                starts.append((int(parts[0], 16), parts[2]))
            except ValueError:
                continue
    starts.sort()
    out = []
    for i, (start, fn) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else start + 4096
        out.append((start, end, fn))
    return out


def module_leaks(text: str, modules: list[ModuleCode]) -> list[Report]:
    """The objects of a kmemleak listing (``cat /sys/kernel/debug/kmemleak``) allocated by the
    code of ``modules``, each named by the crash detector (``memory leak in f``).  A frame is the
    module's when it carries the module's ``[name]`` or is a bare address inside its code (which
    is then named in the report's text)."""
    names = {m.name for m in modules}
    starts = [m.start() for m in _OBJECT.finditer(text)]
    reports: list[Report] = []
    for i, start in enumerate(starts):
        block = text[start : starts[i + 1] if i + 1 < len(starts) else len(text)]
        lines, ours = [], False
        for line in block.splitlines():
            m = _FRAME.match(line)
            if m:
                sym, rest = m.group("sym"), m.group("rest")
                bare = _BARE.match(sym)
                if bare:
                    named = _name(int(bare.group("addr"), 16), modules)
                    if named:
                        line, ours = f"{m.group('lead')}{named}{rest}", True
                else:
                    suffix = _MODULE_SUFFIX.search(rest)
                    ours = ours or bool(suffix and suffix.group("mod") in names)
            lines.append(line)
        if not ours:
            continue
        excerpt = "\n".join(lines).rstrip("\n") + "\n"
        rep = parse(excerpt)
        if rep is None or rep.kind is not CrashKind.LEAK:  # not a kmemleak object after all
            continue
        reports.append(rep)
    return reports


def _name(address: int, modules: list[ModuleCode]) -> str | None:
    for code in reversed(modules):  # the latest load, if one address served two
        sym = code.symbol(address)
        if sym:
            return f"{sym} [{code.name}]"
    return None


def scan(guest, *, wait_s: float) -> str:
    """Two kmemleak scans ``wait_s`` seconds apart (the second one reports what the first one
    saw unchanged), then the listing; the listing is cleared after reading, so the next check
    sees only new suspects.  Raises :class:`NoKmemleak` when kmemleak has turned itself off."""
    first = guest.run(f"echo scan > {KMEMLEAK}", timeout=SCAN_TIMEOUT_S)
    if first.exit_code != 0:
        raise NoKmemleak(f"kmemleak refuses to scan: {first.stderr.decode(errors='replace').strip()}")
    if wait_s > 0:
        time.sleep(wait_s)
    res = guest.run(f"echo scan > {KMEMLEAK} && cat {KMEMLEAK} && echo clear > {KMEMLEAK}", timeout=SCAN_TIMEOUT_S)
    res.check()
    return res.stdout.decode(errors="replace")


def find_leaks(guest, modules: list[ModuleCode], *, wait_s: float = 0.0) -> tuple[list[Report], str]:
    """Scan (see :func:`scan`) and return the leaks of ``modules``' code, with the listing."""
    text = scan(guest, wait_s=wait_s)
    return module_leaks(text, modules), text
