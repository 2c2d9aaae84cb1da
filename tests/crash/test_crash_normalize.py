"""Normalisation: console prefixes, frame names, numbers in titles."""

from __future__ import annotations

import pytest

from hil.crash import parse
from hil.crash.normalize import function_name, normalize_text, split_prefix


@pytest.mark.parametrize(
    "symbol, name",
    [
        ("func+0x12/0x40", "func"),
        ("tabledist.part.0+0x22a/0x2a0", "tabledist"),
        ("check_cpu_stall.isra.56.cold.75+0x289/0x4b7", "check_cpu_stall"),
        ("kvm_arch_vcpu_ioctl_run.constprop.0", "kvm_arch_vcpu_ioctl_run"),
        ("__warn.cold+0x14/0x35", "__warn"),
        ("do_one_initcall", "do_one_initcall"),
        ("udp4_lib_lookup2+0x10/0x20", "udp4_lib_lookup2"),
    ],
)
def test_function_name(symbol, name):
    assert function_name(symbol) == name


@pytest.mark.parametrize(
    "line, ctx, msg",
    [
        ("[   12.345678] BUG: foo", "console", "BUG: foo"),
        ("[  584.319520][   T31] INFO: task", "T31", "INFO: task"),
        ("[   44.381969][    C4]  BUG: KCSAN", "C4", " BUG: KCSAN"),
        ("<6>[   85.501187] WARNING: foo\r", "console", "WARNING: foo"),
        ("Begin: Loading essential drivers ... done.", "", "Begin: Loading essential drivers ... done."),
    ],
)
def test_split_prefix(line, ctx, msg):
    assert split_prefix(line) == (ctx, msg)


def test_normalize_text_keeps_names_and_replaces_numbers():
    assert (
        normalize_text("executor 4 failed 11 times: mkdir ./testdir264563108")
        == "executor NUM failed NUM times: mkdir ./testdirNUM"
    )
    assert normalize_text("at addr ffff8801c1a87d48 in ext4 ipv6 x86") == "at addr ADDR in ext4 ipv6 x86"
    assert normalize_text("0x3b") == "ADDR"


def _warning(offset: str, addr: str, pid: int) -> str:
    return f"""[  100.{pid:06d}] WARNING: CPU: 1 PID: {pid} at drivers/net/hil.c:{pid % 900} hil_xmit{offset}
[  100.{pid:06d}] Modules linked in: hil(OE)
[  100.{pid:06d}] RIP: 0010:hil_xmit{offset}
[  100.{pid:06d}] RSP: 0018:{addr} EFLAGS: 00010246
[  100.{pid:06d}] Call Trace:
[  100.{pid:06d}]  <TASK>
[  100.{pid:06d}]  dev_hard_start_xmit+0x8f/0x1e0
[  100.{pid:06d}]  __dev_queue_xmit+0x274/0xd30
[  100.{pid:06d}]  </TASK>
[  100.{pid:06d}] ---[ end trace 0000000000000000 ]---
"""


def test_same_bug_same_title_whatever_addresses_and_suffixes():
    a = parse(_warning(".isra.0+0x12/0x40", "ffffb4e7c04bfd78", 731))
    b = parse(_warning(".constprop.3+0x1a/0x80", "ffffb4e7c05aa000", 9))
    c = parse(_warning(".cold+0x5/0x7", "ffff000000000000", 12345))
    assert a.title == b.title == c.title == "WARNING in hil_xmit"
    assert a.kind == "WARNING" and a.function == "hil_xmit" and not a.corrupted
