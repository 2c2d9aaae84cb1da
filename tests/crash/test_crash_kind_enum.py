"""The crash vocabulary (hil.crash.kinds): one enum of kinds, each fatal or not."""

from __future__ import annotations

import json

import pytest

from hil.crash import bugcheck, linux_table
from hil.crash.kinds import DESCRIPTIONS, NON_FATAL, CrashKind
from hil.crash.monitor import Crash, is_fatal
from hil.crash.report import Report


def test_every_table_kind_is_a_member():
    kinds = {f.kind for oops in linux_table.OOPSES for f in oops.formats}
    assert all(type(k) is CrashKind for k in kinds)
    assert kinds <= set(CrashKind)


def test_fatal_and_non_fatal_kinds():
    assert {k.value for k in CrashKind if not k.fatal} == {
        "WARNING",
        "REFCOUNT_WARNING",
        "LOCKDEP",
        "UBSAN",
        "KASAN",
        "KMSAN",
        "KCSAN",
        "KFENCE",
        "LEAK",
        "ATOMIC_SLEEP",
        "INFO",
    }
    for k in ("BUG", "PANIC", "GPF", "DIVIDE", "LOCKUP", "HANG", "SYZ_FAILURE", "BSOD", "WINE"):
        assert CrashKind(k).fatal
    assert NON_FATAL == {k for k in CrashKind if not k.fatal}


def test_every_kind_is_described():
    assert set(DESCRIPTIONS) == set(CrashKind)
    assert all(k.description and "\n" not in k.description for k in CrashKind)


def test_a_kind_is_its_name():
    """StrEnum: comparisons, f-strings, JSON and JUnit properties see the plain name."""
    assert CrashKind.PANIC == "PANIC" and "PANIC" == CrashKind.PANIC
    assert str(CrashKind.KASAN) == "KASAN" and f"{CrashKind.BSOD}" == "BSOD"
    assert json.dumps({"kind": CrashKind.WINE}) == '{"kind": "WINE"}'
    assert CrashKind("LOCKDEP") is CrashKind.LOCKDEP


def test_report_kind_is_converted_and_checked():
    r = Report(title="kernel panic: x", kind="PANIC")
    assert r.kind is CrashKind.PANIC and r.fatal and is_fatal(r)
    assert not Report(title="WARNING in f", kind=CrashKind.WARNING).fatal
    with pytest.raises(ValueError, match="unknown crash kind 'OOPS'; the kinds are: BUG, PANIC"):
        Report(title="x", kind="OOPS")


def test_bugcheck_reports_are_bsod():
    assert bugcheck.report(0xD1).kind is CrashKind.BSOD


def test_crash_txt_shows_the_plain_kind():
    r = Report(title="kernel BUG in f", kind=CrashKind.BUG, function="f", text="kernel BUG at f.c:1!\n")
    text = Crash(report=r, source="console", detected_at=0.0, final_at=0.0).describe()
    assert "kind: BUG\n" in text and "fatal: True" in text
