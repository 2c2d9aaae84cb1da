"""libvirt domain XML for a Windows lab guest, and the Hyper-V bug-check line parser.

Windows-specific pieces: Hyper-V enlightenments (relaxed timing, vapic, spinlocks, vpindex,
synic, stimer, frequencies: Windows runs much better with them), the ``hypervclock`` timer,
and ``<panic model='hyperv'/>`` so a bug check (BSOD) is reported by QEMU as GUEST_PANICKED with
the bug-check code and parameters.  Per the shared ENVIRONMENT.md that reporting only works
under KVM (labs); under TCG the crash MSR writes are silently ignored, so the console/RDP is
the only signal there and :func:`hil.crash.bugcheck.parse_domain_log` is exercised at the
parser level.

Networking is QEMU user mode with a host-only forward of WinRM (``127.0.0.1:<port>`` ->
guest 5985) passed through ``<qemu:commandline>`` because libvirt 9.0 has no port-forward
element for user networking; from the guest, 10.0.2.2 is the host's loopback (collector).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

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


def hyperv_features() -> ET.Element:
    """``<features>`` with acpi/apic and the Hyper-V enlightenments."""
    feats = ET.Element("features")
    ET.SubElement(feats, "acpi")
    ET.SubElement(feats, "apic")
    hv = ET.SubElement(feats, "hyperv", mode="custom")
    for name, attrs in HYPERV_FEATURES:
        ET.SubElement(hv, name, attrs)
    return feats


def windows_clock() -> ET.Element:
    clock = ET.Element("clock", offset="localtime")
    ET.SubElement(clock, "timer", name="rtc", tickpolicy="catchup")
    ET.SubElement(clock, "timer", name="pit", tickpolicy="delay")
    ET.SubElement(clock, "timer", name="hpet", present="no")
    ET.SubElement(clock, "timer", name="hypervclock", present="yes")
    return clock


def hyperv_panic() -> ET.Element:
    return ET.Element("panic", model="hyperv")


def windows_domain_xml(
    name: str,
    disk: str,
    *,
    memory_mib: int = 4096,
    vcpus: int = 2,
    winrm_port: int,
    accel: str = "tcg",
    serial_log: str | None = None,
) -> str:
    """A complete domain for a Windows guest booting from ``disk`` (a qcow2 overlay)."""
    if accel not in ("kvm", "tcg"):
        raise ValueError("accel must be 'kvm' or 'tcg' (resolve 'auto' before calling)")
    ET.register_namespace("qemu", QEMU_NS)
    dom = ET.Element("domain", type="kvm" if accel == "kvm" else "qemu")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    ET.SubElement(dom, "vcpu").text = str(vcpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_el, "boot", dev="hd")
    dom.append(hyperv_features())
    cpu = ET.SubElement(dom, "cpu", mode="host-passthrough" if accel == "kvm" else "custom")
    if accel != "kvm":
        ET.SubElement(cpu, "model", fallback="allow").text = "qemu64"
    dom.append(windows_clock())
    ET.SubElement(dom, "on_crash").text = "preserve"
    dev = ET.SubElement(dom, "devices")
    d = ET.SubElement(dev, "disk", type="file", device="disk")
    ET.SubElement(d, "driver", name="qemu", type="qcow2")
    ET.SubElement(d, "source", file=disk)
    # SATA: Windows has no in-box virtio-blk driver.
    ET.SubElement(d, "target", dev="sda", bus="sata")
    if serial_log:
        s = ET.SubElement(dev, "serial", type="file")
        ET.SubElement(s, "source", path=serial_log)
    ET.SubElement(dev, "input", type="tablet", bus="usb")
    ET.SubElement(dev, "graphics", type="vnc", listen="127.0.0.1", autoport="yes")
    dev.append(hyperv_panic())
    cl = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in (
        "-netdev",
        f"user,id=hilnet,hostfwd=tcp:127.0.0.1:{int(winrm_port)}-:5985",
        # e1000e has an in-box Windows driver; explicit free slot (libvirt's root port takes 0x1).
        "-device",
        "e1000e,netdev=hilnet,bus=pcie.0,addr=0x10",
    ):
        ET.SubElement(cl, f"{{{QEMU_NS}}}arg", value=arg)
    return ET.tostring(dom, encoding="unicode")
