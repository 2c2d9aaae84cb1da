"""Accelerator choice: KVM only where it really works."""

from __future__ import annotations

import pytest

from hil.errors import ConfigError, EnvironmentProblem
from hil.provision.accel import KvmProbe, choose_accel, probe_kvm

NO_VMX = "processor : 0\nflags : fpu vme de pse tsc msr pae hypervisor\n"


def test_no_vmx_flag_means_no_kvm_even_with_dev_kvm():
    probe = probe_kvm(cpuinfo=NO_VMX, dev="/dev/kvm")
    assert not probe.usable and "vmx/svm" in probe.reason


def test_missing_device(tmp_path):
    probe = probe_kvm(cpuinfo="flags : vmx\n", dev=str(tmp_path / "kvm"))
    assert not probe.usable and "cannot open" in probe.reason


def test_choice():
    bad, good = KvmProbe(False, "no vmx"), KvmProbe(True, "ok")
    assert choose_accel("auto", bad) == "tcg"
    assert choose_accel("auto", good) == "kvm"
    assert choose_accel("tcg", good) == "tcg"
    assert choose_accel("kvm", good) == "kvm"
    with pytest.raises(EnvironmentProblem, match="KVM was requested but does not work here: no vmx"):
        choose_accel("kvm", bad)
    with pytest.raises(ConfigError):
        choose_accel("hvf")


def test_this_machine_agrees_with_its_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    if " vmx" not in flags and " svm" not in flags:
        assert choose_accel("auto") == "tcg"
