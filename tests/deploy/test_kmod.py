"""hil.deploy.kmod without a guest: cached builds against the host's (or the guest image's)
headers, insmod arguments, and load/unload against a fake guest."""

from __future__ import annotations

import glob
import shlex
from pathlib import Path

import pytest
from command_result import CommandResult

from hil.deploy import kmod
from hil.errors import GuestError, HilError


def _kbuild() -> Path | None:
    """The embedded guest's own headers (what the suites build against), else the host's."""
    from hil.images.linux_image import cached_image

    img = cached_image()
    if img is not None and img.kbuild_dir and img.kbuild_dir.is_dir():
        return img.kbuild_dir
    for d in sorted(glob.glob("/usr/src/linux-headers-*")):
        if Path(d, "Module.symvers").is_file():
            return Path(d)
    return None


KBUILD = _kbuild()
needs_headers = pytest.mark.skipif(
    KBUILD is None,
    reason="no kernel headers: build the guest image (hil image build linux) or apt-get install linux-headers-amd64",
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


HELLO_C = r"""
#include <linux/module.h>
static int __init h_init(void) { return 0; }
static void __exit h_exit(void) { }
module_init(h_init);
module_exit(h_exit);
MODULE_LICENSE("GPL");
"""


@needs_headers
def test_build_is_cached_and_keyed_by_sources(tmp_path, cache):
    src = tmp_path / "hello"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := hello.o\n")
    (src / "hello.c").write_text(HELLO_C)
    ko = kmod.build_module(src, KBUILD)
    assert ko.name == "hello.ko" and ko.is_file()
    assert cache in ko.parents
    assert not list(src.glob("*.o")), "the source directory stays clean"
    mtime = ko.stat().st_mtime_ns
    assert kmod.build_module(src, KBUILD) == ko and ko.stat().st_mtime_ns == mtime

    (src / "hello.c").write_text(HELLO_C + '\nMODULE_DESCRIPTION("changed");\n')
    ko2 = kmod.build_module(src, KBUILD)
    assert ko2 != ko and ko2.is_file()


@needs_headers
def test_compiler_errors_become_hil_error(tmp_path, cache):
    src = tmp_path / "broken"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := broken.o\n")
    (src / "broken.c").write_text(HELLO_C + "\nint oops(void) { return undeclared_thing; }\n")
    with pytest.raises(HilError) as err:
        kmod.build_module(src, KBUILD)
    assert "undeclared_thing" in str(err.value)
    assert not list((cache / "kmod").glob("*")) or all(".build-" not in p.name for p in (cache / "kmod").iterdir())


def test_not_a_kbuild_tree(tmp_path, cache):
    (tmp_path / "m").mkdir()
    with pytest.raises(HilError, match="not a kernel build tree"):
        kmod.build_module(tmp_path / "m", tmp_path)


def test_format_params_survives_shell_and_kernel_quoting():
    args = kmod.format_params({"port": 7070, "allow": ["10.0.2.2", "10.0.2.15"], "reply": "hi there", "on": True})
    assert shlex.split(args) == ["port=7070", "allow=10.0.2.2,10.0.2.15", 'reply="hi there"', "on=Y"]
    with pytest.raises(HilError):
        kmod.format_params({"reply": 'say "x"'})
    with pytest.raises(HilError):
        kmod.format_params({"bad name": 1})


def test_kernel_problems_names_each_crash_precisely():
    oops = (Path(__file__).parents[1] / "crash" / "data" / "debian12-6.1-null-deref-oops.log").read_text()
    log = "[    1.000000] kserver: listening\n" + oops
    assert kmod.kernel_problems(log) == [
        "BUG: unable to handle kernel NULL pointer dereference in hil_demo_rx_complete"
    ]
    assert kmod.kernel_problems("[    1.000000] all fine\n") == []


def test_parse_counters():
    assert kmod.parse_counters("accepted=3 refused=1 junk x=-2\n") == {"accepted": 3, "refused": 1, "x": -2}


class FakeGuest:
    """Records commands; keeps a fake kernel log that /dev/kmsg writes append to."""

    def __init__(self, insmod_rc=0, insmod_log=""):
        self.log = ["[0.0] boot"]
        self.files = {}
        self.cmds = []
        self.insmod_rc = insmod_rc
        self.insmod_log = insmod_log

    def run(self, cmd, timeout=60.0):
        self.cmds.append(cmd)
        if cmd.startswith("echo ") and cmd.endswith("> /dev/kmsg"):
            self.log.append(shlex.split(cmd[5 : -len("> /dev/kmsg")])[0])
            return CommandResult(0)
        if cmd == "dmesg":
            return CommandResult(0, ("\n".join(self.log) + "\n").encode())
        if cmd.startswith("insmod"):
            if self.insmod_log:
                self.log.append(self.insmod_log)
            return CommandResult(
                self.insmod_rc, b"", b"insmod: ERROR: could not insert module" if self.insmod_rc else b""
            )
        if cmd.startswith("rmmod"):
            self.log.append("[9.0] kserver: stopped")
            return CommandResult(0)
        return CommandResult(0)

    def put(self, local, remote):
        self.files[remote] = Path(local).read_bytes()


def test_load_and_unload_with_a_fake_guest(tmp_path):
    ko = tmp_path / "kserver.ko"
    ko.write_bytes(b"\x7fELF")
    g = FakeGuest(insmod_log="[1.0] kserver: listening on port 7070")
    ev = kmod.load_module(g, ko, port=7070, reply="a b")
    assert g.files["/tmp/kserver.ko"] == b"\x7fELF"
    assert any(c.startswith("insmod /tmp/kserver.ko port=7070 'reply=\"a b\"'") for c in g.cmds)
    assert "listening on port 7070" in ev.kernel_log and "boot" not in ev.kernel_log
    ev = kmod.unload_module(g, "kserver")
    assert "stopped" in ev.kernel_log


def test_load_failure_and_oops_are_reported(tmp_path):
    ko = tmp_path / "kserver.ko"
    ko.write_bytes(b"x")
    with pytest.raises(GuestError, match="insmod kserver failed"):
        kmod.load_module(FakeGuest(insmod_rc=1, insmod_log="[1.0] kserver: cannot bind port 7070 (-98)"), ko)
    with pytest.raises(GuestError, match="complain"):
        kmod.load_module(
            FakeGuest(insmod_log="[    1.000000] BUG: unable to handle page fault for address: ffffffffc0a3b000"), ko
        )
