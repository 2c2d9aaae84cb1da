"""The drivers a run deploys: the team's own builds named in ``[drivers]``, or the reference builds.

Every suite that deploys a driver asks here which file to use, so "qualify *my* kserver.ko" is
one line of ``hil.toml``::

    [drivers]
    kserver = "build/kserver.ko"

:func:`check_configured` runs when the configuration is loaded (the file exists and is what its
role needs: a kernel module of the right name, a native-subsystem PE, a minifilter's ``.inf``);
:func:`check_kernel` runs once the guest's kernel is known (a ``.ko`` built for another kernel
is refused before it is ever loaded).  :class:`Deployed` is what a test's report names: path,
SHA-256 and whether it came from the configuration or the reference build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hil.errors import ConfigError, HilError


@dataclass(frozen=True)
class Role:
    """A driver the suites deploy.  ``module``: the Linux module name the suites talk to."""

    os: str
    module: str = ""
    needs_inf: bool = False


ROLES: dict[str, Role] = {
    "kserver": Role("linux", module="kserver"),
    "linux_agent": Role("linux", module="hil_agent"),
    "windows_agent": Role("windows"),
    "minifilter": Role("windows", needs_inf=True),
}


@dataclass(frozen=True)
class Deployed:
    """One artifact a test deployed."""

    path: Path
    sha256: str
    origin: str  # "configured" (the team's [drivers]) or "reference" (the in-repo build)

    @classmethod
    def of(cls, path: Path, origin: str = "configured") -> Deployed:
        path = Path(path).resolve()
        return cls(path, hashlib.sha256(path.read_bytes()).hexdigest(), origin)

    @property
    def key(self) -> str:
        return self.path.stem

    def properties(self) -> list[tuple[str, str]]:
        """JUnit properties: ``hil_deployed_<name>`` (path), ``..._sha256``, ``..._origin``."""
        base = f"hil_deployed_{self.key}"
        return [(base, str(self.path)), (f"{base}_sha256", self.sha256), (f"{base}_origin", self.origin)]


def configured(drivers, role: str) -> Path | None:
    """The team's artifact for ``role``, or None when the reference build is to be used."""
    if role not in ROLES:
        raise HilError(f"unknown driver role {role!r}; known: {', '.join(ROLES)}")
    value = getattr(drivers, role)
    return Path(value) if value else None


def check_configured(drivers, source: str) -> None:
    """Raise :class:`ConfigError` naming ``drivers.<role>`` when an artifact cannot be what it
    claims: missing, not a kernel module (or one of another name), not a native PE driver."""
    for role, spec in ROLES.items():
        path = configured(drivers, role)
        if path is None:
            continue
        where = f"{source}: drivers.{role} = {str(path)!r}"
        if not path.is_file():
            raise ConfigError(
                f"{where} does not exist", f"build it first, or remove drivers.{role} to qualify the reference build"
            )
        if spec.os == "linux":
            _check_module(path, spec, where, role)
        else:
            _check_windows_driver(path, spec, where, role)


def _check_module(path: Path, spec: Role, where: str, role: str) -> None:
    from hil.deploy.modinfo import read_modinfo

    try:
        info = read_modinfo(path)
    except HilError as exc:
        raise ConfigError(f"{where}: {exc.problem}", exc.fix) from None
    if info.name != spec.module:
        raise ConfigError(
            f"{where} is module {info.name!r}, but the {role} suites drive {spec.module!r}",
            f"name the {spec.module}.ko your build produced",
        )
    if not info.vermagic:
        raise ConfigError(
            f"{where} has no vermagic: it was not built by kbuild",
            "build it with make -C <kernel headers> M=<module dir> modules",
        )


def _check_windows_driver(path: Path, spec: Role, where: str, role: str) -> None:
    from hil.deploy.pecheck import check_driver

    try:
        report = check_driver(path)
    except HilError as exc:
        raise ConfigError(f"{where}: {exc.problem}", exc.fix) from None
    except Exception as exc:  # pefile's own errors: not a PE at all
        raise ConfigError(f"{where} is not a PE image ({exc})", "name the .sys your driver build produced") from None
    if report.problems:
        raise ConfigError(
            f"{where}: " + "; ".join(report.problems),
            "link it as a kernel driver: native subsystem, kernel imports only, PE checksum set",
        )
    if spec.needs_inf and not path.with_suffix(".inf").is_file():
        raise ConfigError(
            f"{where} has no {path.with_suffix('.inf').name} beside it",
            "a minifilter installs from its INF: put the .inf next to the .sys",
        )


def check_kernel(drivers, kernel_release: str, source: str, kbuild_dir: Path | None = None) -> None:
    """Refuse a configured ``.ko`` built for another kernel than the guest's ``kernel_release``
    (insmod would fail with "Invalid module format" inside the guest, far from the cause)."""
    from hil.deploy.modinfo import read_modinfo

    for role, spec in ROLES.items():
        path = configured(drivers, role)
        if path is None or spec.os != "linux":
            continue
        built_for = read_modinfo(path).kernel_release
        if built_for != kernel_release:
            headers = f"the guest's headers ({kbuild_dir})" if kbuild_dir else "the guest kernel's headers"
            raise ConfigError(
                f"{source}: drivers.{role} = {str(path)!r} was built for kernel {built_for}, "
                f"but the guest runs {kernel_release}",
                f"rebuild it against {headers}: make -C <headers> M=<module dir> modules "
                "(`hil image show linux` prints the headers folder)",
            )


def resolve(drivers, role: str, reference) -> Deployed:
    """The artifact to deploy for ``role``: the configured one, else ``reference()`` (a callable
    that builds the in-repo reference driver, so nothing is built when the team brings its own)."""
    path = configured(drivers, role)
    if path is not None:
        return Deployed.of(path, "configured")
    return Deployed.of(reference(), "reference")
