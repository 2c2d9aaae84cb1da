"""A typed description of one guest machine, independent of libvirt's XML."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (for a forward)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class GuestSpec:
    """Everything needed to define a guest.

    name          libvirt domain name (carries session and worker, see :mod:`hil.provision.owner`)
    disk          the per-guest qcow2 overlay (never the base image)
    console_log   file that receives the serial console (via virtlogd)
    accel         ``kvm`` or ``tcg`` (already resolved, see :mod:`hil.provision.accel`)
    kernel/initrd/cmdline  direct kernel boot; all None to boot from the disk
    forwards      (host_port, guest_port) TCP forwards, bound to ``forward_address`` only
    forward_address  where forwards listen on the guest's host: 127.0.0.1 on this machine, the
                  host's own address on a remote host (the only one the controller reaches)
    console_local where the controller reads the console: ``console_log`` itself on this
                  machine; a mirror of it for a remote host's guest (None: ``console_log``)
    owner         metadata written into the domain so the leak sweep can find dead owners
    os            ``linux`` or ``windows``: picks the per-OS parts of the domain XML
                  (see :mod:`hil.provision.domain_xml`)
    """

    name: str
    disk: Path
    console_log: Path
    accel: str = "tcg"
    memory_mib: int = 1024
    vcpus: int = 2
    machine: str = "q35"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    forwards: list[tuple[int, int]] = field(default_factory=list)
    owner: dict[str, str] = field(default_factory=dict)
    os: str = "linux"
    pcap: Path | None = None
    uuid: str | None = None
    instance: str = ""  # names this guest's files; differs from ``name`` for restored copies
    forward_address: str = "127.0.0.1"
    console_local: Path | None = None
