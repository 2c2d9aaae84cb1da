"""Choose KVM only where it really works; TCG otherwise.

libvirt reports KVM as available whenever ``/dev/kvm`` exists, even on a CPU without
virtualisation extensions where a KVM guest then spins forever.  So ``auto`` requires the
CPU flags (vmx/svm), an openable ``/dev/kvm`` with the stable API and a VM it can create.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from hil.errors import ConfigError, EnvironmentProblem

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    reason: str


def probe_kvm(cpuinfo: str | None = None, dev: str = "/dev/kvm") -> KvmProbe:
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo").read()
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not flags & {"vmx", "svm"}:
        return KvmProbe(False, "the CPU exposes no vmx/svm flag (nested virtualisation is off)")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KvmProbe(False, f"cannot open {dev}: {exc.strerror}")
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION:
            return KvmProbe(False, f"{dev} speaks an unexpected KVM API version")
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
    except OSError as exc:
        return KvmProbe(False, f"KVM_CREATE_VM failed: {exc.strerror}")
    finally:
        os.close(fd)
    return KvmProbe(True, "vmx/svm present and KVM_CREATE_VM works")


def choose_accel(requested: str, probe: KvmProbe | None = None) -> str:
    """Map ``auto|kvm|tcg`` to the accelerator to use (``kvm`` or ``tcg``)."""
    if requested not in ("auto", "kvm", "tcg"):
        raise ConfigError(f"unknown accelerator {requested!r}", "use one of: auto, kvm, tcg")
    if requested == "tcg":
        return "tcg"
    probe = probe or probe_kvm()
    if requested == "kvm" and not probe.usable:
        raise EnvironmentProblem(
            f"KVM was requested but does not work here: {probe.reason}", "use --hil-accel=tcg (or auto) on this machine"
        )
    return "kvm" if probe.usable else "tcg"
