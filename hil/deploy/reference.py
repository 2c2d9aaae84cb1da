"""This repository's reference drivers and tools, built on demand.

The suites qualify a team's own builds when ``[drivers]`` in hil.toml names them, and these
reference builds otherwise (:func:`hil.deploy.artifacts.resolve`); ``hil bench agent`` runs the
reference agent under the exec storm.  The sources are the repository's ``drivers/`` folder
(``hil/drivers`` in an installed wheel, see :func:`hil.paths.bundled`); modules are built and
cached by :func:`hil.deploy.kmod.build_module`, the host tools by
:func:`hil.deploy.kmod.build_host_tool`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from hil.deploy.kmod import Guest, build_host_tool, build_module
from hil.paths import bundled


def drivers_dir() -> Path:
    return bundled("drivers")


def protocol_sources() -> list[Path]:
    """The shared agent protocol codec compiled into the Linux agent module."""
    d = drivers_dir() / "protocol"
    return [d / "hil_proto.c", d / "hil_proto.h"]


# ---- kernel modules (drivers/linux) -----------------------------------------------------------


def build_kserver(kbuild_dir: Path) -> Path:
    """``kserver``: the in-kernel TCP file server the kserver suites qualify."""
    return build_module(drivers_dir() / "linux" / "kserver", kbuild_dir, name="kserver")


def build_agent(kbuild_dir: Path) -> Path:
    """``hil_agent``: the Linux agent module, with the shared protocol codec compiled in."""
    return build_module(drivers_dir() / "linux" / "agent", kbuild_dir, protocol_sources(), name="hil_agent")


def build_crashmod(kbuild_dir: Path) -> Path:
    """``hil_crash``: crashes the kernel on command (``echo null|bug|warn|... > /proc/hil_crash``)."""
    return build_module(drivers_dir() / "linux" / "crashmod", kbuild_dir, name="hil_crash")


# ---- the exec storm (drivers/linux/tools) -----------------------------------------------------


def build_storm_tool() -> Path:
    """``hil_storm COUNT TARGET [RATE]``: the exec storm generator.  Dynamically linked (15 KB
    instead of 700 KB static): the guest is the host's Debian release."""
    return build_host_tool(drivers_dir() / "linux" / "tools" / "hil_storm.c", flags=("-O2", "-Wall", "-s"))


def build_noop_tool() -> Path:
    """``hil_noop``: a static, libc-free program that exits 0 at once (the storm's exec target)."""
    return build_host_tool(
        drivers_dir() / "linux" / "tools" / "hil_noop.c",
        flags=("-O2", "-static", "-nostdlib", "-s", "-fno-stack-protector"),
    )


def install_storm_tools(guest: Guest, target: str, storm: str = "/tmp/hil_storm") -> None:
    """Put ``hil_storm`` at ``storm`` and the no-op exec target at ``target`` in the guest."""
    guest.put(build_storm_tool(), storm)
    guest.put(build_noop_tool(), target)
    guest.run(f"chmod +x {shlex.quote(storm)} {shlex.quote(target)}", timeout=30).check()


def parse_pid_lines(output: str) -> list[tuple[str, int]]:
    """``<word> <pid>`` lines: hil_storm's ``<i> <pid>``, a guest shell loop's ``echo $p $!``."""
    out = []
    for line in output.splitlines():
        word, _, pid = line.strip().rpartition(" ")
        if word and pid.isdigit():
            out.append((word, int(pid)))
    return out
