"""Turn a :class:`GuestSpec` into libvirt domain XML.

Choices measured on the target machines (see ENVIRONMENT.md):
- q35: the isa panic device gets an ACPI node there, so ``pvpanic-mmio`` binds and libvirt
  sees CRASHED/PANICKED; on i440fx no event ever comes.
- QEMU user networking through ``<qemu:commandline>`` (libvirt 9.0 has no port-forward
  element for it), on an explicit free PCIe slot; forwards bind 127.0.0.1 only.
- ``on_crash=preserve`` so a panicked guest stays inspectable until we destroy it.
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


def netdev_arg(spec: GuestSpec) -> str:
    fwd = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in spec.forwards)
    return f"user,id={NETDEV_ID}{fwd}"


def domain_xml(spec: GuestSpec) -> str:
    dom = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    meta = _sub(dom, "metadata")
    ET.SubElement(meta, f"{{{HIL_NS}}}owner", spec.owner)
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
    if spec.hyperv:
        hv = _sub(features, "hyperv", mode="custom")
        for name in ("relaxed", "vapic", "vpindex", "synic", "stimer"):
            _sub(hv, name, state="on")
        _sub(hv, "spinlocks", state="on", retries="8191")
    cpu = _sub(dom, "cpu", mode="host-passthrough" if spec.accel == "kvm" else "custom")
    if spec.accel != "kvm":
        _sub(cpu, "model", "qemu64", fallback="allow")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "preserve")

    dev = _sub(dom, "devices")
    disk = _sub(dev, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2", cache="unsafe", discard="unmap")
    _sub(disk, "source", file=str(spec.disk))
    _sub(disk, "target", dev="vda", bus="virtio")

    # a file, not a pty: QEMU gets the fd from virtlogd, so nothing in libvirt's private /dev
    # is needed (a pty fails there inside a chroot, measured); libvirt adds the console itself
    serial = _sub(dev, "serial", type="file")
    _sub(serial, "source", path=str(spec.console_log), append="off")
    _sub(serial, "target", port="0")

    chan = _sub(dev, "channel", type="unix")
    _sub(chan, "target", type="virtio", name="org.qemu.guest_agent.0")

    if spec.panic == "hyperv":
        _sub(dev, "panic", model="hyperv")
    else:
        panic = _sub(dev, "panic", model="isa")
        _sub(panic, "address", type="isa", iobase="0x505")
    # QEMU's own getrandom(): no /dev/urandom to open inside libvirt's private /dev
    _sub(_sub(dev, "rng", model="virtio"), "backend", model="builtin")
    _sub(dev, "memballoon", model="none")

    args = ["-netdev", netdev_arg(spec), "-device", f"virtio-net-pci,netdev={NETDEV_ID},bus=pcie.0,addr=0x10"]
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


def with_changes(xml: str, *, name: str | None = None, disk: str | None = None, console_log: str | None = None) -> str:
    """Rewrite a saved domain's XML for a restore on a fresh overlay under a new name."""
    root = ET.fromstring(xml)
    if name:
        root.find("name").text = name
    if disk:
        root.find("devices/disk/source").set("file", disk)
    if console_log:
        for source in root.findall("devices/serial/source"):
            source.set("path", console_log)
        for source in root.findall("devices/console/source"):
            source.set("path", console_log)
    return ET.tostring(root, encoding="unicode")
