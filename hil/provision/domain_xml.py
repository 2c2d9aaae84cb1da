"""Turn a :class:`GuestSpec` into libvirt domain XML: one builder, with per-OS parts.

Every domain we create carries the owner metadata (``<hil:owner .../>``), whatever its OS, so
the leak sweep finds a dead session's Linux and Windows guests alike.

Linux parts (``spec.os == "linux"``), choices measured on the target machines:
- q35: the isa panic device gets an ACPI node there, so ``pvpanic-mmio`` binds and libvirt
  sees CRASHED/PANICKED; on i440fx no event ever comes.
- QEMU user networking through ``<qemu:commandline>`` (libvirt 9.0 has no port-forward
  element for it), on an explicit free PCIe slot; forwards bind one address only (127.0.0.1,
  or a remote host's own address).
- ``on_crash=preserve`` so a panicked guest stays inspectable until we destroy it.

Windows parts (``spec.os == "windows"``, a lab's image): Hyper-V enlightenments (Windows runs
much better with them) and the ``hypervclock`` timer, under KVM only (QEMU refuses them under
TCG: "kernel doesn't allow setting HyperV VP_INDEX", measured), ``<panic model='hyperv'/>`` so a bug check
is reported by QEMU as GUEST_PANICKED with its code and parameters (under KVM only: under TCG
the crash MSR writes are ignored), a SATA disk and an e1000e NIC (in-box drivers), a USB
tablet and a VNC display on 127.0.0.1 for a person looking at the desktop.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hil.provision.spec import GuestSpec

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
HIL_NS = "https://kernel-hil.dev/xmlns/owner/1"
NETDEV_ID = "hilnet0"
ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("hil", HIL_NS)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


OS_KINDS = ("linux", "windows")
HYPERV_FEATURES = (
    ("relaxed", {"state": "on"}),
    ("vapic", {"state": "on"}),
    ("spinlocks", {"state": "on", "retries": "8191"}),
    ("vpindex", {"state": "on"}),
    ("runtime", {"state": "on"}),
    ("synic", {"state": "on"}),
    ("stimer", {"state": "on"}),
    ("frequencies", {"state": "on"}),
)


def netdev_arg(spec: GuestSpec) -> str:
    fwd = "".join(f",hostfwd=tcp:{spec.forward_address}:{h}-:{g}" for h, g in spec.forwards)
    return f"user,id={NETDEV_ID}{fwd}"


def _clock(dom: ET.Element, os_kind: str, accel: str) -> None:
    if os_kind == "windows":
        clock = _sub(dom, "clock", offset="localtime")
        _sub(clock, "timer", name="rtc", tickpolicy="catchup")
        _sub(clock, "timer", name="pit", tickpolicy="delay")
        _sub(clock, "timer", name="hpet", present="no")
        if accel == "kvm":
            _sub(clock, "timer", name="hypervclock", present="yes")
    else:
        _sub(dom, "clock", offset="utc")


def _disk(dev: ET.Element, spec: GuestSpec) -> None:
    disk = _sub(dev, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache="unsafe", discard="unmap")
    _sub(disk, "source", file=str(spec.disk))
    if spec.os == "windows":
        _sub(disk, "target", dev="sda", bus="sata")  # Windows has no in-box virtio-blk driver
    else:
        _sub(disk, "target", dev="vda", bus="virtio")


def domain_xml(spec: GuestSpec) -> str:
    if spec.os not in OS_KINDS:
        raise ValueError(f"GuestSpec.os must be one of {OS_KINDS}, not {spec.os!r}")
    if spec.accel not in ("kvm", "tcg"):
        raise ValueError("GuestSpec.accel must be 'kvm' or 'tcg' (resolve 'auto' first: hil.provision.accel)")
    windows = spec.os == "windows"
    dom = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    meta = _sub(dom, "metadata")
    ET.SubElement(meta, f"{{{HIL_NS}}}owner", {**spec.owner, "kind": spec.os})
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=spec.machine)
    if spec.kernel:
        _sub(os_el, "kernel", str(spec.kernel))
        if spec.initrd:
            _sub(os_el, "initrd", str(spec.initrd))
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if windows and spec.accel == "kvm":  # QEMU offers the hv-* enlightenments with KVM only
        hv = _sub(features, "hyperv", mode="custom")
        for name, attrs in HYPERV_FEATURES:
            _sub(hv, name, **attrs)
    cpu = _sub(dom, "cpu", mode="host-passthrough" if spec.accel == "kvm" else "custom")
    if spec.accel != "kvm":
        _sub(cpu, "model", "qemu64", fallback="allow")
    _clock(dom, spec.os, spec.accel)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "preserve")

    dev = _sub(dom, "devices")
    _disk(dev, spec)

    # a file, not a pty: QEMU gets the fd from virtlogd, so nothing in libvirt's private /dev
    # is needed (a pty fails there inside a chroot, measured); libvirt adds the console itself
    serial = _sub(dev, "serial", type="file")
    _sub(serial, "source", path=str(spec.console_log), append="off")
    _sub(serial, "target", port="0")

    if windows:
        _sub(dev, "input", type="tablet", bus="usb")
        _sub(dev, "graphics", type="vnc", listen="127.0.0.1", autoport="yes")
        _sub(dev, "panic", model="hyperv")
    else:
        chan = _sub(dev, "channel", type="unix")
        _sub(chan, "target", type="virtio", name="org.qemu.guest_agent.0")
        panic = _sub(dev, "panic", model="isa")
        _sub(panic, "address", type="isa", iobase="0x505")
    # QEMU's own getrandom(): no /dev/urandom to open inside libvirt's private /dev
    _sub(_sub(dev, "rng", model="virtio"), "backend", model="builtin")
    _sub(dev, "memballoon", model="none")

    # e1000e has an in-box Windows driver; an explicit free slot (libvirt's root port takes 0x1)
    nic = "e1000e" if windows else "virtio-net-pci"
    args = ["-netdev", netdev_arg(spec), "-device", f"{nic},netdev={NETDEV_ID},bus=pcie.0,addr=0x10"]
    if spec.pcap:
        args += ["-object", f"filter-dump,id=hildump0,netdev={NETDEV_ID},file={spec.pcap}"]
    cmd = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for a in args:
        ET.SubElement(cmd, f"{{{QEMU_NS}}}arg", value=a)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def read_owner(xml: str) -> dict[str, str] | None:
    """The owner metadata of a domain we created, or None for anybody else's domain."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{{{HIL_NS}}}owner")
    return dict(el.attrib) if el is not None else None


def _find(root: ET.Element, path: str) -> ET.Element:
    el = root.find(path)
    if el is None:
        raise ValueError(f"domain XML has no <{path}>")
    return el


def with_changes(
    xml: str,
    *,
    name: str | None = None,
    uuid: str | None = None,
    disk: str | None = None,
    console_log: str | None = None,
    owner: dict[str, str] | None = None,
) -> str:
    """Rewrite a saved domain's XML for a restore: another identity (one of the save image's
    variants), a fresh overlay, its own console log, and the restoring session as owner."""
    root = ET.fromstring(xml)
    if name:
        _find(root, "name").text = name
    if uuid:
        _find(root, "uuid").text = uuid
    if disk:
        _find(root, "devices/disk/source").set("file", disk)
    if console_log:
        for source in root.findall("devices/serial/source"):
            source.set("path", console_log)
        for source in root.findall("devices/console/source"):
            source.set("path", console_log)
    if owner is not None:
        meta = root.find("metadata")
        if meta is None:
            meta = ET.SubElement(root, "metadata")
        for old in meta.findall(f"{{{HIL_NS}}}owner"):
            meta.remove(old)
        kind = (read_owner(xml) or {}).get("kind", "linux")
        ET.SubElement(meta, f"{{{HIL_NS}}}owner", {**owner, "kind": kind})
    return ET.tostring(root, encoding="unicode")
