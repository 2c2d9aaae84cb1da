"""The ``debug`` flavour of the embedded guest's kernel: Debian's own kernel source, sanitised.

Built from Debian's source package of the guest image's kernel at exactly its version
(``linux-source-6.1=6.1.176-1`` for ``linux-image-6.1.0-50-cloud-amd64`` 6.1.176-1; apt's default
candidate is usually newer, so it is pinned), configured from ``x86_64_defconfig`` plus the
fragments in ``guests/linux/debug/`` (trim, what the guest needs built in, the debug options:
KASAN, KFENCE, PROVE_LOCKING, DEBUG_ATOMIC_SLEEP, DEBUG_KMEMLEAK, UBSAN, DEBUG_LIST,
GCOV_KERNEL), checked line by line after ``olddefconfig``, and built once under ``nice``::

    <cache>/kernels/<key>/
        bzImage                           direct kernel boot, no initrd (virtio-blk, ext4 built in)
        kbuild/linux-headers-<release>/   a relocatable headers tree (what Debian's builddeb puts
                                          in linux-headers-*): make -C <it> M=<module> modules
        lib/modules/<release>/            what the guest's /lib/modules/<release> needs
                                          (modules.builtin, .modinfo, modules.order; then depmod)
        config, System.map, build.log     the final .config, the symbols, every command's output
        manifest.json                     written last: an entry without it never counts

``key`` is a hash of the source version, the fragments' bytes and :data:`KERNEL_RECIPE_VERSION`.
The entry is made as ``<key>.partial`` and renamed when complete, under a file lock, so two
processes build it once and an interrupted build leaves nothing that looks complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hil.errors import EnvironmentProblem, HilError
from hil.paths import bundled, cache_root, ensure_dir
from hil.steps import Progress, step

if TYPE_CHECKING:
    from hil.images.linux_image import LinuxImage

# Bump when the build makes something different from the same source and fragments.
KERNEL_RECIPE_VERSION = "1"
FRAGMENTS = ("hil-trim.config", "hil-guest.config", "hil-debug.config")  # merged in this order
DEFCONFIG = "x86_64_defconfig"
# Objects (CC/AS lines) the build compiles, for the progress percentage: measured on the
# build of these fragments from 6.1.176-1 (1825; 22 min at nice 19 on 2 shared cores); an
# estimate for other sources and fragments, so the percentage stops at 99.
EXPECTED_OBJECTS = 1825
FREE_SPACE_GIB = 4  # the unpacked source (1.4 GB) and the build tree (0.8 GB), with room to spare
FAILURE_TAIL = 30  # lines of the log a failure shows
# What a build takes here, for the messages that offer one (measured under nice on two shared
# cores: 22.1 min alone, 22.6 min beside the tests of a CI run).
BUILD_TIME = "about 22 min on two cores"

# what the build runs -> the Debian package that provides it
BUILD_TOOLS = {
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
    "tar": "tar",
    "xz": "xz-utils",
    "make": "make",
    "gcc": "gcc",
    "perl": "perl",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
}
BUILD_HEADERS = {"gelf.h": "libelf-dev", "openssl/opensslv.h": "libssl-dev"}
HEADER_DIRS = (Path("/usr/include"), Path("/usr/include/x86_64-linux-gnu"))
BUILD_COMMAND = "hil image build linux --flavour debug"
# What the debug flavour adds to the guest's kernel command line.  init_on_alloc=1: every
# allocation starts zeroed, so no stale copy of an object's address (the slab free-list link left
# in the object allocated just before it) keeps kmemleak from reporting that object as leaked.
BOOT_PARAMETERS = "init_on_alloc=1"


# ---- what to build ------------------------------------------------------------------------------


def fragments_dir() -> Path:
    return bundled("guests") / "linux" / "debug"


def fragment_paths(folder: Path | None = None) -> list[Path]:
    folder = folder or fragments_dir()
    paths = [folder / name for name in FRAGMENTS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise HilError(
            f"the debug kernel's config fragments {', '.join(missing)} are missing from {folder}",
            "reinstall kernel-hil (the wheel ships guests/linux/debug/)",
        )
    return paths


def kernel_key(source_version: str, fragments: Iterable[Path]) -> str:
    """The cache key: the source version, each fragment (name and bytes, in merge order) and
    the recipe's version."""
    h = hashlib.sha256()
    h.update(f"debug-kernel\0{KERNEL_RECIPE_VERSION}\0{source_version}\0".encode())
    for p in fragments:
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def guest_kernel_version(image: LinuxImage) -> str:
    """The Debian version of the image's kernel package (``6.1.176-1``): what its headers say
    (``LINUX_PACKAGE_ID`` in ``include/generated/package.h``), else the version string in the
    kernel's own boot header (``... #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)``)."""
    texts = []
    if image.kbuild_dir is not None:
        package_h = image.kbuild_dir / "include" / "generated" / "package.h"
        if package_h.is_file():
            texts.append(package_h.read_text(errors="replace"))
    if image.kernel is not None and image.kernel.is_file():
        texts.append(bzimage_version_string(image.kernel))
    for text in texts:
        m = re.search(r"Debian (\d+\.\d+\.\d+-[\w.+~]+)", text)
        if m:
            return m.group(1)
    raise HilError(
        f"cannot tell the Debian version of the guest kernel {image.kernel_release or '(unknown)'}",
        "the debug flavour is built from the embedded guest's Debian kernel: "
        "rebuild the image with `hil image build linux --rebuild`",
    )


def bzimage_version_string(path: Path) -> str:
    """The kernel version string a bzImage's setup header points at ("" when it has none)."""
    with open(path, "rb") as f:
        head = f.read(0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return ""
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    end = head.find(b"\0", offset)
    return head[offset:end].decode(errors="replace") if 0x200 < offset < len(head) and end > 0 else ""


def source_package(version: str) -> str:
    """``linux-source-6.1`` for ``6.1.176-1``."""
    m = re.match(r"(\d+\.\d+)\.", version)
    if not m:
        raise HilError(f"{version!r} is not a Debian kernel version", "expected something like 6.1.176-1")
    return f"linux-source-{m.group(1)}"


def kernels_dir() -> Path:
    return ensure_dir(cache_root() / "kernels")


@dataclass(frozen=True)
class DebugKernelPlan:
    """What the debug kernel of an image is: its source, its key, where it goes."""

    guest_release: str  # the stock kernel's release (6.1.0-50-cloud-amd64)
    source_version: str  # Debian's version of both (6.1.176-1)
    package: str  # linux-source-6.1
    key: str
    dir: Path
    fragments: tuple[Path, ...]

    @property
    def pin(self) -> str:
        return f"{self.package}={self.source_version}"


def plan_for(image: LinuxImage, fragments_folder: Path | None = None) -> DebugKernelPlan:
    version = guest_kernel_version(image)
    fragments = tuple(fragment_paths(fragments_folder))
    key = kernel_key(version, fragments)
    return DebugKernelPlan(
        guest_release=image.kernel_release,
        source_version=version,
        package=source_package(version),
        key=key,
        dir=cache_root() / "kernels" / key,
        fragments=fragments,
    )


# ---- what was built ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebugKernel:
    """A built debug kernel (a complete cache entry)."""

    dir: Path
    key: str
    release: str  # 6.1.176-hil-debug: uname -r in the guest, the vermagic of modules built here
    source_version: str
    bzimage: Path
    kbuild_dir: Path
    modules_dir: Path  # the guest's /lib/modules/<release>
    config: Path
    log: Path
    build_s: float | None = None  # how long the build took, and when it ended (UTC)
    built_at: str | None = None

    @classmethod
    def from_dir(cls, d: Path) -> DebugKernel:
        m = json.loads((d / "manifest.json").read_text())
        release = m["release"]
        return cls(
            dir=d,
            key=m["key"],
            release=release,
            source_version=m["source_version"],
            bzimage=d / "bzImage",
            kbuild_dir=d / "kbuild" / f"linux-headers-{release}",
            modules_dir=d / "lib" / "modules" / release,
            config=d / "config",
            log=d / "build.log",
            build_s=m.get("build_s"),
            built_at=m.get("built_at"),
        )


def cached_debug_kernel(plan: DebugKernelPlan) -> DebugKernel | None:
    """The complete entry of ``plan``, or None.  Complete = ``<key>/manifest.json`` exists: it
    is written last in ``<key>.partial``, which is then renamed; nothing else ever counts."""
    return DebugKernel.from_dir(plan.dir) if (plan.dir / "manifest.json").is_file() else None


@dataclass(frozen=True)
class DebugKernelState:
    """Where the debug kernel of an image stands (``hil image show``, ``hil doctor``): its plan
    and its built entry, or why there is no plan (no image yet, not a Debian kernel)."""

    plan: DebugKernelPlan | None
    kernel: DebugKernel | None
    problem: str = ""


def debug_kernel_state(image: LinuxImage | None) -> DebugKernelState:
    if image is None:
        return DebugKernelState(None, None, "needs the linux image first (hil image build linux)")
    try:
        plan = plan_for(image)
    except HilError as exc:
        return DebugKernelState(None, None, exc.problem)
    return DebugKernelState(plan, cached_debug_kernel(plan))


def ensure_debug_kernel(
    progress: Progress | None = None, image: LinuxImage | None = None, rebuild: bool = False
) -> DebugKernel:
    """The debug kernel of ``image`` (default: the embedded guest image, built first if need
    be), from the cache or built now with progress (22 minutes measured, under nice on two
    shared cores)."""
    if image is None:
        from hil.images.linux_image import ensure_linux_image

        image = ensure_linux_image()
    plan = plan_for(image)
    progress = progress or Progress(f"debug kernel {plan.key}")
    with open(kernels_dir() / f".{plan.key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.update("waiting", f"another process is building debug kernel {plan.key}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild and plan.dir.exists():
            shutil.rmtree(plan.dir)
        found = cached_debug_kernel(plan)
        if found is not None:
            return found
        with step("debug-kernel-build", key=plan.key):
            _build(plan, progress)
        return DebugKernel.from_dir(plan.dir)


# ---- host requirements ----------------------------------------------------------------------------


def missing_build_packages() -> list[str]:
    """The Debian packages the build needs and this host lacks (sorted, no duplicates)."""
    missing = {pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool) is None}
    for header, pkg in BUILD_HEADERS.items():
        if not any((d / header).is_file() for d in HEADER_DIRS):
            missing.add(pkg)
    return sorted(missing)


def apt_install_line(packages: Iterable[str]) -> str:
    return "apt-get install -y " + " ".join(packages)


def _require_host() -> None:
    missing = missing_build_packages()
    if missing:
        raise EnvironmentProblem(
            f"building the debug kernel needs packages this host lacks: {', '.join(missing)}",
            apt_install_line(missing),
        )
    free = shutil.disk_usage(kernels_dir()).free
    if free < FREE_SPACE_GIB << 30:
        raise EnvironmentProblem(
            f"building the debug kernel needs {FREE_SPACE_GIB} GiB free in {kernels_dir()}; "
            f"{free / (1 << 30):.1f} GiB are",
            "free some space there, or set HIL_CACHE_DIR to a larger disk",
        )


# ---- the configuration check ---------------------------------------------------------------------

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def _config_values(text: str) -> dict[str, str | None]:
    """``CONFIG_X`` -> its value, or None for ``# CONFIG_X is not set``."""
    values: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _SET.match(line):
            values[m.group(1)] = m.group(2)
        elif m := _UNSET.match(line):
            values[m.group(1)] = None
    return values


def lost_options(config_text: str, fragments: dict[str, str]) -> list[str]:
    """Every fragment line the final ``.config`` does not have, as ``CONFIG_X (file wants
    'line', got 'line')``.  A ``# CONFIG_X is not set`` line is kept when the symbol is unset
    or absent (this kernel does not have it at all); anything else must be there verbatim."""
    final = _config_values(config_text)
    lost = []
    for name, text in fragments.items():
        for sym, want in _config_values(text).items():
            have = final.get(sym)
            if have == want:
                continue
            want_line = f"{sym}={want}" if want is not None else f"# {sym} is not set"
            got = "absent" if sym not in final else (f"{sym}={have}" if have is not None else f"# {sym} is not set")
            lost.append(f"{sym} ({name} wants '{want_line}', got '{got}')")
    return lost


def check_config(config: Path, fragments: Iterable[Path]) -> None:
    lost = lost_options(config.read_text(), {p.name: p.read_text() for p in fragments})
    if lost:
        raise HilError(
            f"the debug kernel's configuration lost {len(lost)} fragment line(s): {'; '.join(lost)}",
            f"a dependency is missing or conflicts: fix guests/linux/debug/ (the result is {config})",
        )


# ---- progress from make's output --------------------------------------------------------------------


class MakeProgress:
    """Turns kbuild's output lines into a progress detail: the objects compiled so far (CC and
    AS lines), an estimated percentage, the last one; linking and the finished image."""

    _COMPILE = re.compile(r"^\s+(?:CC|AS)(?: \[M\])?\s+(\S+)\s*$")
    _LINK = re.compile(r"^\s+LD\s+(vmlinux)\s*$")
    _READY = re.compile(r"^Kernel: (\S+) is ready")

    def __init__(self, expected: int = EXPECTED_OBJECTS):
        self.expected = max(1, expected)
        self.objects = 0
        self.last = ""
        self.stage = "compiling"

    def percent(self) -> int:
        return min(99, self.objects * 100 // self.expected)

    def feed(self, line: str) -> str | None:
        if m := self._COMPILE.match(line):
            self.objects += 1
            self.last = m.group(1)
        elif m := self._LINK.match(line):
            self.stage, self.last = "linking", m.group(1)
        elif m := self._READY.match(line):
            self.stage, self.last = "ready", m.group(1)
        else:
            return None
        return self.detail()

    def detail(self) -> str:
        if self.stage == "ready":
            return f"{self.objects} objects compiled, {self.last} is ready"
        return f"{self.objects} objects compiled (~{self.percent()}%), {self.stage} {self.last}"


# ---- the build -------------------------------------------------------------------------------------


def _nice() -> list[str]:
    cmd = ["nice", "-n", "19"]
    if shutil.which("ionice"):
        cmd += ["ionice", "-c", "3"]
    return cmd


def _jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _run(
    cmd: list[str],
    log: Path,
    progress: Progress,
    phase: str,
    detail: Callable[[str], str | None] | None = None,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    keep: Callable[[str], bool] | None = None,
    fix: str = f"see the log; `{BUILD_COMMAND}` starts again from scratch",
) -> None:
    """Run ``cmd`` with its output in ``log`` (only the lines ``keep`` accepts, if given) and
    fed line by line to ``detail`` for the progress display; a failure shows the log's last lines."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, "LC_ALL": "C", **(env or {})},
        )
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                if keep is None or keep(line):
                    out.write(raw)
                if detail is not None and (d := detail(line)):
                    progress.update(phase, d)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        rc = proc.wait()
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-FAILURE_TAIL:]
        raise HilError(
            f"debug kernel: {phase} failed (exit {rc}); the last {len(tail)} lines of {log}:\n    "
            + "\n    ".join(tail),
            fix,
        )


def _build(plan: DebugKernelPlan, progress: Progress) -> None:
    _require_host()
    partial = plan.dir.with_name(plan.dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if plan.dir.exists():  # incomplete (no manifest): never counted, replaced
        shutil.rmtree(plan.dir)
    partial.mkdir(parents=True)
    log = partial / "build.log"
    src_root, obj = partial / "src", partial / "build"
    t0 = time.monotonic()
    progress.update("source", f"{plan.pin} (the guest kernel {plan.guest_release})")
    try:
        deb = _download(plan, progress, log)
        src = _unpack(deb, src_root, progress, log)
        _configure(src, obj, plan.fragments, partial / "config", progress, log)
        make = MakeProgress()
        progress.update("build", f"bzImage and modules_prepare with -j{_jobs()} under nice ({BUILD_TIME})")
        _run(
            [*_nice(), "make", "-C", str(src), f"O={obj}", f"-j{_jobs()}", "bzImage", "modules"],
            log,
            progress,
            "build",
            make.feed,
            env={"KBUILD_BUILD_USER": "kernel-hil", "KBUILD_BUILD_HOST": "hil-debug"},
        )
        progress.update("install", "bzImage, headers tree, /lib/modules")
        release = _install(src, obj, partial)
    finally:  # the trees are 2 GB; the log and the config stay for a failure's diagnosis
        shutil.rmtree(src_root, ignore_errors=True)
        shutil.rmtree(obj, ignore_errors=True)
    build_s = time.monotonic() - t0
    manifest = {
        "key": plan.key,
        "release": release,
        "source_package": plan.package,
        "source_version": plan.source_version,
        "guest_release": plan.guest_release,
        "fragments": [p.name for p in plan.fragments],
        "recipe_version": KERNEL_RECIPE_VERSION,
        "objects": make.objects,
        "build_s": round(build_s, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for p in [partial, *partial.rglob("*")]:  # QEMU (libvirt-qemu) reads the bzImage
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else (p.stat().st_mode | 0o444))
    partial.rename(plan.dir)
    _prune_downloads(keep=deb.name)
    progress.done(f"built {plan.dir} (kernel {release}, {build_s / 60:.1f} min, {make.objects} objects)")


def _download(plan: DebugKernelPlan, progress: Progress, log: Path) -> Path:
    """Debian's source package at exactly the guest kernel's version (kept in
    ``kernels/downloads/`` so a change of fragments does not fetch it again)."""
    downloads = ensure_dir(kernels_dir() / "downloads")
    r = subprocess.run(
        ["apt-get", "download", "--print-uris", plan.pin],
        capture_output=True,
        text=True,
        cwd=downloads,
        env={**os.environ, "LC_ALL": "C"},
    )
    with open(log, "a") as out:
        out.write(f"$ apt-get download --print-uris {plan.pin}\n{r.stdout}{r.stderr}")
    m = re.search(r"^'(\S+)' (\S+\.deb) (\d+) SHA256:([0-9a-f]{64})", r.stdout, re.M)
    if r.returncode != 0 or not m:
        errors = [line for line in r.stderr.splitlines() if line.startswith("E:")]
        why = errors[-1] if errors else (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        raise EnvironmentProblem(
            f"apt cannot provide {plan.pin}, the exact version of the guest kernel {plan.guest_release}: {why}",
            "run apt-get update; if the mirror no longer has that version, add one that does "
            "(snapshot.debian.org), or rebuild the guest image for the current kernel (hil image build linux --rebuild)",
        )
    name, size, sha = m.group(2), int(m.group(3)), m.group(4)
    deb = downloads / name
    if deb.is_file() and _sha256(deb) == sha:
        progress.update("download", f"{name} (already downloaded)")
        return deb
    tmp = downloads / f".partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _let_apt_write(tmp)
    try:
        cmd = ["apt-get", "download", plan.pin]
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, cwd=tmp, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            while proc.poll() is None:
                got = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
                progress.update("download", f"{plan.pin}: {got >> 20} of {size >> 20} MB")
                time.sleep(1.0)
        fetched = tmp / name
        if proc.returncode != 0 or not fetched.is_file():
            raise EnvironmentProblem(
                f"apt-get download {plan.pin} failed (exit {proc.returncode}); see {log}",
                "check network access to the Debian mirror, then build again",
            )
        if _sha256(fetched) != sha:
            raise HilError(f"{name} does not have the SHA256 apt announced", "build again (a damaged download)")
        fetched.rename(deb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return deb


def _let_apt_write(folder: Path) -> None:
    """apt downloads as its sandbox user ``_apt`` when it can write there (else it warns and
    downloads as root)."""
    import pwd

    if os.geteuid() == 0:
        try:
            os.chown(folder, pwd.getpwnam("_apt").pw_uid, -1)
        except (KeyError, OSError):
            pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _prune_downloads(keep: str) -> None:
    for p in (kernels_dir() / "downloads").glob("*.deb"):
        if p.name != keep:
            p.unlink(missing_ok=True)


def _unpack(deb: Path, root: Path, progress: Progress, log: Path) -> Path:
    """The package's ``usr/src/linux-source-X.Y.tar.xz``, unpacked: the source tree (kept
    pristine: the build goes to ``O=``)."""
    pkg = root / "pkg"
    root.mkdir(parents=True)
    progress.update("unpack", deb.name)
    _run(["dpkg-deb", "-x", str(deb), str(pkg)], log, progress, "unpack")
    tarballs = sorted((pkg / "usr" / "src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise HilError(f"{deb.name} holds no usr/src/linux-source-*.tar.*", "is it Debian's linux-source package?")
    files = 0

    def count(line: str) -> str | None:
        nonlocal files
        files += 1
        return f"{files} files" if files % 500 == 0 else None

    _run(
        [*_nice(), "tar", "-xvf", str(tarballs[-1]), "-C", str(root)],
        log,
        progress,
        "unpack",
        count,
        keep=lambda line: line.startswith("tar:"),  # its messages, not the 80 000 file names
    )
    shutil.rmtree(pkg)
    trees = [d for d in root.iterdir() if d.is_dir() and (d / "Makefile").is_file()]
    if len(trees) != 1:
        raise HilError(f"{tarballs[-1].name} did not unpack into one kernel tree under {root}")
    return trees[0]


def _configure(src: Path, obj: Path, fragments: Iterable[Path], keep: Path, progress: Progress, log: Path) -> None:
    """x86_64_defconfig, the fragments merged in order, olddefconfig; then every fragment line
    must have survived (a lost option is an error naming it)."""
    fragments = list(fragments)
    obj.mkdir(parents=True)
    progress.update("configure", f"{DEFCONFIG} + {', '.join(p.name for p in fragments)}")
    _run(["make", "-C", str(src), f"O={obj}", DEFCONFIG], log, progress, "configure")
    merge = src / "scripts" / "kconfig" / "merge_config.sh"
    _run(
        ["sh", str(merge), "-m", "-O", str(obj), str(obj / ".config"), *map(str, fragments)],
        log,
        progress,
        "configure",
        cwd=src,
    )
    _run(["make", "-C", str(src), f"O={obj}", "olddefconfig"], log, progress, "configure")
    shutil.copy2(obj / ".config", keep)
    progress.update("configure", f"checking that every line of the {len(fragments)} fragments survived")
    check_config(keep, fragments)


def _install(src: Path, obj: Path, dest: Path) -> str:
    """bzImage, System.map, the headers tree and /lib/modules/<release> into ``dest``."""
    release = (obj / "include" / "config" / "kernel.release").read_text().strip()
    shutil.copy2(obj / "arch" / "x86" / "boot" / "bzImage", dest / "bzImage")
    shutil.copy2(obj / "System.map", dest / "System.map")
    modules = ensure_dir(dest / "lib" / "modules" / release)
    for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if not (obj / name).is_file():
            raise HilError(f"the kernel build made no {name}", "is CONFIG_MODULES=y in guests/linux/debug/?")
        shutil.copy2(obj / name, modules / name)
    headers_tree(src, obj, dest / "kbuild" / f"linux-headers-{release}")
    return release


def headers_tree(src: Path, obj: Path, dest: Path) -> None:
    """A relocatable tree for out-of-tree module builds, like 6.1's ``scripts/package/builddeb``
    makes for linux-headers-*: the source's Makefiles, include/, scripts/, arch/x86's include
    and scripts folders and platform files, then the build's generated headers, host tools,
    objtool, Module.symvers and .config over them."""
    x86 = src / "arch" / "x86"
    src_files = [p for d in (src, x86) for p in d.glob("Makefile*") if p.is_file()]
    src_files += _files(src / "include", src / "scripts")
    src_files += [p for p in x86.rglob("*") if p.name in ("Kbuild.platforms", "Platform") and p.is_file()]
    src_files += _files(*(d for d in x86.rglob("*") if d.is_dir() and d.name in ("include", "scripts")))
    obj_files = [obj / "tools" / "objtool" / "objtool", obj / "Module.symvers", obj / ".config"]
    obj_files += _files(obj / "arch" / "x86" / "include", obj / "include", obj / "scripts")
    for base, files in ((src, src_files), (obj, obj_files)):
        for f in files:
            if not (f.is_file() or f.is_symlink()):
                continue
            target = dest / f.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            if f.is_symlink():
                target.symlink_to(os.readlink(f))
            else:
                shutil.copy2(f, target)


def _files(*folders: Path) -> list[Path]:
    """Every file and symlink below ``folders`` (not following links)."""
    out: list[Path] = []
    for folder in folders:
        for root, dirs, names in os.walk(folder):
            out += [Path(root) / n for n in names]
            out += [Path(root) / d for d in dirs if (Path(root) / d).is_symlink()]
    return out


# ---- into the guest --------------------------------------------------------------------------------


def install_modules(guest: Any, kernel: DebugKernel) -> None:
    """Give a booted guest ``/lib/modules/<release>`` of the debug kernel (modules.builtin,
    .modinfo, modules.order) and run depmod, so modprobe and udev know what is built in.  Done
    once before the ready-guest snapshot is saved: every restored copy has it."""
    target = f"/lib/modules/{kernel.release}"
    guest.run(f"mkdir -p {target}", timeout=30, check=True)
    for f in sorted(kernel.modules_dir.iterdir()):
        guest.put(f, f"{target}/{f.name}")
    # the agent creates files 0666: make them what modules_install would
    guest.run(f"chmod 0644 {target}/* && depmod {kernel.release}", timeout=120, check=True)
