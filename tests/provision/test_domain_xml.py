"""Domain XML: the choices measured on these machines are really in it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hil.provision.domain_xml import QEMU_NS, domain_xml, read_owner, with_changes
from hil.provision.spec import GuestSpec


def spec(**kw) -> GuestSpec:
    base: dict[str, Any] = dict(
        name="hil-s-gw0-1",
        disk=Path("/c/d.qcow2"),
        console_log=Path("/c/d.log"),
        kernel=Path("/c/vmlinuz"),
        initrd=Path("/c/initrd"),
        cmdline="root=/dev/vda",
        forwards=[(40000, 22)],
        owner={"session": "s", "worker": "gw0", "pid": "1", "start": "2"},
    )
    base.update(kw)
    return GuestSpec(**base)


def test_tcg_q35_panic_agent_console():
    root = ET.fromstring(domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.find("os/type").get("machine") == "q35"
    panic = root.find("devices/panic")
    assert panic.get("model") == "isa" and panic.find("address").get("iobase") == "0x505"
    assert root.find("on_crash").text == "preserve"
    assert root.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    assert root.find("devices/serial").get("type") == "file"
    assert root.find("devices/serial/source").get("path") == "/c/d.log"
    assert root.find("devices/disk/source").get("file") == "/c/d.qcow2"
    assert root.find("os/cmdline").text == "root=/dev/vda"


def test_kvm_only_when_asked():
    assert ET.fromstring(domain_xml(spec(accel="kvm"))).get("type") == "kvm"


def test_user_networking_forwards_bind_loopback_only():
    root = ET.fromstring(domain_xml(spec()))
    args = [a.get("value") for a in root.find(f"{{{QEMU_NS}}}commandline")]
    netdev = args[args.index("-netdev") + 1]
    assert netdev == "user,id=hilnet0,hostfwd=tcp:127.0.0.1:40000-:22"
    assert "bus=pcie.0,addr=0x10" in args[args.index("-device") + 1]
    assert root.find("devices/interface") is None  # never a libvirt network


def test_owner_metadata_roundtrip_and_foreign_domains():
    xml = domain_xml(spec())
    assert read_owner(xml) == {"session": "s", "worker": "gw0", "pid": "1", "start": "2", "kind": "linux"}
    assert read_owner("<domain><name>other</name></domain>") is None


def test_windows_parts_from_the_same_builder():
    xml = domain_xml(spec(os="windows", kernel=None, initrd=None, cmdline=None, forwards=[(55985, 5985)], accel="kvm"))
    root = ET.fromstring(xml)
    assert root.get("type") == "kvm"
    assert root.find("os/boot").get("dev") == "hd"
    hv = root.find("features/hyperv")
    assert {e.tag for e in hv} >= {"relaxed", "vapic", "spinlocks", "synic", "stimer", "vpindex"}
    assert root.find("devices/panic").get("model") == "hyperv"
    assert root.find("clock/timer[@name='hypervclock']").get("present") == "yes"
    assert root.find("on_crash").text == "preserve"
    assert root.find("devices/disk/target").get("bus") == "sata"
    assert root.find("devices/channel") is None  # no qemu-guest-agent: WinRM
    args = [a.get("value") for a in root.find(f"{{{QEMU_NS}}}commandline")]
    assert "user,id=hilnet0,hostfwd=tcp:127.0.0.1:55985-:5985" in args
    assert any(a.startswith("e1000e,") for a in args)
    # the owner record the leak sweep reads, as for a Linux guest
    assert read_owner(xml) == {"session": "s", "worker": "gw0", "pid": "1", "start": "2", "kind": "windows"}


def test_unresolved_accel_and_unknown_os_are_refused():
    for bad in (spec(accel="auto"), spec(os="plan9")):
        try:
            domain_xml(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_restore_rewrite_changes_disk_and_console_only():
    xml = with_changes(domain_xml(spec()), disk="/c/new.qcow2", console_log="/c/new.log")
    root = ET.fromstring(xml)
    assert root.find("name").text == "hil-s-gw0-1"
    assert root.find("devices/disk/source").get("file") == "/c/new.qcow2"
    assert root.find("devices/serial/source").get("path") == "/c/new.log"


def test_windows_under_tcg_has_no_hyperv_enlightenments():
    """QEMU offers hv-* only with KVM: under TCG it refuses to start ("kernel doesn't allow
    setting HyperV VP_INDEX", seen on a real libvirt); the panic device stays."""
    root = ET.fromstring(domain_xml(spec(os="windows", kernel=None, initrd=None, cmdline=None, accel="tcg")))
    assert root.find("features/hyperv") is None
    assert root.find("clock/timer[@name='hypervclock']") is None
    assert root.find("devices/panic").get("model") == "hyperv"


def test_a_restored_copy_gets_its_variants_identity_and_its_restorers_owner():
    xml = with_changes(
        domain_xml(spec(uuid="00000000-0000-0000-0000-000000000000")),
        name="hil-snap-0123456789ab-07",
        uuid="11111111-2222-3333-4444-555555555555",
        owner={"session": "new", "worker": "gw1", "pid": "42", "start": "7"},
    )
    root = ET.fromstring(xml)
    assert root.find("name").text == "hil-snap-0123456789ab-07"
    assert root.find("uuid").text == "11111111-2222-3333-4444-555555555555"
    assert read_owner(xml) == {"session": "new", "worker": "gw1", "pid": "42", "start": "7", "kind": "linux"}
    assert len(root.findall("metadata/*")) == 1  # replaced, not added
