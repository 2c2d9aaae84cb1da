"""Build (or find in the cache) the Debian guest described by a :class:`LinuxRecipe`.

The result is a directory ``<cache>/images/linux-<key>/`` holding::

    base.qcow2      the root file system (ext4, made with ``mkfs.ext4 -d``: nothing is mounted)
    vmlinuz         the image's own kernel, for direct kernel boot
    initrd.img      its initramfs
    kbuild/         the kernel's headers tree (usr/src + usr/lib/linux-kbuild-*) for host-side
                    module builds: ``make -C kbuild/usr/src/linux-headers-<release> M=...``
    manifest.json   key, kernel release, command line, sizes

The directory appears atomically (built as ``.partial`` and renamed) under a file lock, so
concurrent xdist workers build it once and a killed build leaves nothing that looks complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hil.errors import EnvironmentProblem, HilError
from hil.images.recipe import LinuxRecipe, load_linux_recipe
from hil.paths import images_dir
from hil.steps import Progress, step


@dataclass(frozen=True)
class LinuxImage:
    """A built Linux guest image (everything a domain needs to boot it)."""

    dir: Path
    disk: Path
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    kernel_release: str
    kbuild_dir: Path | None

    @classmethod
    def from_dir(cls, d: Path) -> LinuxImage:
        m = json.loads((d / "manifest.json").read_text())
        return cls(
            dir=d,
            disk=d / "base.qcow2",
            kernel=d / "vmlinuz",
            initrd=d / "initrd.img",
            cmdline=m["cmdline"],
            kernel_release=m["kernel_release"],
            kbuild_dir=d / "kbuild" / "usr" / "src" / f"linux-headers-{m['kernel_release']}",
        )


def image_dir_for(recipe: LinuxRecipe) -> Path:
    return images_dir() / f"linux-{recipe.key()}"


def cached_image(recipe: LinuxRecipe | None = None) -> LinuxImage | None:
    recipe = recipe or load_linux_recipe()
    d = image_dir_for(recipe)
    return LinuxImage.from_dir(d) if (d / "manifest.json").is_file() else None


def ensure_linux_image(
    recipe: LinuxRecipe | None = None, progress: Progress | None = None, rebuild: bool = False
) -> LinuxImage:
    """Return the cached image for ``recipe``, building it first if needed."""
    recipe = recipe or load_linux_recipe()
    final = image_dir_for(recipe)
    lock_path = images_dir() / f".linux-{recipe.key()}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild and final.exists():
            shutil.rmtree(final)
        if not (final / "manifest.json").is_file():
            progress = progress or Progress(f"image linux-{recipe.key()}")
            with step("image-build", key=recipe.key()):
                _build(recipe, final, progress)
        return LinuxImage.from_dir(final)


def _require_tools() -> None:
    missing = [t for t in ("debootstrap", "mkfs.ext4", "qemu-img") if not shutil.which(t)]
    if missing:
        raise EnvironmentProblem(
            f"building the Linux guest needs {', '.join(missing)}", "apt-get install debootstrap e2fsprogs qemu-utils"
        )
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "building the Linux guest with debootstrap needs root",
            "run `hil image build linux` as root, or point the config at your own image",
        )


def _run_logged(cmd: list[str], log: Path, progress: Progress, phase: str, line_detail=None) -> None:
    """Run ``cmd``, append its output to ``log``, feed lines to the progress display."""
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.write(raw)
            if line_detail:
                detail = line_detail(raw.decode(errors="replace").rstrip())
                if detail:
                    progress.update(phase, detail)
        rc = proc.wait()
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise HilError(
            f"{phase} failed (exit {rc}); last lines of {log}:\n    " + "\n    ".join(tail),
            "check network access to the Debian mirror and free disk space, then rebuild",
        )


def _debootstrap_detail():
    counts = {"Retrieving": 0, "Validating": 0, "Extracting": 0, "Unpacking": 0, "Configuring": 0}

    def detail(line: str) -> str | None:
        m = re.match(r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+)", line)
        if not m:
            return None
        counts[m.group(1)] += 1
        return f"{m.group(1).lower()} {counts[m.group(1)]} packages ({m.group(2)})"

    return detail


def _build(recipe: LinuxRecipe, final: Path, progress: Progress) -> None:
    _require_tools()
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log = partial / "build.log"
    root = partial / "root"

    progress.update("debootstrap", f"{recipe.suite} from {recipe.mirror}")
    _run_logged(
        [
            "debootstrap",
            f"--variant={recipe.variant}",
            f"--include={','.join(recipe.packages)}",
            recipe.suite,
            str(root),
            recipe.mirror,
        ],
        log,
        progress,
        "debootstrap",
        _debootstrap_detail(),
    )

    progress.update("configure", "overlay, services")
    _configure(recipe, root, log, progress)

    progress.update("extract", "kernel, initrd, headers")
    release = _extract_boot_files(root, partial)

    progress.update("mkfs", "ext4 from the root folder")
    used_mib = int(
        subprocess.run(
            ["du", "-sm", "--apparent-size", str(root)], check=True, capture_output=True, text=True
        ).stdout.split()[0]
    )
    size_mib = int(used_mib * 1.15) + recipe.headroom_mib
    raw = partial / "root.raw"
    _run_logged(
        ["mkfs.ext4", "-q", "-F", "-L", "hilroot", "-d", str(root), str(raw), f"{size_mib}M"], log, progress, "mkfs"
    )
    progress.update("qcow2", f"{size_mib} MiB file system")
    _run_logged(["qemu-img", "convert", "-O", "qcow2", str(raw), str(partial / "base.qcow2")], log, progress, "qcow2")
    raw.unlink()
    shutil.rmtree(root)

    manifest = {
        "key": recipe.key(),
        "recipe": str(recipe.path.name),
        "kernel_release": release,
        "cmdline": recipe.cmdline,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fs_size_mib": size_mib,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for p in [partial, *partial.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else (p.stat().st_mode | 0o444))
    partial.rename(final)
    progress.done(f"built {final} (kernel {release}, {size_mib} MiB)")


def _configure(recipe: LinuxRecipe, root: Path, log: Path, progress: Progress) -> None:
    if recipe.overlay.is_dir():
        shutil.copytree(recipe.overlay, root, dirs_exist_ok=True, symlinks=True)
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 hil-guest\n")
    system = root / "etc/systemd/system"
    for unit in recipe.mask:
        target = system / unit
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/null")
    if recipe.enable:
        _run_logged(["chroot", str(root), "systemctl", "enable", *recipe.enable], log, progress, "configure")
    # an empty root password lets a developer log in on the serial console of a kept guest
    _run_logged(["chroot", str(root), "passwd", "-d", "root"], log, progress, "configure")
    # debootstrap leaves the build host's resolver and apt caches behind
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    (root / "etc/machine-id").write_text("")


def _extract_boot_files(root: Path, out: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise HilError(f"no kernel in {root}/boot after debootstrap", "the recipe must include a linux-image-* package")
    release = kernels[-1].name.removeprefix("vmlinuz-")
    shutil.copy2(kernels[-1], out / "vmlinuz")
    shutil.copy2(root / "boot" / f"initrd.img-{release}", out / "initrd.img")
    kbuild = out / "kbuild" / "usr"
    (kbuild / "lib").mkdir(parents=True)
    shutil.copytree(root / "usr/src", kbuild / "src", symlinks=True)
    for d in (root / "usr/lib").glob("linux-kbuild-*"):
        shutil.copytree(d, kbuild / "lib" / d.name, symlinks=True)
    if not (kbuild / "src" / f"linux-headers-{release}").is_dir():
        raise HilError(
            f"the guest kernel {release} has no headers in the image",
            "the recipe must include the linux-headers-* package matching its kernel",
        )
    return release
