"""Windows drivers and tools built with mingw-w64 (no WDK, nothing downloaded): the framework's
reference drivers and a team's own, through one path.

Library first::

    out = build_all()                   # the reference build: out["hilagent_test.sys"] -> Path
    check_driver(out["hilsocks.sys"])   # hil.deploy.pecheck
    sys_file = build_driver(["driver/teamdrv.c", *PROTOCOL_SOURCES, *KSOCK_SOURCES],
                            name="teamdrv.sys", source_root=Path("."),
                            include_dirs=KSOCK_INCLUDE_DIRS)   # a team's driver

Every output is described by a :class:`Target` row (sources, include dirs, defines, libraries,
kind): adding a driver is adding a row, ours and a team's alike.  Sources and include dirs are
absolute or relative to the ``source_root`` the caller gives (the reference rows: the shipped
``drivers/`` folder).  The shipped include dirs (:data:`SHIPPED_INCLUDE_DIRS`: our ``wsk.h`` and
``fltKernel.h`` subsets of what mingw-w64 lacks, ``hil_proto.h``) are always on the include
path; shipped code a driver may link: :data:`PROTOCOL_SOURCES` (the wire codec) and
:data:`KSOCK_SOURCES` (the socket library over WSK, headers in :data:`KSOCK_INCLUDE_DIRS`).

Outputs go to ``<cache>/build/windows/<key>/`` where ``<key>`` hashes the compiler identity,
the flags, the rows and every file the build may read: each source, every C file and header in
the sources' folders and in the include dirs (recursively, hidden folders skipped) and the
shipped headers.  An unchanged tree is a directory lookup; an edit anywhere in it is a new
build.  Files are named in the key relative to ``source_root`` (or to the shipped folder), so
a moved checkout keeps its cache.  Builds happen in a private temporary directory and are
published with an atomic rename, so concurrent builders (xdist workers) never see half a build.
Each ``.sys`` gets its PE checksum written (``pefile``; Windows requires it of boot-start
drivers) and must pass :func:`hil.deploy.pecheck.check_driver` before it is published.

``python -m hil.deploy.windows_build`` builds the reference drivers and prints the output folder.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hil.deploy.host_build import compiler_messages
from hil.errors import EnvironmentProblem, HilError
from hil.paths import bundled, cache_root
from hil.steps import step

CC = "x86_64-w64-mingw32-gcc"
DLLTOOL = "x86_64-w64-mingw32-dlltool"
APT_PACKAGES = "gcc-mingw-w64-x86-64 mingw-w64-x86-64-dev"
BUILD_FORMAT = "2"  # bump when this module changes how outputs are produced

NT_LIBS = ("ntoskrnl", "hal", "netio")
"""The import libraries of a WSK driver (``netio`` holds the ``Wsk*`` calls)."""


def source_root() -> Path:
    """The shipped ``drivers/`` folder: the reference rows' ``source_root``."""
    return bundled("drivers")


def windows_dir() -> Path:
    return source_root() / "windows"


def protocol_dir() -> Path:
    return source_root() / "protocol"


SHIPPED_INCLUDE_DIRS: tuple[Path, ...] = (windows_dir() / "include", protocol_dir())
"""Always on the include path: ``wsk.h``, ``fltKernel.h`` (subsets) and ``hil_proto.h``."""
PROTOCOL_SOURCES: tuple[Path, ...] = (protocol_dir() / "hil_proto.c",)
"""The wire protocol's C codec (``hil_proto.h``, drivers/protocol/PROTOCOL.md)."""
KSOCK_SOURCES: tuple[Path, ...] = (windows_dir() / "ksock" / "ksock.c", windows_dir() / "common" / "hilkm.c")
"""ksock (blocking sockets over WSK, leak counters logged at cleanup) and the helpers it uses
(``HIL_LOG``, ``HilReadParamDword``, system threads, the sleeping lock)."""
KSOCK_INCLUDE_DIRS: tuple[Path, ...] = (windows_dir() / "ksock", windows_dir() / "common")
"""Where ``ksock.h`` and ``hilkm.h`` are, for a driver that links :data:`KSOCK_SOURCES`."""
FLTMGR_DEF = windows_dir() / "tools" / "fltmgr.def"
"""mingw-w64 has no import library for fltmgr.sys: ``libs=("fltmgr", ...)`` links one made
from this file."""

INPUT_SUFFIXES = frozenset({".c", ".h", ".hh", ".hpp", ".inc", ".inl", ".def"})
"""What the key covers in the sources' folders and the include dirs: anything that may be
``#include``d (C files too: drivers include them)."""

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
    sources: C files, absolute or relative to the build's ``source_root``
    kind: ``"driver"`` (native subsystem, kernel imports only) or ``"user"`` (console exe)
    libs: ``-l`` names; ``fltmgr`` is the import library generated from :data:`FLTMGR_DEF`
    defines: extra ``-D`` flags (``"NAME"`` or ``"NAME=VALUE"``)
    ldflags: extra link flags
    include_dirs: extra ``-I`` folders (absolute or relative, like sources), searched before
        :data:`SHIPPED_INCLUDE_DIRS`
    """

    name: str
    sources: tuple[str | Path, ...]
    kind: str
    libs: tuple[str, ...] = ()
    defines: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    include_dirs: tuple[str | Path, ...] = ()

    def __post_init__(self):
        for attr in ("sources", "libs", "defines", "ldflags", "include_dirs"):
            value = getattr(self, attr)
            if isinstance(value, (str, Path)):
                raise ValueError(f"target {self.name}: {attr} must be a list of names, not one {value!r}")
            object.__setattr__(self, attr, tuple(value))  # lists are welcome; rows stay hashable
        if self.kind not in ("driver", "user"):
            raise ValueError(f"target {self.name}: kind must be 'driver' or 'user', not {self.kind!r}")
        if not self.sources:
            raise ValueError(f"target {self.name}: no sources")
        if not self.name or Path(self.name).name != self.name:
            raise ValueError(f"target {self.name!r}: the name must be a plain file name")


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
    Target("hilsocks.sys", ("windows/sockdemo/hilsocks.c",) + _KSOCK, "driver", NT_LIBS),
    Target("hilsockc.sys", ("windows/sockdemo/hilsockc.c",) + _KSOCK, "driver", NT_LIBS),
    # The release agent; PsSetCreateProcessNotifyRoutineEx demands /INTEGRITYCHECK.
    Target("hilagent.sys", _AGENT, "driver", NT_LIBS, ldflags=("-Wl,--forceinteg",)),
    # Test build: adds the IOCTL that injects synthetic process notifications.
    Target("hilagent_test.sys", _AGENT, "driver", NT_LIBS, defines=("HIL_TEST_BUILD",), ldflags=("-Wl,--forceinteg",)),
    Target("hilflt.sys", ("windows/minifilter/hilflt.c",), "driver", ("fltmgr", "ntoskrnl", "hal")),
    Target("hilsvc.exe", ("windows/tools/hilsvc.c",), "user", ("advapi32",)),
    Target("hilagentctl.exe", ("windows/tools/hilagentctl.c",), "user", ()),
    Target("hilfltc.exe", ("windows/minifilter/hilfltc.c",), "user", ("fltlib",)),
)

DRIVERS = tuple(t.name for t in TARGETS if t.kind == "driver")


class BuildError(HilError):
    """The compiler or linker failed, or a driver failed its PE checks; the message names the
    first error's file and line and holds the compiler's messages."""


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
        raise EnvironmentProblem(f"{CC} is not installed", f"apt-get install -y {APT_PACKAGES}")
    return path


def _ddk_include() -> str:
    # mingw-w64-x86-64-dev installs the DDK headers here on Debian.
    for cand in ("/usr/share/mingw-w64/include/ddk", "/usr/x86_64-w64-mingw32/include/ddk"):
        if Path(cand, "wdm.h").is_file():
            return cand
    raise EnvironmentProblem("mingw-w64 DDK headers (ddk/wdm.h) not found", f"apt-get install -y {APT_PACKAGES}")


@functools.lru_cache(maxsize=1)
def _toolchain_identity() -> str:
    """The compiler's version line plus the binary and DDK headers it resolves to (size and
    mtime: a package upgrade changes them even when the version line does not)."""
    cc = Path(require_toolchain()).resolve()
    version = subprocess.run([str(cc), "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    ddk = Path(_ddk_include(), "wdm.h")
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (cc, ddk)]
    return repr((version, stats))


# ---- resolving rows to files --------------------------------------------------------------


@dataclass(frozen=True)
class _Resolved:
    target: Target
    sources: tuple[Path, ...]
    include_dirs: tuple[Path, ...]


def _resolve_path(value: str | Path, root: Path, what: str, want_dir: bool) -> Path:
    path = Path(value) if Path(value).is_absolute() else root / value
    ok = path.is_dir() if want_dir else path.is_file()
    if not ok:
        kind = "folder" if want_dir else "file"
        raise BuildError(
            f"{what}: {kind} {path} does not exist", f"correct the path (relative paths are relative to {root})"
        )
    return path.resolve()


def _resolve(t: Target, root: Path) -> _Resolved:
    sources = tuple(_resolve_path(s, root, f"source of {t.name}", False) for s in t.sources)
    dirs = tuple(_resolve_path(d, root, f"include dir of {t.name}", True) for d in t.include_dirs)
    return _Resolved(t, sources, dirs)


def _tree(folder: Path) -> list[Path]:
    """The C inputs below ``folder``, sorted; hidden folders and caches are not looked into."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        found += [Path(here, f) for f in files if Path(f).suffix in INPUT_SUFFIXES]
    return sorted(found)


def _inputs(resolved: Iterable[_Resolved]) -> list[Path]:
    """Every file the build may read: sources, their folders, the include dirs (the target's
    and the shipped ones) and the fltmgr .def file."""
    files: set[Path] = {FLTMGR_DEF.resolve()}
    folders: set[Path] = {d.resolve() for d in SHIPPED_INCLUDE_DIRS}
    for r in resolved:
        files.update(r.sources)
        folders.update(s.parent for s in r.sources)
        folders.update(r.include_dirs)
    for folder in folders:
        files.update(_tree(folder))
    return sorted(files)


def _label(path: Path, root: Path) -> str:
    """A file's name in the key: relative to the caller's root or the shipped folder when it is
    below one (so the key survives a moved checkout), else absolute."""
    for tag, base in (("src", root), ("hil", source_root().resolve())):
        if path.is_relative_to(base):
            return f"{tag}:{path.relative_to(base).as_posix()}"
    return str(path)


def _key(resolved: list[_Resolved], root: Path) -> str:
    h = hashlib.sha256()
    h.update(BUILD_FORMAT.encode())
    h.update(_toolchain_identity().encode())
    h.update(repr((COMMON_CFLAGS, KERNEL_CFLAGS, KERNEL_LDFLAGS, USER_LDFLAGS)).encode())
    for r in resolved:
        t = r.target
        row = (
            t.name,
            t.kind,
            t.libs,
            t.defines,
            t.ldflags,
            [_label(s, root) for s in r.sources],
            [_label(d, root) for d in r.include_dirs],
        )
        h.update(repr(row).encode())
    for label, p in sorted((_label(p, root), p) for p in _inputs(resolved)):
        h.update(label.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:24]


def build_key(targets: Iterable[Target] = TARGETS, source_root: Path | None = None) -> str:
    """The cache key of building ``targets`` (see the module docstring for what it covers)."""
    root = _root(source_root)
    return _key([_resolve(t, root) for t in targets], root)


def _root(given: Path | None) -> Path:
    return (Path(given) if given is not None else source_root()).resolve()


def build_root() -> Path:
    return cache_root() / "build" / "windows"


# ---- compiling ----------------------------------------------------------------------------

_DIAGNOSTIC = re.compile(r"^(?P<file>[^\s:][^:\n]*):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)$", re.M)


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    # The C locale: messages in English with ASCII quotes, the form _DIAGNOSTIC reads.
    env = {**os.environ, "LC_ALL": "C"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode == 0:
        return
    output = proc.stdout + proc.stderr
    messages = compiler_messages(output)
    m = _DIAGNOSTIC.search(output)
    if m:
        first, fix = f"{m['file']}:{m['line']}: {m['msg']}", f"correct {m['file']} at line {m['line']}"
    else:
        first = (messages.splitlines() or [f"exit status {proc.returncode}"])[0].strip()
        fix = "see the messages above (an undefined reference: add the source or library that defines it)"
    raise BuildError(f"building {what} failed: {first}\n{messages}\ncommand: {' '.join(cmd)}", fix)


def _compile(r: _Resolved, out_dir: Path, lib_dir: Path) -> Path:
    t = r.target
    out = out_dir / t.name
    cmd = [CC, *COMMON_CFLAGS]
    cmd += [f"-I{d}" for d in (*r.include_dirs, *SHIPPED_INCLUDE_DIRS)]
    cmd += [f"-D{d.removeprefix('-D')}" for d in t.defines]
    if t.kind == "driver":
        cmd += KERNEL_CFLAGS + [f"-I{_ddk_include()}"]
    else:
        cmd += ["-DUNICODE", "-D_UNICODE"]
    cmd += ["-o", str(out), *map(str, r.sources)]
    if t.kind == "driver":
        cmd += KERNEL_LDFLAGS + [f"-L{lib_dir}"]
    else:
        cmd += USER_LDFLAGS
    cmd += list(t.ldflags)
    cmd += [f"-l{lib}" for lib in t.libs]
    if t.kind == "driver":
        cmd += ["-lgcc"]
    _run(cmd, out_dir, t.name)
    if t.kind == "driver":
        from hil.deploy.pecheck import check_driver, write_checksum

        write_checksum(out)
        report = check_driver(out)
        if report.problems:
            raise BuildError(
                f"{t.name} is not a loadable kernel driver: " + "; ".join(report.problems),
                "link only kernel libraries (libs=ntoskrnl, hal, netio, fltmgr...) and call no user-mode API",
            )
    return out


def build(targets: Iterable[Target], source_root: Path | None = None, *, force: bool = False) -> BuildResult:
    """Build ``targets`` (or reuse the cached build of the same inputs); relative paths in the
    rows are relative to ``source_root`` (default: the shipped ``drivers/`` folder)."""
    targets = tuple(targets)
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise BuildError(
            f"two targets share an output name: {sorted(n for n in names if names.count(n) > 1)}",
            "give each target its own file name",
        )
    root = _root(source_root)
    resolved = [_resolve(t, root) for t in targets]
    key = _key(resolved, root)
    final = build_root() / key
    files = {t.name: final / t.name for t in targets}
    if not force and final.is_dir() and all(p.is_file() for p in files.values()):
        return BuildResult(final, key, True, files)

    build_root().mkdir(parents=True, exist_ok=True)
    with step("windows-build", key=key, targets=",".join(names)):
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-{uuid.uuid4().hex[:6]}-", dir=build_root()))
        try:
            lib_dir = tmp / "lib"
            lib_dir.mkdir()
            if any("fltmgr" in t.libs for t in targets):
                if shutil.which(DLLTOOL) is None:
                    raise EnvironmentProblem(f"{DLLTOOL} is not installed", f"apt-get install -y {APT_PACKAGES}")
                _run([DLLTOOL, "-d", str(FLTMGR_DEF), "-l", str(lib_dir / "libfltmgr.a"), "-k"], tmp, "libfltmgr.a")
            for r in resolved:
                _compile(r, tmp, lib_dir)
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


def build_all(targets: tuple[Target, ...] = TARGETS, force: bool = False) -> BuildResult:
    """The reference build: every in-repo target (or the cached build of the same inputs)."""
    return build(targets, source_root(), force=force)


def _build_one(
    kind: str,
    suffix: str,
    sources: Iterable[str | Path],
    name: str | None,
    source_root: Path | None,
    force: bool,
    *,
    include_dirs: Iterable[str | Path],
    defines: Iterable[str],
    libs: Iterable[str],
    ldflags: Iterable[str],
) -> Path:
    sources = tuple(sources)
    if not sources:
        raise BuildError(f"no sources given for a {kind}", "pass the .c files to compile")
    name = name or Path(sources[0]).stem + suffix
    target = Target(
        name,
        sources,
        kind,
        libs=tuple(libs),
        defines=tuple(defines),
        ldflags=tuple(ldflags),
        include_dirs=tuple(include_dirs),
    )
    return build([target], source_root, force=force)[name]


def build_driver(
    sources: Iterable[str | Path],
    name: str | None = None,
    *,
    source_root: Path | None = None,
    include_dirs: Iterable[str | Path] = (),
    defines: Iterable[str] = (),
    libs: Iterable[str] = NT_LIBS,
    ldflags: Iterable[str] = (),
    force: bool = False,
) -> Path:
    """Build one kernel driver (``name`` defaults to the first source's stem + ``.sys``) and
    return its path in the cache: checksummed and checked by :func:`~hil.deploy.pecheck.check_driver`."""
    return _build_one(
        "driver",
        ".sys",
        sources,
        name,
        source_root,
        force,
        include_dirs=include_dirs,
        defines=defines,
        libs=libs,
        ldflags=ldflags,
    )


def build_exe(
    sources: Iterable[str | Path],
    name: str | None = None,
    *,
    source_root: Path | None = None,
    include_dirs: Iterable[str | Path] = (),
    defines: Iterable[str] = (),
    libs: Iterable[str] = (),
    ldflags: Iterable[str] = (),
    force: bool = False,
) -> Path:
    """Build one Windows console program (``wmain``; ``name`` defaults to stem + ``.exe``)."""
    return _build_one(
        "user",
        ".exe",
        sources,
        name,
        source_root,
        force,
        include_dirs=include_dirs,
        defines=defines,
        libs=libs,
        ldflags=ldflags,
    )


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
