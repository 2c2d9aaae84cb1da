"""``hil doctor``: check every piece the framework needs and say how to fix what is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

HELP = "check qemu, libvirt, permissions, the accelerator, images, Wine and mingw; print fixes"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def add_arguments(parser) -> None:
    parser.add_argument("--uri", default=None, help="libvirt URI (default: from the config)")


def checks(uri: str, config=None) -> list[Check]:
    from hil.images.linux_image import cached_image
    from hil.images.recipe import load_linux_recipe
    from hil.paths import cache_root
    from hil.provision.accel import probe_kvm

    out: list[Check] = []

    def tool(name: str, package: str, required: bool = True, why: str = "") -> None:
        path = shutil.which(name)
        out.append(Check(name, bool(path), path or f"not found{why}", f"apt-get install {package}", required))

    tool("qemu-system-x86_64", "qemu-system-x86")
    tool("qemu-img", "qemu-utils")
    tool("debootstrap", "debootstrap", why=" (needed to build the embedded guest)")
    tool("mkfs.ext4", "e2fsprogs")
    for daemon in ("libvirtd", "virtlogd"):
        tool(daemon, "libvirt-daemon-system")
    try:
        import libvirt  # noqa: F401

        out.append(Check("libvirt-python", True, _version(libvirt.getVersion())))
    except ImportError:
        out.append(
            Check(
                "libvirt-python",
                False,
                "not importable",
                "apt-get install libvirt-dev pkg-config && pip install libvirt-python",
            )
        )
    else:
        from hil.errors import HilError
        from hil.provision.daemons import open_connection

        try:
            conn = open_connection(uri)
            out.append(Check("libvirt connection", True, f"{uri} (libvirt {_version(conn.getLibVersion())})"))
            for net in conn.listAllNetworks():
                if net.isActive() or net.autostart():
                    out.append(
                        Check(
                            f"network {net.name()}",
                            False,
                            "active or autostarting: guests here must use user-mode networking only",
                            f"virsh net-destroy {net.name()}; virsh net-autostart --disable {net.name()}",
                            required=False,
                        )
                    )
            conn.close()
        except HilError as exc:
            out.append(Check("libvirt connection", False, exc.problem, exc.fix or ""))
    probe = probe_kvm()
    out.append(Check("accelerator", True, f"{'kvm' if probe.usable else 'tcg'} ({probe.reason})"))
    root = cache_root()
    qemu_can_traverse = all(os.stat(p).st_mode & 0o001 for p in [root, *root.parents] if p.exists())
    out.append(
        Check(
            "cache folder",
            qemu_can_traverse,
            str(root),
            f"QEMU runs as libvirt-qemu and must traverse it: set HIL_CACHE_DIR to a folder "
            f"outside /root, or chmod o+x the parents of {root}",
        )
    )
    img = cached_image(load_linux_recipe())
    out.append(
        Check(
            "linux image",
            img is not None,
            str(img.dir) if img else "not built yet (the first test builds it, ~5 min)",
            "hil image build linux",
            required=False,
        )
    )
    debug, kernel_release = debug_kernel_checks(img, config), img.kernel_release if img else ""
    out += debug
    if config is not None and config.linux.flavour == "debug":
        from hil.images.debug_kernel import debug_kernel_state

        built = debug_kernel_state(img).kernel
        kernel_release = built.release if built else ""  # the guests run the debug kernel
    if config is not None:
        out += driver_checks(config, kernel_release)
    tool("wine", "wine64", required=False, why=" (Windows drivers under Wine)")
    tool(
        "x86_64-w64-mingw32-gcc",
        "gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev",
        required=False,
        why=" (building Windows drivers)",
    )
    tool("cc", "gcc", why=" (protocol vectors, kernel modules)")
    from hil.protocol import native

    status = native.status()
    out.append(
        Check(
            "native protocol codec",
            status.startswith("on"),
            status,
            "apt-get install gcc (the collector then indexes records with hil_proto.c)",
            required=False,
        )
    )
    return out


def debug_kernel_checks(img, config=None) -> list[Check]:
    """The debug kernel flavour: built or not (and the command that builds it), and whether this
    host has the packages its build needs.  Required only when the configuration selects it."""
    from hil.images.debug_kernel import (
        BUILD_COMMAND,
        BUILD_TIME,
        apt_install_line,
        debug_kernel_state,
        missing_build_packages,
    )

    wanted = config is not None and config.linux.flavour == "debug"
    state = debug_kernel_state(img)
    plan, kernel = state.plan, state.kernel
    if plan is None:
        check = Check("debug kernel", False, state.problem, "hil image build linux", required=wanted)
    elif kernel is None:
        check = Check(
            "debug kernel",
            False,
            f"{plan.key} not built yet ({plan.pin}; {BUILD_TIME}, once)",
            BUILD_COMMAND,
            required=wanted,
        )
    else:
        check = Check("debug kernel", True, f"{kernel.release} in {kernel.dir}")
    missing = missing_build_packages()
    deps = Check(
        "debug kernel build deps",
        not missing,
        "all present" if not missing else f"missing {', '.join(missing)}",
        apt_install_line(missing),
        required=wanted and kernel is None,
    )
    return [check, deps]


def driver_checks(config, kernel_release: str) -> list[Check]:
    """What the suites will deploy for each ``[drivers]`` role, and whether a configured module
    fits the guest's kernel (the configuration loader has checked the rest)."""
    from hil.deploy.artifacts import ROLES, Deployed, check_kernel, configured
    from hil.errors import HilError

    out = []
    for role in ROLES:
        path = configured(config.drivers, role)
        if path is None:
            out.append(Check(f"drivers.{role}", True, "the reference build (kernel-hil's drivers/)"))
            continue
        detail = f"{path} (sha256 {Deployed.of(path).sha256[:16]})"
        ok, fix = True, ""
        if ROLES[role].os == "linux" and kernel_release:
            try:
                check_kernel(type(config.drivers)(**{role: str(path)}), kernel_release, config.source)
            except HilError as exc:
                ok, detail, fix = False, exc.problem, exc.fix or ""
        out.append(Check(f"drivers.{role}", ok, detail, fix))
    return out


def _version(n: int) -> str:
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def run(args) -> int:
    from hil.config import load_config

    config = load_config()
    results = checks(args.uri or config.libvirt_uri, config)
    width = max(len(c.name) for c in results)
    bad = 0
    for c in results:
        mark = "ok " if c.ok else ("ERR" if c.required else "warn")
        print(f"[{mark:4}] {c.name:<{width}}  {c.detail}")
        if not c.ok:
            print(f"{'':7}{'':<{width}}  fix: {c.fix}")
            bad += c.required
    print("all required pieces are present" if not bad else f"{bad} required piece(s) missing")
    return 1 if bad else 0
