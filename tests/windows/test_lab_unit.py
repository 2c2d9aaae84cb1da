"""The Windows lab guest without Windows: its bug-check naming and its spec's guards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hil.guest import windows_lab
from hil.provision.spec import GuestSpec

pytestmark = pytest.mark.windows


def lab_spec(tmp_path: Path, **kw) -> GuestSpec:
    base: dict[str, Any] = dict(
        name="hil-s-main-1",
        os="windows",
        disk=tmp_path / "w.qcow2",
        console_log=tmp_path / "w.console.log",
        forwards=[(55985, windows_lab.WINRM_GUEST_PORT)],
    )
    base.update(kw)
    return GuestSpec(**base)


def test_a_windows_guest_without_a_winrm_forward_is_refused(tmp_path):
    with pytest.raises(ValueError, match="WinRM"):
        windows_lab.WindowsLabGuest(None, lab_spec(tmp_path, forwards=[]), user="hil", password="x")


def test_lab_guest_names_the_bugcheck_from_its_domain_log(tmp_path, monkeypatch):
    monkeypatch.setattr(windows_lab, "LIBVIRT_QEMU_LOGS", tmp_path)
    g = windows_lab.WindowsLabGuest(None, lab_spec(tmp_path), user="hil", password="x")
    assert g.winrm.port == 55985 and g.kind.value == "windows"
    assert g.bugcheck() is None  # no log yet
    g.domain_log.write_text("2026-11-23 23:40:01.123+0000: starting up\n")
    assert g.bugcheck() is None
    with g.domain_log.open("a") as f:
        f.write(
            "panic hyper-v: arg1='0xd1', arg2='0xfffff80312345678', arg3='0x2', arg4='0x0', arg5='0xfffff80387654321'\n"
        )
    rep = g.bugcheck()
    assert rep.title == "0x000000D1 DRIVER_IRQL_NOT_LESS_OR_EQUAL" and rep.kind == "BSOD"
    assert rep.parameters == ("0xfffff80312345678", "0x2", "0x0", "0xfffff80387654321")
