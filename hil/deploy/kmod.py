"""Linux kernel modules: cached out-of-tree builds, loading into guests, dmesg capture.

Library first, no pytest here::

    ko = build_module(Path("drivers/linux/kserver"), guest.kbuild_dir)
    load_module(guest, ko, port=7070, allow="10.0.2.2")
    ...
    unload_module(guest, "kserver")

Builds are cached below ``<cache>/kmod/<key>/`` (``<cache>`` is :func:`hil.paths.cache_root`:
``$HIL_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/kernel-hil`` or, as root,
``/var/cache/kernel-hil``). The key hashes every source file (the module directory plus
``extra_sources`` such as the shared protocol codec) and the identity of the kbuild tree
(kernel release, its ``Module.symvers`` and ``.config``), so a second build of the same
sources for the same kernel is a directory lookup. Concurrent builders (xdist workers) build
in private directories and publish with an atomic rename.

Modules are only ever loaded into guests, never on the host.  This repository's own drivers
and tools (kserver, the agent, the crash module, the storm tools) are built by
:mod:`hil.deploy.reference`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hil.crash import parse_all
from hil.deploy import coverage as coverage_mod
from hil.deploy.host_build import compile_c, compiler_messages
from hil.errors import EnvironmentProblem, GuestError, HilError
from hil.paths import cache_root
from hil.steps import step

# Files in a module directory that are build outputs, never inputs.
_OUTPUT_PATTERNS = re.compile(
    r"(\.o|\.ko|\.mod|\.mod\.c|\.cmd|\.symvers|\.order|\.tmp|\.d|\.swp|~)$|^(Module\.symvers|modules\.order)$"
)


class Guest(Protocol):
    """What this module needs from a guest (the ``linux_guest`` fixture provides it)."""

    def run(self, cmd: str, timeout: float = 60.0): ...

    def put(self, local_path, remote_path) -> None: ...

    def write_file(self, remote: str, data: bytes) -> None: ...

    def read_file(self, remote: str) -> bytes: ...


# ---- building ---------------------------------------------------------------------------------


def kbuild_identity(kbuild_dir: Path) -> str:
    """A string that changes whenever modules built against ``kbuild_dir`` would differ."""
    kbuild_dir = Path(kbuild_dir)
    if not (kbuild_dir / "Makefile").is_file():
        raise EnvironmentProblem(
            f"{kbuild_dir} is not a kernel build tree (no Makefile)",
            "install the kernel's headers (Debian: linux-headers-<release>) and point kbuild_dir at them",
        )
    h = hashlib.sha256()
    h.update(str(kbuild_dir.resolve()).encode())
    for rel in ("include/config/kernel.release", "Module.symvers", ".config"):
        p = kbuild_dir / rel
        if p.is_file():
            h.update(rel.encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


def kernel_release(kbuild_dir: Path) -> str:
    """The release modules built against ``kbuild_dir`` carry in their vermagic (``uname -r`` of
    the kernel they load into): ``UTS_RELEASE``.  Debian's headers say ``6.1.176`` in
    ``include/config/kernel.release`` but ``6.1.0-50-cloud-amd64`` there, which is what counts."""
    uts = Path(kbuild_dir) / "include/generated/utsrelease.h"
    if uts.is_file():
        m = re.search(r'#define\s+UTS_RELEASE\s+"([^"]+)"', uts.read_text(errors="replace"))
        if m:
            return m.group(1)
    p = Path(kbuild_dir) / "include/config/kernel.release"
    return p.read_text().strip() if p.is_file() else "unknown"


def _source_files(src_dir: Path) -> list[Path]:
    files = []
    for p in sorted(src_dir.rglob("*")):
        rel = p.relative_to(src_dir)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if _OUTPUT_PATTERNS.search(p.name):
            continue
        files.append(p)
    return files


def build_key(src_dir: Path, kbuild_dir: Path, extra_sources: Iterable[Path] = (), *, coverage: bool = False) -> str:
    src_dir = Path(src_dir)
    h = hashlib.sha256()
    h.update(b"kbuild\0" + kbuild_identity(kbuild_dir).encode())
    h.update(b"layout 2\0")  # bump when the build recipe changes (2: debug info stripped)
    if coverage:
        h.update(b"coverage 1\0")  # gcov profiling, built in place (hil.deploy.coverage)
    for p in _source_files(src_dir):
        h.update(b"src\0" + str(p.relative_to(src_dir)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    for p in sorted(Path(x) for x in extra_sources):
        h.update(b"extra\0" + p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:24]


def make_arguments(kbuild_dir: Path) -> list[str]:
    """``make`` arguments that enter ``kbuild_dir``.

    Debian splits headers into an arch tree whose Makefile is one line,
    ``include /usr/src/linux-headers-<ver>-common/Makefile``, and a common tree. When such a
    pair was unpacked somewhere else (a guest image's kbuild copy), the absolute include
    points nowhere; naming the sibling common Makefile with ``-f`` is what the wrapper does.
    """
    kbuild_dir = Path(kbuild_dir)
    args = ["-C", str(kbuild_dir)]
    text = (kbuild_dir / "Makefile").read_text(errors="replace").strip()
    m = re.fullmatch(r"include\s+(/\S+/Makefile)", text)
    if m and not Path(m.group(1)).is_file():
        sibling = kbuild_dir.parent / Path(m.group(1)).parent.name / "Makefile"
        if not sibling.is_file():
            raise EnvironmentProblem(
                f"{kbuild_dir}/Makefile includes {m.group(1)}, which is missing here and has no sibling copy",
                "unpack the matching linux-headers-<ver>-common package next to it",
            )
        args += ["-f", str(sibling)]
    return args


def build_module(
    src_dir: Path,
    kbuild_dir: Path,
    extra_sources: Iterable[Path] = (),
    *,
    name: str | None = None,
    make: str = "make",
    timeout: float = 600.0,
    strip_debug: bool = True,
    coverage: bool | None = None,
) -> Path:
    """Build the out-of-tree module in ``src_dir`` against ``kbuild_dir``; return the ``.ko``.

    ``extra_sources`` are copied next to the module's own files (flat, by file name), so its
    Kbuild can name them as objects: this is how the agent compiles the shared protocol codec
    without forking it. ``name`` picks the ``.ko`` when a directory builds several.
    ``coverage`` (default: :func:`hil.deploy.coverage.enabled`, ``--hil-coverage``) builds with
    gcov profiling, a ``.gcno`` beside each object (see :mod:`hil.deploy.coverage`).
    Raises :class:`HilError` with the compiler's messages when the build fails.
    """
    src_dir = Path(src_dir)
    kbuild_dir = Path(kbuild_dir)
    extra = [Path(p) for p in extra_sources]
    if not src_dir.is_dir():
        raise HilError(f"module source directory {src_dir} does not exist")
    for p in extra:
        if not p.is_file():
            raise HilError(f"extra source {p} does not exist", "is the shared protocol code checked out?")
    if shutil.which(make) is None:
        raise EnvironmentProblem(f"'{make}' not found", "apt-get install -y make gcc")

    cov = coverage_mod.enabled() if coverage is None else coverage
    make_extra = coverage_mod.make_arguments(kbuild_dir) if cov else []
    key = build_key(src_dir, kbuild_dir, extra, coverage=cov)
    base = cache_root() / "kmod"
    final = base / key
    if cov:
        return _build_in_place(final, src_dir, kbuild_dir, extra, name, make, timeout, strip_debug, make_extra)
    ko = _find_ko(final, name)
    if ko is not None:
        return ko

    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.build-", dir=base))
    try:
        _make_module(work, src_dir, kbuild_dir, extra, name, make, timeout, strip_debug)
        try:
            os.rename(work, final)
        except OSError:
            # another builder published the same key first: use theirs
            if _find_ko(final, name) is None:
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    ko = _find_ko(final, name)
    assert ko is not None
    return ko


def _build_in_place(
    final: Path,
    src_dir: Path,
    kbuild_dir: Path,
    extra: list[Path],
    name: str | None,
    make: str,
    timeout: float,
    strip_debug: bool,
    make_extra: list[str],
) -> Path:
    """A coverage build: in its final folder (the objects' paths name their counters in the
    guest), one builder at a time, complete once :func:`hil.deploy.coverage.mark_complete` ran."""
    with coverage_mod.build_lock(final):
        if not (coverage_mod.is_complete(final) and _find_ko(final, name) is not None):
            shutil.rmtree(final, ignore_errors=True)  # an interrupted build's leftovers
            final.mkdir(parents=True)
            try:
                _make_module(final, src_dir, kbuild_dir, extra, name, make, timeout, strip_debug, make_extra)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
            coverage_mod.mark_complete(final, src_dir)
    ko = _find_ko(final, name)
    assert ko is not None
    return ko


def _make_module(
    work: Path,
    src_dir: Path,
    kbuild_dir: Path,
    extra: list[Path],
    name: str | None,
    make: str,
    timeout: float,
    strip_debug: bool,
    make_extra: Iterable[str] = (),
) -> None:
    """Copy the sources into ``work`` and build the module there with kbuild."""
    for p in _source_files(src_dir):
        dest = work / p.relative_to(src_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
    for p in extra:
        shutil.copy2(p, work / p.name)
    with step("kmod.build", module=src_dir.name, release=kernel_release(kbuild_dir)):
        try:
            proc = subprocess.run(
                [make, *make_arguments(kbuild_dir), f"M={work}", *make_extra, "modules"],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise HilError(f"building {src_dir.name} took more than {timeout:.0f} s") from exc
    output = proc.stdout + proc.stderr
    (work / "build.log").write_text(output)
    if proc.returncode != 0:
        raise HilError(
            f"building module {src_dir.name} against {kbuild_dir} failed "
            f"(make exit {proc.returncode}):\n{compiler_messages(output)}",
            "fix the compiler errors above",
        )
    if _find_ko(work, name) is None:
        raise HilError(f"building {src_dir.name} produced no .ko:\n{compiler_messages(output)}")
    if strip_debug and shutil.which("objcopy"):
        # like INSTALL_MOD_STRIP=1: a tenth of the size to copy into every guest
        for ko_file in work.glob("*.ko"):
            subprocess.run(["objcopy", "--strip-debug", str(ko_file)], check=False, capture_output=True)


def _find_ko(directory: Path, name: str | None) -> Path | None:
    if not directory.is_dir():
        return None
    if name:
        p = directory / f"{name}.ko"
        return p if p.is_file() else None
    kos = sorted(directory.glob("*.ko"))
    if len(kos) > 1:
        raise HilError(f"{directory} holds several modules ({', '.join(k.name for k in kos)}); pass name=")
    return kos[0] if kos else None


def build_host_tool(source: Path, *, cc: str = "gcc", flags: Iterable[str] = ("-O2", "-static", "-Wall")) -> Path:
    """Compile a one-file C helper for the guest (statically, so it runs whatever the guest's
    libc); cached like modules, keyed by the source, the flags and the compiler version."""
    return compile_c(source, cc=cc, flags=flags)


# ---- loading into a guest ---------------------------------------------------------------------


def format_params(params: dict) -> str:
    """``insmod`` arguments, shell-quoted: ``reply="a b"`` survives both the shell and the
    kernel's own parser (which honours double quotes)."""
    parts = []
    for key, value in params.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise HilError(f"module parameter name {key!r} is not valid")
        if isinstance(value, bool):
            value = "Y" if value else "N"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        value = str(value)
        if '"' in value or "\n" in value:
            raise HilError(f"module parameter {key}: double quotes and newlines cannot be passed to insmod")
        arg = f'{key}="{value}"' if (not value or re.search(r"\s", value)) else f"{key}={value}"
        parts.append(shlex.quote(arg))
    return " ".join(parts)


@dataclass
class ModuleEvent:
    """What one load or unload printed in the kernel log."""

    name: str
    action: str
    kernel_log: str
    problems: list[str] = field(default_factory=list)


def dmesg(guest: Guest, timeout: float = 30.0) -> str:
    """The guest's whole kernel log as text."""
    res = guest.run("dmesg", timeout=timeout)
    res.check()
    return res.stdout.decode(errors="replace")


def save_dmesg(guest: Guest, path: Path) -> Path:
    """Write the guest's kernel log to ``path`` (an artifact for the report)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dmesg(guest))
    return path


def kernel_problems(text: str) -> list[str]:
    """The titles of the crash reports (oops, BUG, WARNING, KASAN, lockup, panic...) in a kernel
    log or console, found by the same detector that watches every guest (:mod:`hil.crash`)."""
    return [report.title for report in parse_all(text)]


def mark_kernel_log(guest: Guest, text: str) -> str:
    """Write a unique line to the guest's kernel log; returns its token (see kernel_log_since)."""
    token = f"hil-mark-{uuid.uuid4().hex[:12]}"
    guest.run(f"echo {shlex.quote(f'{token} {text}')} > /dev/kmsg", timeout=30).check()
    return token


def kernel_log_since(guest: Guest, token: str) -> str:
    """The guest's kernel log after the line holding ``token``."""
    text = dmesg(guest)
    idx = text.rfind(token)
    if idx < 0:
        return text  # the ring buffer wrapped past the mark: return everything
    nl = text.find("\n", idx)
    return text[nl + 1 :] if nl >= 0 else ""


def load_module(
    guest: Guest, ko_path: Path, *, timeout: float = 120.0, remote_dir: str = "/tmp", **params
) -> ModuleEvent:
    """Copy ``ko_path`` into the guest and ``insmod`` it with ``params``.

    Raises :class:`GuestError` with insmod's message and the new kernel log lines when
    loading fails or when the kernel logged an oops/BUG/WARNING while loading.
    """
    return load_module_with(guest, ko_path, params, timeout=timeout, remote_dir=remote_dir)


def load_module_with(
    guest: Guest, ko_path: Path, params: dict, *, timeout: float = 120.0, remote_dir: str = "/tmp"
) -> ModuleEvent:
    """:func:`load_module` with the module parameters as a dict, so that any name is a module
    parameter, ``timeout`` and ``remote_dir`` too."""
    ko_path = Path(ko_path)
    name = ko_path.stem
    remote = f"{remote_dir}/{ko_path.name}"
    with step("kmod.load", module=name, **{k: str(v) for k, v in params.items()}):
        guest.put(ko_path, remote)
        token = mark_kernel_log(guest, f"insmod {name}")
        res = guest.run(f"insmod {shlex.quote(remote)} {format_params(params)}", timeout=timeout)
        log = kernel_log_since(guest, token)
        problems = kernel_problems(log)
        if res.exit_code != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise GuestError(f"insmod {name} failed (exit {res.exit_code}): {err}\nkernel log:\n{log[-3000:]}")
        if problems:
            raise GuestError(
                f"loading {name} made the kernel complain:\n" + "\n".join(problems[:20]) + f"\n\n{log[-4000:]}"
            )
    return ModuleEvent(name=name, action="load", kernel_log=log, problems=problems)


def unload_module(guest: Guest, name: str, *, timeout: float = 120.0, check: bool = True) -> ModuleEvent:
    """``rmmod`` ``name``; raise :class:`GuestError` if it fails or the kernel complains."""
    with step("kmod.unload", module=name):
        token = mark_kernel_log(guest, f"rmmod {name}")
        res = guest.run(f"rmmod {shlex.quote(name)}", timeout=timeout)
        log = kernel_log_since(guest, token)
        problems = kernel_problems(log)
        if check and res.exit_code != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise GuestError(f"rmmod {name} failed (exit {res.exit_code}): {err}\nkernel log:\n{log[-3000:]}")
        if check and problems:
            raise GuestError(
                f"unloading {name} made the kernel complain:\n" + "\n".join(problems[:20]) + f"\n\n{log[-4000:]}"
            )
    return ModuleEvent(name=name, action="unload", kernel_log=log, problems=problems)


def is_loaded(guest: Guest, name: str) -> bool:
    res = guest.run(f"test -d /sys/module/{shlex.quote(name)}", timeout=30)
    return res.exit_code == 0


def module_param(guest: Guest, name: str, param: str) -> str:
    """Read ``/sys/module/<name>/parameters/<param>`` (the kserver ``stats`` counters, say)."""
    return guest.read_file(f"/sys/module/{name}/parameters/{param}").decode(errors="replace").strip()


def parse_counters(text: str) -> dict[str, int]:
    """``"a=1 b=2"`` -> ``{"a": 1, "b": 2}``."""
    out = {}
    for item in text.split():
        k, _, v = item.partition("=")
        if v.lstrip("-").isdigit():
            out[k] = int(v)
    return out
