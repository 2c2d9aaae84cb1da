"""Windows drivers and tools built with mingw-w64 (no WDK, nothing downloaded).

Library first::

    out = build_all()                   # BuildResult: out["hilagent_test.sys"] -> Path
    check_driver(out["hilsocks.sys"])   # hil.deploy.pecheck

Every target is described by a :class:`Target` row (sources, defines, libraries, kind): adding
a driver is adding a row.  Outputs go to ``<cache>/build/windows/<key>/`` where ``<key>``
hashes the compiler identity, the flags and every input file (``drivers/windows/**`` and the
shared protocol codec), so an unchanged tree is a directory lookup.  Builds happen in a
private temporary directory and are published with an atomic rename, so concurrent builders
(xdist workers) never see half a build.  The PE checksum of each ``.sys`` is written after
linking (``pefile``), as Windows requires for boot-start drivers and as our checks demand.

``python -m hil.deploy.windows_build`` builds everything and prints the output directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hil.errors import EnvironmentProblem, HilError
from hil.paths import bundled, cache_root
from hil.steps import step

CC = "x86_64-w64-mingw32-gcc"
DLLTOOL = "x86_64-w64-mingw32-dlltool"
APT_PACKAGES = "gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev"
BUILD_FORMAT = "1"  # bump when this module changes how outputs are produced


def source_root() -> Path:
    return bundled("drivers")


def windows_dir() -> Path:
    return source_root() / "windows"


def protocol_dir() -> Path:
    return source_root() / "protocol"


COMMON_CFLAGS = [
    "-Os",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-multichar",
    "-Werror=implicit-function-declaration",
    "-Werror=incompatible-pointer-types",
    "-Wframe-larger-than=2048",
    "-fno-stack-protector",
    "-ffunction-sections",
    "-fdata-sections",
]

KERNEL_CFLAGS = [
    "-mno-stack-arg-probe",
    "-fno-builtin",
    "-D_AMD64_",
    "-D_WIN64",
    "-DNTDDI_VERSION=0x0A000000",
    "-D_WIN32_WINNT=0x0A00",
]

KERNEL_LDFLAGS = [
    "-shared",
    "-nostdlib",
    "-Wl,--subsystem,native",
    "-Wl,--entry,DriverEntry",
    "-Wl,--dynamicbase",
    "-Wl,--nxcompat",
    "-Wl,--gc-sections",
    "-Wl,--file-alignment,0x200",
    "-Wl,--section-alignment,0x1000",
]

USER_LDFLAGS = ["-municode", "-static", "-Wl,--dynamicbase", "-Wl,--nxcompat"]


@dataclass(frozen=True)
class Target:
    """One output file.

    name: output file name (``hilsocks.sys``, ``hilsvc.exe``)
    sources: paths relative to ``drivers/``
    kind: ``"driver"`` (native subsystem, kernel imports only) or ``"user"`` (console exe)
    libs: ``-l`` names; ``fltmgr`` is the import library generated from ``tools/fltmgr.def``
    defines: extra ``-D`` flags
    ldflags: extra link flags
    """

    name: str
    sources: tuple[str, ...]
    kind: str
    libs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in ("driver", "user"):
            raise ValueError(f"target {self.name}: kind must be 'driver' or 'user', not {self.kind!r}")
        if not self.sources:
            raise ValueError(f"target {self.name}: no sources")


_KSOCK = ("windows/ksock/ksock.c", "windows/common/hilkm.c")
_AGENT = (
    "windows/agent/hilagent.c",
    "windows/agent/store.c",
    "windows/agent/hilutil.c",
    "windows/ksock/ksock.c",
    "windows/common/hilkm.c",
    "protocol/hil_proto.c",
)

TARGETS: tuple[Target, ...] = (
    Target("hilsocks.sys", ("windows/sockdemo/hilsocks.c",) + _KSOCK, "driver", ("ntoskrnl", "hal", "netio")),
    Target("hilsockc.sys", ("windows/sockdemo/hilsockc.c",) + _KSOCK, "driver", ("ntoskrnl", "hal", "netio")),
    # The release agent; PsSetCreateProcessNotifyRoutineEx demands /INTEGRITYCHECK.
    Target("hilagent.sys", _AGENT, "driver", ("ntoskrnl", "hal", "netio"), ldflags=("-Wl,--forceinteg",)),
    # Test build: adds the IOCTL that injects synthetic process notifications.
    Target(
        "hilagent_test.sys",
        _AGENT,
        "driver",
        ("ntoskrnl", "hal", "netio"),
        defines=("HIL_TEST_BUILD",),
        ldflags=("-Wl,--forceinteg",),
    ),
    Target("hilflt.sys", ("windows/minifilter/hilflt.c",), "driver", ("fltmgr", "ntoskrnl", "hal")),
    Target("hilsvc.exe", ("windows/tools/hilsvc.c",), "user", ("advapi32",)),
    Target("hilagentctl.exe", ("windows/tools/hilagentctl.c",), "user", ()),
    Target("hilfltc.exe", ("windows/minifilter/hilfltc.c",), "user", ("fltlib",)),
)

DRIVERS = tuple(t.name for t in TARGETS if t.kind == "driver")


class BuildError(HilError):
    """The compiler or linker failed; the message holds its output."""


@dataclass
class BuildResult:
    directory: Path
    key: str
    cached: bool
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


def require_toolchain() -> str:
    path = shutil.which(CC)
    if not path:
        raise EnvironmentProblem(
            f"{CC} is not installed", f"apt-get install -y {APT_PACKAGES}"
        )
    return path


def _input_files() -> list[Path]:
    files: list[Path] = []
    for base in (windows_dir(), protocol_dir()):
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix in (".c", ".h", ".def", ".inf") and "vectors" not in p.parts:
                files.append(p)
    return files


def build_key(targets: tuple[Target, ...] = TARGETS) -> str:
    cc = require_toolchain()
    h = hashlib.sha256()
    h.update(BUILD_FORMAT.encode())
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h.update(repr(version).encode())
    h.update(repr((COMMON_CFLAGS, KERNEL_CFLAGS, KERNEL_LDFLAGS, USER_LDFLAGS, targets)).encode())
    root = source_root()
    for p in _input_files():
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:24]


def build_root() -> Path:
    return cache_root() / "build" / "windows"


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(
            f"build step failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}".rstrip(),
            "fix the compiler error above; sources live in drivers/windows",
        )


def _ddk_include() -> str:
    # mingw-w64-x86-64-dev installs the DDK headers here on Debian.
    for cand in ("/usr/share/mingw-w64/include/ddk", "/usr/x86_64-w64-mingw32/include/ddk"):
        if Path(cand, "wdm.h").is_file():
            return cand
    raise EnvironmentProblem("mingw-w64 DDK headers (ddk/wdm.h) not found", f"apt-get install -y {APT_PACKAGES}")


def compile_target(t: Target, out_dir: Path, lib_dir: Path) -> Path:
    root = source_root()
    out = out_dir / t.name
    cmd = [CC, *COMMON_CFLAGS, f"-I{windows_dir() / 'include'}", f"-I{protocol_dir()}"]
    cmd += [f"-D{d}" for d in t.defines]
    if t.kind == "driver":
        cmd += KERNEL_CFLAGS + [f"-I{_ddk_include()}"]
    else:
        cmd += ["-DUNICODE", "-D_UNICODE"]
    cmd += ["-o", str(out)]
    cmd += [str(root / s) for s in t.sources]
    if t.kind == "driver":
        cmd += KERNEL_LDFLAGS + [f"-L{lib_dir}"]
    else:
        cmd += USER_LDFLAGS
    cmd += list(t.ldflags)
    cmd += [f"-l{lib}" for lib in t.libs]
    if t.kind == "driver":
        cmd += ["-lgcc"]
    _run(cmd, cwd=out_dir)
    if t.kind == "driver":
        from hil.deploy.pecheck import write_checksum

        write_checksum(out)
    return out


def build_all(targets: tuple[Target, ...] = TARGETS, force: bool = False) -> BuildResult:
    """Build every target (or reuse the cached build of the same inputs)."""
    key = build_key(targets)
    final = build_root() / key
    files = {t.name: final / t.name for t in targets}
    if not force and final.is_dir() and all(p.is_file() for p in files.values()):
        return BuildResult(final, key, True, files)

    build_root().mkdir(parents=True, exist_ok=True)
    with step("windows-build", key=key):
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-{uuid.uuid4().hex[:6]}-", dir=build_root()))
        try:
            lib_dir = tmp / "lib"
            lib_dir.mkdir()
            if shutil.which(DLLTOOL) is None:
                raise EnvironmentProblem(f"{DLLTOOL} is not installed", f"apt-get install -y {APT_PACKAGES}")
            _run([DLLTOOL, "-d", str(windows_dir() / "tools" / "fltmgr.def"), "-l", str(lib_dir / "libfltmgr.a"), "-k"], tmp)
            for t in targets:
                compile_target(t, tmp, lib_dir)
            shutil.rmtree(lib_dir)
            if final.exists():
                if force:
                    shutil.rmtree(final, ignore_errors=True)
                else:  # someone else published the same key meanwhile
                    shutil.rmtree(tmp, ignore_errors=True)
                    return BuildResult(final, key, True, files)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return BuildResult(final, key, False, files)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hil.deploy.windows_build", description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even when the cache has this key")
    args = ap.parse_args(argv)
    try:
        res = build_all(force=args.force)
    except HilError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(res.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
