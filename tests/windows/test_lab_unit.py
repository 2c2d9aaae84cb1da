"""Lab-path pieces that need no Windows: domain XML and the Hyper-V bug-check parser."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from hil.windows import guest as lab_guest
from hil.windows.domain import QEMU_NS, windows_domain_xml

pytestmark = pytest.mark.windows


def test_domain_has_windows_pieces():
    xml = windows_domain_xml("win-t", "/var/cache/kernel-hil/run/w.qcow2", winrm_port=55985, accel="kvm")
    dom = ET.fromstring(xml)
    assert dom.get("type") == "kvm"
    hv = dom.find("features/hyperv")
    assert {e.tag for e in hv} >= {"relaxed", "vapic", "spinlocks", "synic", "stimer", "vpindex"}
    assert dom.find("devices/panic").get("model") == "hyperv"
    assert dom.find("clock/timer[@name='hypervclock']").get("present") == "yes"
    assert dom.find("on_crash").text == "preserve"
    args = [a.get("value") for a in dom.find(f"{{{QEMU_NS}}}commandline")]
    assert "user,id=hilnet,hostfwd=tcp:127.0.0.1:55985-:5985" in args
    assert dom.find("devices/disk/target").get("bus") == "sata"


def test_tcg_domain_type():
    dom = ET.fromstring(windows_domain_xml("w", "/x.qcow2", winrm_port=1, accel="tcg"))
    assert dom.get("type") == "qemu"
    with pytest.raises(ValueError):
        windows_domain_xml("w", "/x.qcow2", winrm_port=1, accel="auto")


def test_lab_guest_names_the_bugcheck_from_its_domain_log(tmp_path, monkeypatch):
    image = tmp_path / "win.qcow2"
    image.write_bytes(b"")
    monkeypatch.setattr(lab_guest, "LIBVIRT_QEMU_LOGS", tmp_path)
    g = lab_guest.WindowsLabGuest(image, tmp_path, user="hil", password="x")
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
