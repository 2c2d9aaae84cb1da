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

Modules are only ever loaded into guests, never on the host.
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
from hil.deploy.host_build import compile_c, compiler_messages
from hil.errors import EnvironmentProblem, GuestError, HilError
from hil.paths import cache_root
from hil.steps import step
from hil.waiting import wait_until  # noqa: F401  (the suites' helper, re-exported)

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


def build_key(src_dir: Path, kbuild_dir: Path, extra_sources: Iterable[Path] = ()) -> str:
    src_dir = Path(src_dir)
    h = hashlib.sha256()
    h.update(b"kbuild\0" + kbuild_identity(kbuild_dir).encode())
    h.update(b"layout 2\0")  # bump when the build recipe changes (2: debug info stripped)
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
) -> Path:
    """Build the out-of-tree module in ``src_dir`` against ``kbuild_dir``; return the ``.ko``.

    ``extra_sources`` are copied next to the module's own files (flat, by file name), so its
    Kbuild can name them as objects: this is how the agent compiles the shared protocol codec
    without forking it. ``name`` picks the ``.ko`` when a directory builds several.
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

    key = build_key(src_dir, kbuild_dir, extra)
    base = cache_root() / "kmod"
    final = base / key
    ko = _find_ko(final, name)
    if ko is not None:
        return ko

    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.build-", dir=base))
    try:
        for p in _source_files(src_dir):
            dest = work / p.relative_to(src_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
        for p in extra:
            shutil.copy2(p, work / p.name)
        with step("kmod.build", module=src_dir.name, release=kernel_release(kbuild_dir)):
            try:
                proc = subprocess.run(
                    [make, *make_arguments(kbuild_dir), f"M={work}", "modules"],
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


# ---- small helpers shared by the module suites -------------------------------------------------

KSERVER_SERVE_DIR = "/srv/kserver"


def parse_pid_lines(output: str) -> list[tuple[str, int]]:
    """``<word> <pid>`` lines (a guest loop's ``echo $p $!``, hil_storm's ``<i> <pid>``)."""
    out = []
    for line in output.splitlines():
        word, _, pid = line.strip().rpartition(" ")
        if word and pid.isdigit():
            out.append((word, int(pid)))
    return out


# ---- where things are -------------------------------------------------------------------------


def drivers_dir() -> Path:
    from hil.paths import bundled

    return bundled("drivers")


def protocol_sources() -> list[Path]:
    """The shared agent protocol codec compiled into the Linux agent module."""
    d = drivers_dir() / "protocol"
    return [d / "hil_proto.c", d / "hil_proto.h"]


def build_storm_tool() -> Path:
    """``hil_storm COUNT TARGET [RATE]``: the exec storm generator (drivers/linux/tools).
    Dynamically linked (15 KB instead of 700 KB static): the guest is the host's Debian release."""
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


def build_kserver(kbuild_dir: Path) -> Path:
    return build_module(drivers_dir() / "linux" / "kserver", kbuild_dir, name="kserver")


def build_agent(kbuild_dir: Path) -> Path:
    return build_module(drivers_dir() / "linux" / "agent", kbuild_dir, protocol_sources(), name="hil_agent")


def build_crashmod(kbuild_dir: Path) -> Path:
    """``hil_crash``: crashes the kernel on command (``echo null|bug|warn|... > /proc/hil_crash``)."""
    return build_module(drivers_dir() / "linux" / "crashmod", kbuild_dir, name="hil_crash")


# ---- kserver client (drivers/linux/kserver/PROTOCOL.md) ---------------------------------------


class KServerClient:
    """A blocking client for the kserver protocol: one request line in, ``OK <len>`` + body
    or ``ERR <reason>`` out.

    >>> with KServerClient("127.0.0.1", port) as c:
    ...     assert c.request(b"hi") == ("OK", b"hello from kserver")
    """

    MAX_HEADER = 64

    def __init__(self, host: str, port: int, timeout: float = 30.0):
        import socket

        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""

    def __enter__(self) -> KServerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait(self, timeout: float) -> bool:
        """Whether the server sent something (or closed) within ``timeout`` seconds. Nothing is
        consumed: :meth:`read_response` reads it next."""
        import select

        if self._buf:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def read_response(self) -> tuple[str, bytes]:
        """``("OK", body)``, ``("ERR", reason)``; ``("EOF", b"")`` when the server closed first.

        Raises :class:`HilError` when the server breaks the framing (a short body, a bad header).
        """
        while b"\n" not in self._buf:
            if len(self._buf) > self.MAX_HEADER:
                raise HilError(f"kserver sent a header line longer than {self.MAX_HEADER} bytes: {self._buf[:80]!r}")
            if not self._fill():
                if self._buf:
                    raise HilError(f"kserver closed in the middle of a header: {self._buf!r}")
                return ("EOF", b"")
        line, self._buf = self._buf.split(b"\n", 1)
        kind, _, arg = line.partition(b" ")
        if kind == b"ERR":
            return ("ERR", arg)
        if kind != b"OK" or not arg.isdigit():
            raise HilError(f"kserver sent a malformed header: {line[:80]!r}")
        length = int(arg)
        while len(self._buf) < length:
            if not self._fill():
                raise HilError(f"kserver closed after {len(self._buf)} of {length} body bytes")
        body, self._buf = self._buf[:length], self._buf[length:]
        return ("OK", body)

    def request(self, line: bytes) -> tuple[str, bytes]:
        self.send(line + b"\n")
        return self.read_response()

    def get_file(self, name: str) -> bytes:
        status, body = self.request(b"FILE:" + name.encode())
        if status != "OK":
            raise HilError(f"kserver refused FILE:{name}: {status} {body.decode(errors='replace')}")
        return body
