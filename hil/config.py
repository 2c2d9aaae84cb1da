"""Configuration: ``hil.toml`` or ``[tool.hil]`` in ``pyproject.toml``, validated at start.

A wrong key, a wrong type, a missing image file: one line naming the problem and the fix.
Every key has a default, so no file at all means the embedded default guest.

    libvirt_uri = "qemu:///system"
    hosts = [                     # several libvirt hosts; set, it overrides libvirt_uri
        "qemu:///system",         # a URI: weight 1
        {uri = "qemu+tcp://lab2.example/system", weight = 2, controller_address = "10.0.0.1"},
    ]                             # weight: the host's share of the xdist workers (-n auto: their sum);
                                  # controller_address: this machine as that host reaches it (default: found)
    accel = "auto"                # auto | kvm | tcg
    artifacts = "reports/out"     # per-test console logs, transcripts, captures
    history = ""                  # hil qualify's history: "" = SQLite in the data folder, or postgresql://...

    [linux]
    image = "embedded"            # or the path of your own qcow2 with qemu-guest-agent
    kernel = ""                   # with your own image: direct kernel boot (else it boots the disk)
    initrd = ""
    cmdline = ""
    kbuild_dir = ""               # your kernel's headers tree, for building modules
    flavour = "stock"             # the embedded guest's kernel: "stock" (Debian's) or "debug"
                                  # (the same source with KASAN, lockdep, ...: hil.images.debug_kernel);
                                  # --hil-kernel and a profile's flavour override it
    memory_mib = 1024
    vcpus = 2
    boot_timeout_s = 300
    snapshot = true               # boot once, restore per test (false: cold boot per test)
    ready_pool = 1                # copies made ready ahead of need; bounded by free memory
    hang_timeout_s = 120          # silent console + silent agent this long = hung (NMI, HANG); 0: off

    [drivers]                     # your build's artifacts; unset: the in-repo reference build
    kserver = "build/kserver.ko"
    linux_agent = "build/hil_agent.ko"
    windows_agent = "out/hilagent.sys"
    minifilter = "out/hilflt.sys" # its .inf beside it

    [profiles.NAME]               # qualification profiles: see hil.qualify.profiles

Relative paths are relative to the file that names them.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hil.errors import ConfigError

FLAVOURS = ("stock", "debug")
"""The embedded guest's kernels: Debian's own (``stock``), or the same source rebuilt with the
kernel's debug options (``debug``, see :mod:`hil.images.debug_kernel`)."""


@dataclass
class LinuxGuestConfig:
    image: str = "embedded"
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    kbuild_dir: str = ""
    flavour: str = "stock"  # one of FLAVOURS: the embedded guest's kernel
    memory_mib: int = 1024
    vcpus: int = 2
    boot_timeout_s: float = 300.0
    snapshot: bool = True
    ready_pool: int = 1  # copies made ready ahead of need (0: restore when asked)
    hang_timeout_s: float = 120.0  # no console output and no agent answer this long: a hang (0: off)


@dataclass
class WindowsGuestConfig:
    image: str = ""
    memory_mib: int = 4096
    vcpus: int = 2
    winrm_user: str = "hil"
    winrm_password: str = ""
    boot_timeout_s: float = 900.0


@dataclass
class DriversConfig:
    """The artifacts the suites deploy instead of the reference builds ("" = reference build).
    Checked at load by :func:`hil.deploy.artifacts.check_configured`."""

    kserver: str = ""
    linux_agent: str = ""
    windows_agent: str = ""
    minifilter: str = ""


@dataclass
class HostConfig:
    """One libvirt host of ``hosts``: its URI, its share of the xdist workers, and the address
    of this machine as that host reaches it ("" = found by :func:`hil.hosts.placement.controller_address`)."""

    uri: str
    weight: int = 1
    controller_address: str = ""


HOST_SCHEMES = ("qemu", "qemu+tcp", "qemu+ssh", "qemu+tls", "qemu+unix")
HOST_PATHS = ("/system", "/session")
_HOSTS_EXAMPLE = 'for example hosts = ["qemu:///system", {uri = "qemu+tcp://lab2/system", weight = 2}]'


@dataclass
class HilConfig:
    libvirt_uri: str = "qemu:///system"
    hosts: list[HostConfig] = field(default_factory=list)  # [] = libvirt_uri alone
    accel: str = "auto"
    artifacts: str = "reports/out"
    linux: LinuxGuestConfig = field(default_factory=LinuxGuestConfig)
    windows: WindowsGuestConfig = field(default_factory=WindowsGuestConfig)
    drivers: DriversConfig = field(default_factory=DriversConfig)
    history: str = ""
    profiles: dict = field(default_factory=dict)  # name -> hil.qualify.profiles.Profile
    source: str = "defaults"

    def host_list(self) -> list[HostConfig]:
        """The libvirt hosts of this run: ``hosts``, or ``libvirt_uri`` alone when none is listed."""
        return list(self.hosts) if self.hosts else [HostConfig(self.libvirt_uri)]

    def validate(self) -> HilConfig:
        if self.accel not in ("auto", "kvm", "tcg"):
            raise ConfigError(
                f"{self.source}: accel = {self.accel!r} is not one of auto, kvm, tcg",
                'set accel = "auto" (KVM where it really works, TCG otherwise)',
            )
        lx = self.linux
        check_flavour(lx.flavour, f"{self.source}: linux.flavour", lx.image)
        if lx.image != "embedded":
            self._must_exist("linux.image", lx.image, 'build the embedded guest instead: image = "embedded"')
            for key in ("kernel", "initrd", "kbuild_dir"):
                if getattr(lx, key):
                    self._must_exist(f"linux.{key}", getattr(lx, key), f"fix or remove linux.{key}")
        elif lx.kernel or lx.initrd:
            raise ConfigError(
                f"{self.source}: linux.kernel/initrd are only for your own image",
                "remove them, or set linux.image to your qcow2",
            )
        if lx.memory_mib < 256 or lx.vcpus < 1:
            raise ConfigError(
                f"{self.source}: linux.memory_mib must be >= 256 and linux.vcpus >= 1",
                "the default (1024 MiB, 2 vCPUs) suits the embedded guest",
            )
        from hil.deploy.artifacts import check_configured

        check_configured(self.drivers, self.source)
        return self

    def _must_exist(self, key: str, value: str, fix: str) -> None:
        if not Path(value).exists():
            raise ConfigError(f"{self.source}: {key} = {value!r} does not exist", fix)


def check_flavour(flavour: str, where: str, image: str = "embedded") -> None:
    """One clear error for a flavour that is not one of :data:`FLAVOURS`, or ``debug`` with a
    team's own image (the debug kernel is the embedded guest's kernel rebuilt)."""
    if flavour not in FLAVOURS:
        raise ConfigError(
            f"{where} = {flavour!r} is not one of {', '.join(FLAVOURS)}",
            'use "stock" (Debian\'s kernel) or "debug" (the same source with KASAN, lockdep, UBSAN, ...)',
        )
    if flavour == "debug" and image != "embedded":
        raise ConfigError(
            f"{where} = 'debug' is the embedded guest's kernel rebuilt, but linux.image is your own image",
            "point linux.kernel and linux.kbuild_dir at your own debug kernel instead, or use the embedded image",
        )


def choose_flavour(config: HilConfig, option: str | None = None, profile: Any = None) -> str:
    """The run's guest kernel flavour: ``--hil-kernel``, else the profile's ``flavour`` (when it
    sets one), else ``[linux] flavour``.  Checked, and set on ``config.linux.flavour``."""
    if option:
        flavour, where = option, "--hil-kernel"
    elif profile is not None and profile.flavour:
        flavour, where = profile.flavour, f"profile {profile.name}: flavour"
    else:
        flavour, where = config.linux.flavour, f"{config.source}: linux.flavour"
    check_flavour(flavour, where, config.linux.image)
    config.linux.flavour = flavour
    return flavour


def _build(cls, data: dict, where: str, source: str):
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, object] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {key!r} in {where}", f"known keys there: {', '.join(sorted(known))}"
            )
        if cls is HilConfig and key == "profiles":
            kwargs[key] = _profiles(value, source)
            continue
        if cls is HilConfig and key == "hosts":
            kwargs[key] = _hosts(value, source)
            continue
        f = known[key]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {key} must be a table ([{key}])", f"write it as [{key}] with its keys")
            kwargs[key] = _build(f.default_factory, value, f"[{key}]", source)
            continue
        expected = type(f.default) if f.default is not dataclasses.MISSING else str
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{source}: {key} in {where} must be {expected.__name__}, not {type(value).__name__}",
                f"for example {key} = {f.default!r}",
            )
        kwargs[key] = value
    return cls(**kwargs)


def _profiles(tables, source: str) -> dict:
    from hil.qualify.profiles import from_table

    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(
            f"{source}: profiles must be tables ([profiles.NAME])",
            'write [profiles.mine] with its keys, e.g. markers = "smoke"',
        )
    return {name: from_table(name, table, source) for name, table in tables.items()}


def _hosts(items, source: str) -> list[HostConfig]:
    """``hosts``: URI strings or ``{uri, weight, controller_address}`` tables, each checked."""
    if not isinstance(items, list):
        raise ConfigError(f"{source}: hosts must be a list of libvirt URIs or tables", _HOSTS_EXAMPLE)
    known = {f.name: f for f in dataclasses.fields(HostConfig)}
    hosts: list[HostConfig] = []
    seen: dict[tuple, int] = {}
    for i, item in enumerate(items):
        where = f"hosts[{i}]"
        if isinstance(item, str):
            item = {"uri": item}
        elif not isinstance(item, dict):
            raise ConfigError(
                f"{source}: {where} is {type(item).__name__}, not a URI string or a table", _HOSTS_EXAMPLE
            )
        for key, value in item.items():
            if key not in known:
                raise ConfigError(
                    f"{source}: unknown key {key!r} in {where}", f"known keys there: {', '.join(sorted(known))}"
                )
            if key == "weight":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ConfigError(
                        f"{source}: weight in {where} must be an int >= 1, not {value!r}",
                        "weight is the host's share of the workers, for example weight = 2",
                    )
            elif not isinstance(value, str):
                raise ConfigError(
                    f"{source}: {key} in {where} must be str, not {type(value).__name__}",
                    f'for example {key} = "{"qemu+tcp://lab2/system" if key == "uri" else "10.0.0.1"}"',
                )
        if "uri" not in item:
            raise ConfigError(f"{source}: {where} has no uri", 'write {uri = "qemu+tcp://HOST/system", weight = 1}')
        host = HostConfig(**item)
        same = _host_identity(host.uri, f"{source}: {where}")
        if same in seen:
            raise ConfigError(
                f"{source}: {where} = {host.uri!r} is the same host as hosts[{seen[same]}]",
                "list each host once; a larger weight gives it more workers",
            )
        seen[same] = i
        hosts.append(host)
    return hosts


def _host_identity(uri: str, where: str) -> tuple:
    """Check a host's URI; what makes two URIs the same host (scheme family, host, port, path)."""
    fix = "write qemu:///system, qemu+tcp://HOST/system, qemu+tls://HOST/system or qemu+ssh://USER@HOST/system"
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where} = {uri!r} is not a valid URI", fix) from None
    scheme = parts.scheme.lower()
    if scheme not in HOST_SCHEMES:
        raise ConfigError(
            f"{where} = {uri!r}: the scheme {parts.scheme or '(none)'!r} is not one of {', '.join(HOST_SCHEMES)}",
            fix,
        )
    if parts.path not in HOST_PATHS:
        raise ConfigError(
            f"{where} = {uri!r}: the path {parts.path or '(none)'!r} is not /system or /session",
            f"end the URI with /system (or /session): {fix}",
        )
    host = (parts.hostname or "").lower()
    if scheme in ("qemu+tcp", "qemu+tls", "qemu+ssh") and not host:
        raise ConfigError(f"{where} = {uri!r} names no host", fix)
    if scheme == "qemu+unix" and host:
        raise ConfigError(f"{where} = {uri!r}: qemu+unix reaches this machine only; it takes no host", fix)
    if not host:  # qemu:/// and qemu+unix:/// are the same local daemon
        return ("local", "", 0, parts.path)
    family = "ssh" if scheme == "qemu+ssh" else scheme
    default_port = {"ssh": 22, "qemu+tcp": 16509}.get(family, 16514)  # qemu://HOST is TLS
    return (family, host, port or default_port, parts.path)


def load_config(path: str | Path | None = None, start: Path | None = None) -> HilConfig:
    """Load ``path``, or find ``hil.toml`` / ``pyproject.toml [tool.hil]`` from ``start`` upward."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist", "pass an existing hil.toml to --hil-config")
        return _from_file(p)
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "hil.toml").is_file():
            return _from_file(d / "hil.toml")
        pp = d / "pyproject.toml"
        if pp.is_file():
            data = _parse(pp)
            if "hil" in data.get("tool", {}):
                return _make(data["tool"]["hil"], f"{pp} [tool.hil]", pp.parent)
    return HilConfig().validate()


def _parse(p: Path) -> dict:
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}", "fix the syntax at the position given") from None


def _from_file(p: Path) -> HilConfig:
    return _make(_parse(p), str(p), p.parent)


def _make(data: dict, source: str, base: Path) -> HilConfig:
    cfg = _build(HilConfig, data, "the top level", source)
    cfg.source = source
    # relative paths are relative to the file that names them
    for key in ("image", "kernel", "initrd", "kbuild_dir"):
        v = getattr(cfg.linux, key)
        if v and v != "embedded" and not Path(v).is_absolute():
            setattr(cfg.linux, key, str(base / v))
    for role, v in vars(cfg.drivers).items():
        if v and not Path(v).is_absolute():
            setattr(cfg.drivers, role, str(base / v))
    if cfg.artifacts and not Path(cfg.artifacts).is_absolute():
        cfg.artifacts = str(base / cfg.artifacts)
    return cfg.validate()
