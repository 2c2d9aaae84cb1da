"""The debug kernel flavour (hil.images.debug_kernel), fast: its cache key, the config check, the
progress parser on captured make output, the cache's completeness rule, the source version and
the host checks.  The real build (about 22 min) is ``test_debug_kernel_build.py``, opt-in."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hil.errors import EnvironmentProblem, HilError
from hil.images import debug_kernel as dk
from hil.images.linux_image import LinuxImage, cached_image
from hil.steps import Progress

DATA = Path(__file__).parent / "data"


def fake_image(tmp_path: Path, package_id: str = " Debian 6.1.176-1", kernel: bytes | None = None) -> LinuxImage:
    """An image whose headers say which Debian kernel it has (what the real one's headers say)."""
    kbuild = tmp_path / "image" / "kbuild" / "usr" / "src" / "linux-headers-6.1.0-50-cloud-amd64"
    (kbuild / "include" / "generated").mkdir(parents=True)
    (kbuild / "include" / "generated" / "package.h").write_text(f'#define LINUX_PACKAGE_ID "{package_id}"\n')
    vmlinuz = tmp_path / "image" / "vmlinuz"
    vmlinuz.write_bytes(kernel or b"\0" * 1024)
    return LinuxImage(
        dir=tmp_path / "image",
        disk=tmp_path / "image" / "base.qcow2",
        kernel=vmlinuz,
        initrd=None,
        cmdline="root=/dev/vda",
        kernel_release="6.1.0-50-cloud-amd64",
        kbuild_dir=kbuild,
    )


def bzimage_with_version(version: str) -> bytes:
    """The first bytes of a bzImage: the setup header's magic and its kernel_version pointer."""
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    head[0x20E:0x210] = (0x400 - 0x200).to_bytes(2, "little")
    text = version.encode() + b"\0"
    head[0x400 : 0x400 + len(text)] = text
    return bytes(head)


def fragments_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "fragments"
    shutil.copytree(dk.fragments_dir(), folder)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---- the key ---------------------------------------------------------------------------------------


def test_the_shipped_fragments_are_the_three_in_merge_order():
    assert [p.name for p in dk.fragment_paths()] == list(dk.FRAGMENTS)
    debug = (dk.fragments_dir() / "hil-debug.config").read_text()
    for option in (
        "CONFIG_KASAN_GENERIC=y",
        "CONFIG_KFENCE=y",
        "CONFIG_PROVE_LOCKING=y",
        "CONFIG_DEBUG_ATOMIC_SLEEP=y",
        "CONFIG_DEBUG_KMEMLEAK=y",
        "CONFIG_UBSAN_BOUNDS=y",
        "CONFIG_UBSAN_SHIFT=y",
        "CONFIG_DEBUG_LIST=y",
        "CONFIG_GCOV_KERNEL=y",
    ):
        assert option in debug.splitlines(), option


def test_the_key_is_stable_and_changes_with_a_fragment_the_version_or_the_recipe(tmp_path, monkeypatch):
    folder = fragments_copy(tmp_path)
    frags = dk.fragment_paths(folder)
    key = dk.kernel_key("6.1.176-1", frags)
    assert key == dk.kernel_key("6.1.176-1", dk.fragment_paths(folder)) and len(key) == 16
    assert dk.kernel_key("6.1.176-1", dk.fragment_paths()) == key  # a copy: the same bytes
    assert dk.kernel_key("6.1.177-1", frags) != key
    with open(folder / "hil-guest.config", "a") as f:
        f.write("CONFIG_IKCONFIG=y\n")
    changed = dk.kernel_key("6.1.176-1", frags)
    assert changed != key
    (folder / "hil-guest.config").write_bytes((dk.fragments_dir() / "hil-guest.config").read_bytes())
    assert dk.kernel_key("6.1.176-1", frags) == key  # back to the same bytes: the same key
    monkeypatch.setattr(dk, "KERNEL_RECIPE_VERSION", "2")
    assert dk.kernel_key("6.1.176-1", frags) != key


def test_a_missing_fragment_is_named(tmp_path):
    folder = fragments_copy(tmp_path)
    (folder / "hil-trim.config").unlink()
    with pytest.raises(HilError, match="fragments hil-trim.config are missing"):
        dk.fragment_paths(folder)


# ---- the source version ---------------------------------------------------------------------------


def test_the_source_is_pinned_to_the_image_kernels_debian_version(tmp_path, cache):
    plan = dk.plan_for(fake_image(tmp_path))
    assert (plan.source_version, plan.package, plan.pin) == (
        "6.1.176-1",
        "linux-source-6.1",
        "linux-source-6.1=6.1.176-1",
    )
    assert plan.dir == cache / "kernels" / plan.key and plan.guest_release == "6.1.0-50-cloud-amd64"


def test_the_version_comes_from_the_kernels_boot_header_without_headers(tmp_path):
    header = (
        "6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)"
    )
    img = fake_image(tmp_path, package_id="", kernel=bzimage_with_version(header))
    assert dk.bzimage_version_string(img.kernel) == header
    assert dk.guest_kernel_version(img) == "6.1.176-1"


def test_an_image_without_a_debian_kernel_is_one_clear_error(tmp_path):
    with pytest.raises(HilError, match="cannot tell the Debian version of the guest kernel 6.1.0-50-cloud-amd64"):
        dk.guest_kernel_version(fake_image(tmp_path, package_id=""))


def test_the_embedded_image_names_its_kernel_version():
    img = cached_image()
    if img is None:
        pytest.skip("the embedded image is not built (hil image build linux)")
    version = dk.guest_kernel_version(img)
    assert version.startswith(img.kernel_release.split("-")[0].rsplit(".", 1)[0] + ".")  # 6.1.x for 6.1.0-50
    assert f"Debian {version}" in dk.bzimage_version_string(img.kernel)


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="no apt-get")
def test_a_version_apt_cannot_provide_is_one_line_naming_it(tmp_path, cache):
    plan = dk.plan_for(fake_image(tmp_path, package_id=" Debian 6.1.999-9"))
    (tmp_path / "log").write_text("")
    with pytest.raises(EnvironmentProblem) as e:
        dk._download(plan, Progress("t"), tmp_path / "log")
    assert "apt cannot provide linux-source-6.1=6.1.999-9, the exact version of the guest kernel" in e.value.problem
    assert "\n" not in e.value.problem and "apt-get update" in (e.value.fix or "")


# ---- the configuration check -----------------------------------------------------------------------

FINAL = """\
CONFIG_KASAN=y
CONFIG_KASAN_GENERIC=y
# CONFIG_DRM is not set
CONFIG_LOCALVERSION="-hil-debug"
CONFIG_GCOV_KERNEL=m
# CONFIG_DEBUG_LIST is not set
"""


def test_every_fragment_line_that_survived_is_kept():
    frag = 'CONFIG_KASAN=y\n# CONFIG_DRM is not set\n# CONFIG_NO_SUCH_SYMBOL is not set\nCONFIG_LOCALVERSION="-hil-debug"\n'
    assert dk.lost_options(FINAL, {"a.config": frag}) == []


def test_a_lost_option_is_named_with_its_fragment_and_what_it_became(tmp_path):
    frag = "# a comment\nCONFIG_KASAN=y\nCONFIG_DEBUG_LIST=y\nCONFIG_GCOV_KERNEL=y\nCONFIG_KFENCE=y\n# CONFIG_KASAN_GENERIC is not set\n"
    lost = dk.lost_options(FINAL, {"hil-debug.config": frag})
    assert lost == [
        "CONFIG_DEBUG_LIST (hil-debug.config wants 'CONFIG_DEBUG_LIST=y', got '# CONFIG_DEBUG_LIST is not set')",
        "CONFIG_GCOV_KERNEL (hil-debug.config wants 'CONFIG_GCOV_KERNEL=y', got 'CONFIG_GCOV_KERNEL=m')",
        "CONFIG_KFENCE (hil-debug.config wants 'CONFIG_KFENCE=y', got 'absent')",
        "CONFIG_KASAN_GENERIC (hil-debug.config wants '# CONFIG_KASAN_GENERIC is not set', got 'CONFIG_KASAN_GENERIC=y')",
    ]
    (tmp_path / ".config").write_text(FINAL)
    (tmp_path / "hil-debug.config").write_text(frag)
    with pytest.raises(HilError, match="lost 4 fragment line\\(s\\): CONFIG_DEBUG_LIST .*CONFIG_KFENCE"):
        dk.check_config(tmp_path / ".config", [tmp_path / "hil-debug.config"])


# ---- progress from make's output ------------------------------------------------------------------


def test_the_progress_counts_compiled_objects_in_captured_make_output():
    lines = (DATA / "make-output.log").read_text().splitlines()
    make = dk.MakeProgress(expected=186)
    details = [d for line in lines if (d := make.feed(line))]
    assert make.objects == 93  # the sample's CC and AS lines; HOSTCC, LD, AR, WRAP... are not objects
    assert (
        details[0]
        == "1 objects compiled (~0%), compiling /var/cache/kernel-hil/kernels/KEY.partial/build/tools/objtool/exec-cmd.o"
    )
    assert "47 objects compiled (~25%)" in details[46]
    linking = [d for d in details if d.endswith("linking vmlinux")]
    assert len(linking) == 1 and re.fullmatch(r"\d+ objects compiled \(~\d+%\), linking vmlinux", linking[0])
    assert details[-1] == "93 objects compiled, arch/x86/boot/bzImage is ready"


def test_the_percentage_is_an_estimate_that_stops_at_99():
    make = dk.MakeProgress(expected=2)
    for line in ["  CC      a.o", "  CC [M]  /tmp/m/b.o", "  AS      c.o", "  HOSTCC  scripts/x", "  LD      a"]:
        make.feed(line)
    assert make.objects == 3 and make.percent() == 99 and make.detail() == "3 objects compiled (~99%), compiling c.o"


def test_a_failing_command_shows_the_last_30_lines_and_the_log_path(tmp_path):
    log = tmp_path / "build.log"
    with pytest.raises(HilError) as e:
        dk._run(["sh", "-c", "for i in $(seq 1 50); do echo line $i; done; exit 3"], log, Progress("t"), "build")
    problem = e.value.problem
    assert problem.startswith(f"debug kernel: build failed (exit 3); the last 30 lines of {log}:")
    assert "line 50" in problem and "line 21" in problem and "line 20\n" not in problem
    assert "line 1\n" in log.read_text()  # the whole output is in the log


# ---- the cache: complete entries only --------------------------------------------------------------


def fake_build(calls: list, fail_after: str | None = None):
    """Stands in for the 30-minute build: writes what the real one writes, into ``.partial``."""

    def build(plan, progress):
        calls.append(plan.key)
        partial = plan.dir.with_name(plan.dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        if plan.dir.exists():
            shutil.rmtree(plan.dir)
        (partial / "lib" / "modules" / "6.1.176-hil-debug").mkdir(parents=True)
        (partial / "bzImage").write_bytes(b"kernel")
        if fail_after == "bzImage":
            raise HilError("debug kernel: build failed (exit 2)")
        manifest = {"key": plan.key, "release": "6.1.176-hil-debug", "source_version": plan.source_version}
        (partial / "manifest.json").write_text(json.dumps(manifest))
        partial.rename(plan.dir)

    return build


def test_an_interrupted_build_never_counts_and_the_next_one_starts_again(tmp_path, cache, monkeypatch):
    img, calls = fake_image(tmp_path), []
    plan = dk.plan_for(img)
    monkeypatch.setattr(dk, "_build", fake_build(calls, fail_after="bzImage"))
    with pytest.raises(HilError, match="build failed"):
        dk.ensure_debug_kernel(Progress("t"), image=img)
    assert (cache / "kernels" / f"{plan.key}.partial" / "bzImage").is_file()
    assert dk.cached_debug_kernel(plan) is None and dk.debug_kernel_state(img).kernel is None

    monkeypatch.setattr(dk, "_build", fake_build(calls))
    built = dk.ensure_debug_kernel(Progress("t"), image=img)
    assert built.dir == plan.dir and built.release == "6.1.176-hil-debug" and built.key == plan.key
    assert built.bzimage == plan.dir / "bzImage" and built.modules_dir == plan.dir / "lib/modules/6.1.176-hil-debug"
    assert built.kbuild_dir == plan.dir / "kbuild" / "linux-headers-6.1.176-hil-debug"
    assert not (cache / "kernels" / f"{plan.key}.partial").exists()
    assert dk.ensure_debug_kernel(Progress("t"), image=img) == built and calls == [plan.key, plan.key]  # cached
    dk.ensure_debug_kernel(Progress("t"), image=img, rebuild=True)
    assert len(calls) == 3


def test_a_temp_folder_with_a_manifest_or_an_entry_without_one_never_counts(tmp_path, cache):
    plan = dk.plan_for(fake_image(tmp_path))
    partial = plan.dir.with_name(plan.key + ".partial")
    partial.mkdir(parents=True)
    (partial / "manifest.json").write_text(json.dumps({"key": plan.key, "release": "r", "source_version": "v"}))
    assert dk.cached_debug_kernel(plan) is None
    plan.dir.mkdir()
    (plan.dir / "bzImage").write_bytes(b"kernel")
    assert dk.cached_debug_kernel(plan) is None
    (plan.dir / "manifest.json").write_text(json.dumps({"key": plan.key, "release": "r", "source_version": "v"}))
    assert dk.cached_debug_kernel(plan) is not None


# ---- the host ----------------------------------------------------------------------------------------


def test_missing_build_packages_are_one_apt_line(monkeypatch, tmp_path):
    monkeypatch.setattr(dk.shutil, "which", lambda tool: None if tool in ("flex", "bison") else f"/usr/bin/{tool}")
    monkeypatch.setattr(dk, "HEADER_DIRS", (tmp_path,))
    (tmp_path / "openssl").mkdir()
    (tmp_path / "openssl" / "opensslv.h").write_text("")
    assert dk.missing_build_packages() == ["bison", "flex", "libelf-dev"]
    monkeypatch.setattr(dk, "kernels_dir", lambda: tmp_path)
    with pytest.raises(EnvironmentProblem) as e:
        dk._require_host()
    assert e.value.problem == "building the debug kernel needs packages this host lacks: bison, flex, libelf-dev"
    assert e.value.fix == "apt-get install -y bison flex libelf-dev"


def test_setup_installs_every_package_the_build_needs():
    """CI builds the debug kernel right after scripts/setup.sh: nothing may be left to install."""
    setup = (Path(__file__).parents[2] / "scripts" / "setup.sh").read_text()
    listed = set(re.findall(r"^APT_PACKAGES=\((.*?)^\)", setup, re.M | re.S)[0].split())
    essential = {"apt", "dpkg", "tar"}  # in every Debian root
    needed = set(dk.BUILD_TOOLS.values()) | set(dk.BUILD_HEADERS.values())
    assert needed - essential - listed == set()


# ---- the headers tree and the guest's /lib/modules ---------------------------------------------------


def test_the_headers_tree_has_the_sources_kbuild_files_and_the_builds_generated_ones(tmp_path):
    src, obj, dest = tmp_path / "src", tmp_path / "obj", tmp_path / "dest"
    for rel in (
        "Makefile",
        "include/linux/module.h",
        "scripts/Makefile.build",
        "arch/x86/Makefile",
        "arch/x86/Makefile_32.cpu",
        "arch/x86/include/asm/page.h",
        "arch/x86/entry/syscalls/Makefile",  # not what out-of-tree modules need
        "kernel/fork.c",
    ):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    (src / "scripts" / "link").symlink_to("Makefile.build")
    for rel in (
        ".config",
        "Module.symvers",
        "tools/objtool/objtool",
        "include/generated/utsrelease.h",
        "include/config/kernel.release",
        "arch/x86/include/generated/asm/orc_hash.h",
        "scripts/mod/modpost",
        "kernel/fork.o",
    ):
        (obj / rel).parent.mkdir(parents=True, exist_ok=True)
        (obj / rel).write_text("obj " + rel)
    dk.headers_tree(src, obj, dest)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() or p.is_symlink())
    assert got == [
        ".config",
        "Makefile",
        "Module.symvers",
        "arch/x86/Makefile",
        "arch/x86/Makefile_32.cpu",
        "arch/x86/include/asm/page.h",
        "arch/x86/include/generated/asm/orc_hash.h",
        "include/config/kernel.release",
        "include/generated/utsrelease.h",
        "include/linux/module.h",
        "scripts/Makefile.build",
        "scripts/link",
        "scripts/mod/modpost",
        "tools/objtool/objtool",
    ]
    assert (dest / "scripts" / "link").is_symlink() and (dest / "Makefile").read_text() == "Makefile"


class RecordingGuest:
    def __init__(self):
        self.calls: list[tuple] = []

    def run(self, cmd, timeout=60.0, check=False):
        self.calls.append(("run", cmd))

    def put(self, local, remote):
        self.calls.append(("put", Path(local).name, remote))


def test_the_guest_gets_lib_modules_then_depmod(tmp_path):
    modules = tmp_path / "lib" / "modules" / "6.1.176-hil-debug"
    modules.mkdir(parents=True)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        (modules / name).write_text("")
    kernel = dk.DebugKernel(
        dir=tmp_path,
        key="k",
        release="6.1.176-hil-debug",
        source_version="6.1.176-1",
        bzimage=tmp_path / "bzImage",
        kbuild_dir=tmp_path / "kbuild",
        modules_dir=modules,
        config=tmp_path / "config",
        log=tmp_path / "build.log",
    )
    guest = RecordingGuest()
    dk.install_modules(guest, kernel)
    target = "/lib/modules/6.1.176-hil-debug"
    assert guest.calls == [
        ("run", f"mkdir -p {target}"),
        ("put", "modules.builtin", f"{target}/modules.builtin"),
        ("put", "modules.builtin.modinfo", f"{target}/modules.builtin.modinfo"),
        ("put", "modules.order", f"{target}/modules.order"),
        ("run", f"chmod 0644 {target}/* && depmod 6.1.176-hil-debug"),
    ]


def test_the_fragments_are_valid_for_merge_config(tmp_path):
    """Each fragment line is a CONFIG_ assignment, a "# CONFIG_X is not set" or a comment: what
    merge_config.sh and the check read the same way."""
    for p in dk.fragment_paths():
        for n, line in enumerate(p.read_text().splitlines(), 1):
            ok = not line.strip() or dk._SET.match(line) or dk._UNSET.match(line) or line.startswith("# ")
            assert ok, f"{p.name}:{n}: {line!r}"
            if line.startswith("# CONFIG_"):
                assert dk._UNSET.match(line), f"{p.name}:{n}: {line!r} reads as a comment, not 'is not set'"
