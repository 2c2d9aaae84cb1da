"""Small text helpers shared by the crash parsers: console prefixes, frames, title normalisation."""

from __future__ import annotations

import re

# ``<6>[  12.345678][ T123] `` and friends: printk level, timestamp, caller id (task or CPU).
_PREFIX_RE = re.compile(
    r"^(?:\*\* \d+ printk messages dropped \*\* ?)?(?:.* login: )?(?:<\d+>)?"
    r"\[ *(?P<time>\d+\.\d+)\](?:\[ *(?P<ctx>[CT]\d+)\])? ?"
)

# Compiler-generated clone suffixes: foo.isra.0, foo.constprop.3, foo.part.1, foo.cold.12...
_SUFFIX_RE = re.compile(r"(?:\.(?:isra|constprop|part|cold|llvm|lto_priv|localalias|specialized)(?:\.\d+)?|\.\d+)+$")
_OFFSET_RE = re.compile(r"\+0x[0-9a-f]+(?:/0x[0-9a-f]+)?$")

_HEX_RE = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-f]{8,}\b")
# Digit runs; short ones glued to a word (x86, ipv6, ext4, i2c) are part of a name and stay.
_NUM_RE = re.compile(r"(?<![A-Za-z0-9_])\d+|(?<=[A-Za-z_])\d{3,}")


def split_prefix(line: str) -> tuple[str, str]:
    """Split a console line into ``(context, message)``.

    ``context`` is the caller id (``"T123"``, ``"C1"``) when the kernel prints one,
    ``"console"`` for a kernel line with a timestamp only, ``""`` for a line without a
    timestamp (user space output, a line cut by the console).
    """
    line = line.rstrip("\r")
    m = _PREFIX_RE.match(line)
    if m is None:
        return "", line
    return (m.group("ctx") or "console"), line[m.end() :]


def console_time(line: str) -> float | None:
    """The printk timestamp of a console line in seconds since boot, or None without one."""
    m = _PREFIX_RE.match(line)
    return float(m.group("time")) if m else None


def function_name(symbol: str) -> str:
    """``func.isra.0+0x12/0x40`` -> ``func``: strip offsets and compiler clone suffixes."""
    symbol = _OFFSET_RE.sub("", symbol.strip())
    return _SUFFIX_RE.sub("", symbol)


def normalize_text(text: str) -> str:
    """Replace addresses by ``ADDR`` and numbers by ``NUM`` in the descriptive part of a title."""
    text = _HEX_RE.sub("ADDR", text)
    text = _NUM_RE.sub("NUM", text)
    return " ".join(text.split())
