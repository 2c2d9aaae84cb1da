"""Leaks of unloaded modules, from kmemleak (hil.deploy.kmemleak and the module session).

The listings below are real: ``cat /sys/kernel/debug/kmemleak`` on the prototype debug kernel
(6.1.176-hil-debug) after ``echo leak > /proc/hil_crash``, ``rmmod hil_crash`` and two scans,
where the module's frames have become bare addresses; the section addresses are what the same
guest's ``/sys/module/hil_crash/sections`` said before the ``rmmod``, and the function table is
that of the ``.ko`` loaded there (built against the debug kernel's headers, which CI lacks).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from command_result import CommandResult

from hil.crash.kinds import CrashKind
from hil.deploy import kmemleak
from hil.deploy.module_session import ModuleSession

LISTING_AFTER_RMMOD = """\
unreferenced object 0xffff888007790600 (size 128):
  comm "sh", pid 178, jiffies 4294855956 (age 27.290s)
  hex dump (first 32 bytes):
    4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c  LLLLLLLLLLLLLLLL
    4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c 4c  LLLLLLLLLLLLLLLL
  backtrace:
    [<0000000063dbab12>] __kmalloc+0x48/0xf0
    [<000000006dd08282>] 0xffffffffc00d20d1
    [<00000000a16f4c47>] 0xffffffffc00d2236
    [<00000000463c7c4f>] 0xffffffffc00d2325
    [<0000000006202946>] proc_reg_write+0x1a7/0x270
    [<00000000e56fa6da>] vfs_write+0x204/0xe40
    [<000000007e88f45d>] ksys_write+0xfb/0x1d0
    [<00000000c0341685>] do_syscall_64+0x34/0x90
    [<00000000531a30aa>] entry_SYSCALL_64_after_hwframe+0x6e/0xd8
"""

SECTIONS = """\
/sys/module/hil_crash/sections/.bss:0xffffffffc00d6980
/sys/module/hil_crash/sections/.data:0xffffffffc00d5020
/sys/module/hil_crash/sections/.exit.data:0xffffffffc00d6560
/sys/module/hil_crash/sections/.exit.text:0xffffffffc00d2783
/sys/module/hil_crash/sections/.fini_array:0xffffffffc00d6568
/sys/module/hil_crash/sections/.gnu.linkonce.this_module:0xffffffffc00d6580
/sys/module/hil_crash/sections/.init.data:0xffffffffc00da008
/sys/module/hil_crash/sections/.init.text:0xffffffffc00d9000
/sys/module/hil_crash/sections/.init_array:0xffffffffc00da000
/sys/module/hil_crash/sections/.note.Linux:0xffffffffc00d3024
/sys/module/hil_crash/sections/.note.gnu.build-id:0xffffffffc00d3000
/sys/module/hil_crash/sections/.orc_unwind:0xffffffffc00d4044
/sys/module/hil_crash/sections/.orc_unwind_ip:0xffffffffc00d41fa
/sys/module/hil_crash/sections/.return_sites:0xffffffffc00d4010
/sys/module/hil_crash/sections/.rodata:0xffffffffc00d3060
/sys/module/hil_crash/sections/.rodata.str1.1:0xffffffffc00d3d60
/sys/module/hil_crash/sections/.static_call_sites:0xffffffffc00d6570
/sys/module/hil_crash/sections/.strtab:0xffffffffc00dba20
/sys/module/hil_crash/sections/.symtab:0xffffffffc00db000
/sys/module/hil_crash/sections/.text:0xffffffffc00d2000
/sys/module/hil_crash/sections/.text.exit:0xffffffffc00d27a0
/sys/module/hil_crash/sections/.text.startup:0xffffffffc00d27c0
/sys/module/hil_crash/sections/.text.unlikely:0xffffffffc00d237f
"""

# ko_functions() of that hil_crash.ko: (section, offset, size, name)
KO_FUNCTIONS = [
    (".text", 0, 44, "hil_crash_freeze_cpu"),
    (".text", 48, 33, "hil_crash_use_after_free"),
    (".text", 192, 31, "hil_crash_leak"),
    (".text.unlikely", 875, 39, "hil_crash_leak.cold"),
    (".text", 224, 385, "hil_crash_run"),
    (".text.unlikely", 914, 114, "hil_crash_run.cold"),
    (".init.text", 0, 146, "hil_crash_init"),
    (".text", 624, 271, "hil_crash_write"),
    (".exit.text", 0, 26, "hil_crash_exit"),
    (".exit.text", 0, 26, "cleanup_module"),
    (".init.text", 0, 146, "init_module"),
]

# A module whose module_init kept a kmalloc in a global its exit never freed (leakinit_setup,
# __init: the kernel frees its code after loading, so even kallsyms cannot name it any more).
INIT_LISTING = """\
unreferenced object 0xffff888009a57e00 (size 256):
  comm "insmod", pid 291, jiffies 4295088411 (age 31.311s)
  hex dump (first 32 bytes):
    00 e0 11 07 80 88 ff ff 00 00 00 00 a0 00 a1 07  ................
    00 90 da 09 00 00 00 00 00 10 00 00 01 00 02 00  ................
  backtrace:
    [<00000000da2bea33>] kmalloc_trace+0x21/0xc0
    [<00000000705a3146>] 0xffffffffc02a403c
    [<000000005d321ca4>] do_one_initcall+0xcc/0x380
    [<0000000033558305>] do_init_module+0x18b/0x5a0
    [<00000000368ad303>] load_module+0x5f17/0x85e0
    [<0000000005fa52be>] __do_sys_finit_module+0x104/0x180
    [<000000006d962007>] do_syscall_64+0x34/0x90
    [<000000008b16e6bf>] entry_SYSCALL_64_after_hwframe+0x6e/0xd8
"""


class FakeGuest:
    """Answers what a module session asks: the kernel log, insmod/rmmod, and (when
    ``listing`` is not None) kmemleak: the module's sections, scans, the listing."""

    name = "fake"
    kbuild_dir = None

    def __init__(self, listing: str | None = None, sections: str = SECTIONS):
        self.listing = listing
        self.sections = sections
        self.cmds: list[str] = []
        self.log = ["[0.0] boot"]
        self.crashes: list = []

    def run(self, cmd, timeout=60.0):
        self.cmds.append(cmd)
        if cmd.startswith("echo ") and cmd.endswith("> /dev/kmsg"):
            self.log.append(shlex.split(cmd[5 : -len("> /dev/kmsg")])[0])
            return CommandResult(0)
        if cmd == "dmesg":
            return CommandResult(0, ("\n".join(self.log) + "\n").encode())
        if cmd.startswith(f"test -e {kmemleak.KMEMLEAK}"):
            if self.listing is None:
                return CommandResult(3)
            return CommandResult(2, self.sections.encode())  # grep: "." and ".." are directories
        if cmd == f"echo scan > {kmemleak.KMEMLEAK}":
            return CommandResult(0)
        if cmd.startswith(f"echo scan > {kmemleak.KMEMLEAK} && cat"):
            return CommandResult(0, (self.listing or "").encode())
        return CommandResult(0)  # insmod, rmmod

    def put(self, local, remote):
        pass

    def console_text(self):
        return ""

    def is_running(self):
        return True

    def add_crash(self, report, source):
        self.crashes.append((report, source))


@pytest.fixture
def ko(tmp_path):
    path = tmp_path / "hil_crash.ko"
    path.write_bytes(b"\x7fELF")
    return path


@pytest.fixture
def fast(monkeypatch):
    """kmemleak's functions of the real .ko, and no waiting for objects to age."""
    monkeypatch.setattr(kmemleak, "ko_functions", lambda ko: KO_FUNCTIONS)
    monkeypatch.setattr(kmemleak, "MIN_AGE_S", 0.0)
    monkeypatch.setattr(kmemleak, "AGE_MARGIN_S", 0.0)


def test_a_leak_after_rmmod_fails_the_test_named_after_its_function(tmp_path, ko, fast):
    guest = FakeGuest(listing=LISTING_AFTER_RMMOD)
    session = ModuleSession(guest, tmp_path / "art")
    session.load(ko)
    guest.run("echo leak > /proc/hil_crash")
    assert session.finish() == []
    [(report, source)] = guest.crashes
    assert (report.title, report.kind, report.function, source) == (
        "memory leak in hil_crash_leak",
        CrashKind.LEAK,
        "hil_crash_leak",
        "kmemleak",
    )
    # the module's bare addresses are named in the report, the kernel's frames left as printed
    assert "[<000000006dd08282>] hil_crash_leak+0x11/0x1f [hil_crash]" in report.text
    assert "[<00000000a16f4c47>] hil_crash_run+0x156/0x181 [hil_crash]" in report.text
    assert "[<00000000463c7c4f>] hil_crash_write+0xb5/0x10f [hil_crash]" in report.text
    assert "proc_reg_write+0x1a7/0x270" in report.text
    assert (tmp_path / "art" / "kmemleak.txt").read_text() == LISTING_AFTER_RMMOD
    # where the code was is read before rmmod; the scans come after it
    order = [c.split()[0] if not c.startswith("test -e") else "sections" for c in guest.cmds]
    assert order.index("sections") < order.index("rmmod") < guest.cmds.index(f"echo scan > {kmemleak.KMEMLEAK}")
    assert guest.cmds[-3].endswith(f"echo clear > {kmemleak.KMEMLEAK}")


def test_the_check_waits_until_the_leak_is_old_enough_for_kmemleak(tmp_path, ko, monkeypatch):
    monkeypatch.setattr(kmemleak, "ko_functions", lambda ko: KO_FUNCTIONS)
    slept = []
    monkeypatch.setattr(kmemleak.time, "sleep", slept.append)
    guest = FakeGuest(listing="")
    session = ModuleSession(guest, tmp_path)
    session.load(ko)
    session.unload("hil_crash")
    assert session.check_leaks() == []
    assert len(slept) == 1 and kmemleak.MIN_AGE_S < slept[0] <= kmemleak.MIN_AGE_S + kmemleak.AGE_MARGIN_S
    assert session.check_leaks() == []  # nothing unloaded since: no scan
    assert sum("scan" in c for c in guest.cmds) == 2


def test_without_kmemleak_the_check_is_one_test_e_per_session(tmp_path, ko):
    guest = FakeGuest(listing=None)
    session = ModuleSession(guest, tmp_path)
    session.load(ko)
    other = ko.with_name("kserver.ko")
    other.write_bytes(b"\x7fELF")
    session.load(other)
    session.unload("kserver")
    assert session.finish() == []
    asked = [c for c in guest.cmds if "kmemleak" in c]
    assert asked == [f"test -e {kmemleak.KMEMLEAK} || exit 3; grep -Hs . /sys/module/kserver/sections/.*"]
    assert guest.crashes == []


def test_a_kmemleak_that_turned_itself_off_is_not_a_failure(tmp_path, ko, fast, caplog):
    """kmemleak disables itself when its object pool runs out; then it refuses to scan."""

    class Off(FakeGuest):
        def run(self, cmd, timeout=60.0):
            if cmd == f"echo scan > {kmemleak.KMEMLEAK}":
                self.cmds.append(cmd)
                return CommandResult(1, b"", b"sh: 1: echo: echo: I/O error")
            return super().run(cmd, timeout)

    guest = Off(listing=LISTING_AFTER_RMMOD)
    session = ModuleSession(guest, tmp_path)
    session.load(ko)
    assert session.finish() == []
    assert guest.crashes == []
    assert "leaks of unloaded modules are not checked: kmemleak refuses to scan" in caplog.text
    assert sum("scan" in c for c in guest.cmds) == 1


def test_leaks_of_other_code_are_not_the_modules(fast):
    code = kmemleak.ModuleCode("hil_crash", ((0xFFFFFFFFC00D20C0, 0xFFFFFFFFC00D20DF, "hil_crash_leak"),))
    kernel_only = LISTING_AFTER_RMMOD.replace("0xffffffffc00d20d1", "kmalloc_trace+0x21/0xc0").replace(
        "0xffffffffc00d2236", "kobject_add+0x1/0x2"
    )
    kernel_only = kernel_only.replace("0xffffffffc00d2325", "device_add+0x3/0x4")
    assert kmemleak.module_leaks(kernel_only, [code]) == []
    other_module = LISTING_AFTER_RMMOD.replace("0xffffffffc00d20d1", "kserver_accept+0x11/0x20 [kserver]")
    other_module = other_module.replace("0xffffffffc00d2236", "0xffffffffc0ff0000").replace(
        "0xffffffffc00d2325", "0xffffffffc0ff0010"
    )
    assert kmemleak.module_leaks(other_module, [code]) == []
    # a module still loaded names its own frames: matched by its [name]
    loaded = (Path(__file__).parents[1] / "crash" / "data" / "debug-kernel-leak.log").read_text()
    assert [r.title for r in kmemleak.module_leaks(loaded, [code])] == ["memory leak in hil_crash_leak"]


def test_a_leak_from_module_init_is_named_from_the_ko():
    """The init code is freed after loading: only the .ko's symbol table names it."""
    init_text = 0xFFFFFFFFC02A4000  # /sys/module/leakinit/sections/.init.text
    code = kmemleak.ModuleCode("leakinit", ((init_text, init_text + 74, "leakinit_setup"),))
    [rep] = kmemleak.module_leaks(INIT_LISTING, [code])
    assert (rep.title, rep.function) == ("memory leak in leakinit_setup", "leakinit_setup")
    assert "leakinit_setup+0x3c/0x4a [leakinit]" in rep.text


def test_module_code_reads_sections_and_prefers_real_names_to_aliases(ko, monkeypatch):
    monkeypatch.setattr(kmemleak, "ko_functions", lambda ko: KO_FUNCTIONS)
    code = kmemleak.module_code(FakeGuest(listing=""), "hil_crash", ko)
    assert code is not None
    assert code.symbol(0xFFFFFFFFC00D20D1) == "hil_crash_leak+0x11/0x1f"
    assert code.symbol(0xFFFFFFFFC00D9010) == "hil_crash_init+0x10/0x92"  # not init_module
    assert code.symbol(0xFFFFFFFFC00D2783 + 3) == "hil_crash_exit+0x3/0x1a"  # not cleanup_module
    assert code.symbol(0xFFFFFFFFC00D20DF) is None  # between two functions
    with pytest.raises(kmemleak.NoKmemleak):
        kmemleak.module_code(FakeGuest(listing=None), "hil_crash", ko)
    assert kmemleak.module_code(FakeGuest(listing="", sections=""), "gone", ko) is None


def test_module_code_without_the_ko_uses_kallsyms():
    class Guest(FakeGuest):
        def run(self, cmd, timeout=60.0):
            out = SECTIONS + "===\n"
            out += "ffffffffc00d20c0 t hil_crash_leak\t[hil_crash]\n"
            out += "ffffffffc00d20e0 t hil_crash_run\t[hil_crash]\n"
            out += "ffffffffc00d5020 d hil_crash_table\t[hil_crash]\n"
            return CommandResult(0, out.encode())

    code = kmemleak.module_code(Guest(listing=""), "hil_crash", None)
    assert code is not None
    assert code.symbol(0xFFFFFFFFC00D20D1) == "hil_crash_leak+0x11/0x20"


def _kbuild() -> Path | None:
    """The embedded guest's kernel headers, if its image is built."""
    from hil.images.linux_image import cached_image

    img = cached_image()
    return img.kbuild_dir if img is not None and img.kbuild_dir and img.kbuild_dir.is_dir() else None


def test_ko_functions_of_a_real_module_build(tmp_path, monkeypatch):
    kbuild = _kbuild()
    if kbuild is None:
        pytest.skip("no guest image: hil image build linux")
    from hil.deploy import reference

    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    functions = {
        name: section for section, _off, _size, name in kmemleak.ko_functions(reference.build_crashmod(kbuild))
    }
    assert functions["hil_crash_init"] == ".init.text"
    assert functions["hil_crash_leak"].startswith(".text")
    assert functions["hil_crash_write"].startswith(".text")


@pytest.mark.hil_linux
def test_on_the_stock_guest_the_check_is_one_test_e(linux_guest, kmod, monkeypatch):
    """Debian's kernel has no kmemleak: unloading asks once, and checking costs nothing."""
    from hil.deploy import reference

    asked: list[str] = []
    run = linux_guest.run

    def recording(cmd, *args, **kwargs):
        asked.append(cmd)
        return run(cmd, *args, **kwargs)

    ko = reference.build_crashmod(linux_guest.kbuild_dir)
    monkeypatch.setattr(linux_guest, "run", recording)
    kmod.load(ko)
    linux_guest.run("echo leak > /proc/hil_crash").check()  # leaks for real: nobody can tell here
    kmod.unload("hil_crash")
    kmod.load(ko)
    kmod.unload("hil_crash")
    assert kmod.check_leaks() == []
    assert [c for c in asked if "kmemleak" in c] == [
        f"test -e {kmemleak.KMEMLEAK} || exit 3; grep -Hs . /sys/module/hil_crash/sections/.*"
    ]
    assert linux_guest.crash is None
