"""Domain XML: the choices measured on these machines are really in it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from hil.provision.domain_xml import QEMU_NS, domain_xml, read_owner, with_changes
from hil.provision.spec import GuestSpec


def spec(**kw) -> GuestSpec:
    base = dict(
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
    assert read_owner(xml) == {"session": "s", "worker": "gw0", "pid": "1", "start": "2"}
    assert read_owner("<domain><name>other</name></domain>") is None


def test_hyperv_panic_for_windows():
    root = ET.fromstring(domain_xml(spec(panic="hyperv", hyperv=True, kernel=None)))
    assert root.find("devices/panic").get("model") == "hyperv"
    assert root.find("features/hyperv/relaxed").get("state") == "on"
    assert root.find("os/boot").get("dev") == "hd"


def test_restore_rewrite_changes_disk_and_console_only():
    xml = with_changes(domain_xml(spec()), disk="/c/new.qcow2", console_log="/c/new.log")
    root = ET.fromstring(xml)
    assert root.find("name").text == "hil-s-gw0-1"
    assert root.find("devices/disk/source").get("file") == "/c/new.qcow2"
    assert root.find("devices/serial/source").get("path") == "/c/new.log"
