"""hil.deploy.coverage without a guest: the gcov build flag (real kbuild), collecting counters
from a fake guest, merging two tests' real ``.gcda`` with gcovr, the summary lines, the plugin's
terminal summary and the run report's link.

The ``.gcda`` files of the merge tests are real: a small user-space program compiled with
``--coverage`` and run twice with different inputs, which gives what the kernel gives for a
module (the same gcc, the same file format) without a guest.  The kernel side was checked by
hand on the debug kernel (see the module's docstring): ``kserver.gcda`` read from
``/sys/kernel/debug/gcov/<build folder>/`` after rmmod, merged by the same code.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from hil.deploy import coverage, kmod
from hil.errors import EnvironmentProblem, GuestError
from hil.qualify.model import Run, TestResult
from hil.qualify.report import write_report


def _stock_kbuild() -> Path | None:
    """The embedded guest's own (Debian, no gcov) headers, if the image was built."""
    from hil.images.linux_image import cached_image

    img = cached_image()
    if img is not None and img.kbuild_dir and img.kbuild_dir.is_dir():
        return img.kbuild_dir
    return None


def _gcov_kbuild() -> Path | None:
    """Headers of a kernel with CONFIG_GCOV_KERNEL: ``$HIL_GCOV_KBUILD``, the debug flavour's
    once built (``<cache>/kernels/<key>/kbuild/``), else the prototype's in /var/tmp."""
    from hil.paths import cache_root

    candidates = [os.environ.get("HIL_GCOV_KBUILD", "")]
    candidates += sorted(glob.glob(str(cache_root() / "kernels" / "*" / "kbuild" / "linux-headers-*")))
    candidates += sorted(glob.glob("/var/tmp/hil-debug-kernel/kbuild/linux-headers-*"))
    for c in candidates:
        if c and Path(c, "Makefile").is_file() and coverage.gcov_kernel(Path(c)):
            return Path(c)
    return None


STOCK = _stock_kbuild()
GCOV = _gcov_kbuild()
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("gcov") is None, reason="no gcc/gcov")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def coverage_off():
    """Each test says whether coverage is on; none leaks it into the next."""
    coverage.set_enabled(False)
    yield
    coverage.set_enabled(False)


HELLO_C = r"""
#include <linux/module.h>
static int calls;
static int __init h_init(void) { calls++; if (calls > 1) return -EINVAL; return 0; }
static void __exit h_exit(void) { }
module_init(h_init);
module_exit(h_exit);
MODULE_LICENSE("GPL");
"""


def _hello(tmp_path: Path) -> Path:
    src = tmp_path / "hello"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := hello.o\n")
    (src / "hello.c").write_text(HELLO_C)
    return src


# ---- the build flag ---------------------------------------------------------------------------


def test_the_gcov_flag_needs_a_gcov_kernel(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / ".config").write_text("CONFIG_MODULES=y\n# CONFIG_GCOV_KERNEL is not set\n")
    with pytest.raises(EnvironmentProblem, match="CONFIG_GCOV_KERNEL=y") as err:
        coverage.make_arguments(kb)
    assert "--hil-kernel debug" in err.value.fix
    (kb / ".config").write_text("CONFIG_MODULES=y\nCONFIG_GCOV_KERNEL=y\n")
    assert coverage.make_arguments(kb) == ["GCOV_PROFILE=y"]


@pytest.mark.skipif(STOCK is None, reason="no stock guest headers: hil image build linux")
def test_stock_headers_refuse_a_coverage_build(tmp_path, cache):
    """Debian's kernel has no CONFIG_GCOV_KERNEL: kbuild would ignore GCOV_PROFILE=y without a
    word (no .gcno, checked by hand), so the build is refused with the fix instead."""
    assert STOCK is not None and not coverage.gcov_kernel(STOCK)
    with pytest.raises(EnvironmentProblem, match="CONFIG_GCOV_KERNEL"):
        kmod.build_module(_hello(tmp_path), STOCK, coverage=True)
    coverage.set_enabled(True)  # --hil-coverage: the default of every build
    with pytest.raises(EnvironmentProblem, match="CONFIG_GCOV_KERNEL"):
        kmod.build_module(tmp_path / "hello", STOCK)


@pytest.mark.skipif(
    GCOV is None,
    reason="no headers of a kernel with CONFIG_GCOV_KERNEL (the debug flavour, --hil-kernel debug, "
    "or HIL_GCOV_KBUILD=<headers tree>)",
)
def test_a_coverage_build_writes_gcno_beside_its_objects_in_its_final_folder(tmp_path, cache):
    assert GCOV is not None
    src = _hello(tmp_path)
    ko = kmod.build_module(src, GCOV, coverage=True)
    build = ko.parent
    assert coverage.profiled_objects(build) == [Path("hello.gcno")], "hello.mod.o is not profiled"
    assert (build / "hello.c").is_file(), "the sources the .gcno names stay beside it"
    # built where it is: the object's path is the name of its counters in the guest
    assert coverage.object_dir(build) == str(build)
    assert coverage.gcda_path(coverage.object_dir(build), Path("hello.gcno")) == (
        f"/sys/kernel/debug/gcov{build}/hello.gcda"
    )
    assert "-fprofile-arcs" in (build / ".hello.o.cmd").read_text()
    assert not list(build.parent.glob("*.build-*")), "no temporary folder left"
    mtime = ko.stat().st_mtime_ns
    assert kmod.build_module(src, GCOV, coverage=True) == ko and ko.stat().st_mtime_ns == mtime, "cached"

    plain = kmod.build_module(src, GCOV, coverage=False)
    assert plain.parent != build and coverage.profiled_objects(plain.parent) == []
    coverage.set_enabled(True)
    assert kmod.build_module(src, GCOV) == ko, "--hil-coverage is every build's default"


def test_an_interrupted_coverage_build_is_redone(tmp_path, cache, monkeypatch):
    """In place means a crash mid-build leaves a folder behind: without the completion marker it
    is not a cache hit."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "Makefile").write_text("")
    (kb / ".config").write_text("CONFIG_GCOV_KERNEL=y\n")
    src = _hello(tmp_path)
    final = cache / "kmod" / kmod.build_key(src, kb, coverage=True)
    final.mkdir(parents=True)
    (final / "hello.ko").write_bytes(b"half")
    made = []

    def fake_make(work, *args, **kw):
        made.append(work)
        (work / "hello.ko").write_bytes(b"whole")
        (work / "hello.gcno").write_bytes(b"gcno")

    monkeypatch.setattr(kmod, "_make_module", fake_make)
    ko = kmod.build_module(src, kb, coverage=True)
    assert made == [final] and ko.read_bytes() == b"whole" and coverage.is_complete(final)
    assert kmod.build_module(src, kb, coverage=True) == ko and len(made) == 1


# ---- collecting -------------------------------------------------------------------------------


class FakeGuest:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.reads: list[str] = []

    def read_file(self, remote: str) -> bytes:
        self.reads.append(remote)
        if remote not in self.files:
            raise GuestError(f"open {remote}: No such file or directory")
        return self.files[remote]

    def run(self, cmd: str, timeout: float = 60.0):
        class Res:
            exit_code = 0

        return Res()


def _fake_build(root: Path, name: str, objects: list[str]) -> Path:
    build = root / name
    build.mkdir(parents=True)
    (build / f"{name}.ko").write_bytes(b"ko")
    for o in objects:
        (build / o).parent.mkdir(parents=True, exist_ok=True)
        (build / o).with_suffix(".gcno").write_bytes(b"gcno")
    coverage.mark_complete(build, root / "src")
    return build


def test_collect_reads_each_profiled_objects_counters_into_the_tests_folder(tmp_path):
    ks = _fake_build(tmp_path / "cache", "kserver", ["kserver.o"])
    agent = _fake_build(tmp_path / "cache", "hil_agent", ["agent_main.o", "sub/hil_proto.o"])
    plain = tmp_path / "cache" / "plain"
    plain.mkdir()
    (plain / "plain.ko").write_bytes(b"ko")
    guest = FakeGuest(
        {
            f"/sys/kernel/debug/gcov{ks}/kserver.gcda": b"K" * 10,
            f"/sys/kernel/debug/gcov{agent}/agent_main.gcda": b"A" * 7,
            f"/sys/kernel/debug/gcov{agent}/sub/hil_proto.gcda": b"P" * 5,
        }
    )
    dest = tmp_path / "art" / "coverage"
    got = coverage.collect(guest, [ks / "kserver.ko", plain / "plain.ko", agent / "hil_agent.ko"], dest)
    assert got.missing == [] and got.modules == ["kserver", "hil_agent"]
    assert (got.files, got.bytes) == (3, 22)
    assert (dest / "kserver" / "kserver.gcda").read_bytes() == b"K" * 10
    assert (dest / "hil_agent" / "sub" / "hil_proto.gcda").read_bytes() == b"P" * 5
    info = json.loads((dest / "kserver" / "module.json").read_text())
    assert info["build_dir"] == str(ks) and info["module"] == "kserver" and info["objects"] == 1
    assert not any("plain" in r for r in guest.reads), "a module built without profiling is not asked for"


def test_a_module_whose_code_never_ran_has_no_counters_and_no_data_set(tmp_path):
    """insmod refused before the module's constructors ran (a hardening test's bad parameter):
    the guest has no counters for it; that is no failure, and no empty data set is left."""
    ks = _fake_build(tmp_path / "cache", "kserver", ["kserver.o"])
    got = coverage.collect(FakeGuest({}), [ks / "kserver.ko"], tmp_path / "art")
    assert got.missing == [f"/sys/kernel/debug/gcov{ks}/kserver.gcda"] and got.modules == []
    assert not (tmp_path / "art").exists()


def test_after_test_does_nothing_with_coverage_off(tmp_path):
    class Boom:
        def read_file(self, remote):
            raise AssertionError("no guest access with coverage off")

    ks = _fake_build(tmp_path / "cache", "kserver", ["kserver.o"])

    class Row:
        path = ks / "kserver.ko"

    assert coverage.after_test(Boom(), [Row()], tmp_path / "art") == []
    assert not (tmp_path / "art").exists()


# ---- merging two tests' real counters with gcovr ----------------------------------------------

PROG_C = r"""#include <stdio.h>
#include <stdlib.h>

static int classify(int x)
{
	if (x < 0)
		return -1;
	if (x == 0)
		return 0;
	return 1;
}

int main(int argc, char **argv)
{
	int x = argc > 1 ? atoi(argv[1]) : 0;

	printf("%d\n", classify(x));
	return 0;
}
"""


def _prog_build(tmp_path: Path) -> Path:
    """A "module" build folder as a coverage build leaves it: sources, objects, .gcno, marker."""
    build = tmp_path / "cache" / "kmod" / "0123456789abcdef01234567"
    build.mkdir(parents=True)
    (build / "prog.c").write_text(PROG_C)
    subprocess.run(["gcc", "--coverage", "-O0", "-c", "prog.c", "-o", "prog.o"], cwd=build, check=True)
    subprocess.run(["gcc", "--coverage", "prog.o", "-o", "prog"], cwd=build, check=True)
    (build / "prog.ko").write_bytes(b"stands for the module")
    coverage.mark_complete(build, tmp_path / "src")
    return build


def _run_test(build: Path, art: Path, test: str, *args: str) -> None:
    """One "test": the program runs with ``args``; its counters are collected as a guest's."""
    subprocess.run([str(build / "prog"), *args], check=True, capture_output=True)
    gcda = build / "prog.gcda"
    guest = FakeGuest({coverage.gcda_path(str(build), Path("prog.gcno")): gcda.read_bytes()})
    gcda.unlink()  # each test starts from zero, as from a restored snapshot
    got = coverage.collect(guest, [build / "prog.ko"], art / test / "coverage")
    assert got.missing == [] and got.files == 1


@needs_gcc
def test_two_tests_counters_merge_into_one_report(tmp_path):
    build = _prog_build(tmp_path)
    art = tmp_path / "artifacts"
    _run_test(build, art, "test_positive", "5")
    _run_test(build, art, "test_negative", "-3")

    alone = coverage.render(art, tmp_path / "only-one", since=0.0)
    assert alone is not None and alone.tests == 2
    summary = coverage.render(art)
    assert summary is not None and summary.notes == []
    assert summary.index == art / "coverage" / "index.html" and summary.index.is_file()
    # 10 executable lines; "return 0" (x == 0) ran in neither test
    assert coverage.summary_lines(summary.files) == ["coverage prog.c: 90.0% lines (9/10)"]
    assert summary.files[0].module == "prog"
    page = summary.index.read_text()
    assert "<span>prog/</span>" in page and 'title="prog.c"' in page  # gcovr's tree: module, then file
    assert "line coverage of the modules under test" in page
    assert list((art / "coverage").glob("index.prog.c.*.html")), "a page per source"
    assert coverage.read_summary(art / "coverage") == summary.files
    assert json.loads((art / "coverage" / "tests.json").read_text())["tests"] == ["test_negative", "test_positive"]

    # each test alone covers less: the merge adds up
    for test, covered in (("test_positive", 8), ("test_negative", 7)):
        one = tmp_path / f"one-{test}"
        shutil.copytree(art / test, one / test)
        s = coverage.render(one)
        assert s is not None and (s.files[0].covered, s.files[0].total) == (covered, 10), test


@needs_gcc
def test_only_this_sessions_data_is_merged_and_a_lost_build_is_a_note(tmp_path):
    build = _prog_build(tmp_path)
    art = tmp_path / "artifacts"
    _run_test(build, art, "test_old", "5")
    old = art / "test_old" / "coverage" / "prog" / "module.json"
    os.utime(old, (1000.0, 1000.0))  # an earlier session's leftovers in a reused folder
    _run_test(build, art, "test_new", "-3")
    s = coverage.render(art, since=2000.0)
    assert s is not None and s.tests == 1 and s.files[0].covered == 7

    assert coverage.render(tmp_path / "nothing") is None
    shutil.rmtree(build)
    s = coverage.render(art)
    assert s is not None and s.files == [] and "is gone" in s.notes[0]


# ---- the summary line, the plugin, the run report ---------------------------------------------


def test_summary_line_format():
    rows = [
        coverage.FileCoverage("kserver", "kserver.c", 512, 697),
        coverage.FileCoverage("hil_agent", "agent_main.c", 999, 1000),
        coverage.FileCoverage("hil_agent", "hil_proto.c", 40, 40),
        coverage.FileCoverage("empty", "nothing.c", 0, 0),
    ]
    assert coverage.summary_lines(rows) == [
        "coverage kserver.c: 73.4% lines (512/697)",
        "coverage agent_main.c: 99.9% lines (999/1000)",  # rounded down: 100.0% means every line
        "coverage hil_proto.c: 100.0% lines (40/40)",
        "coverage nothing.c: 0.0% lines (0/0)",
    ]
    same = [coverage.FileCoverage("a", "main.c", 1, 2), coverage.FileCoverage("b", "main.c", 2, 2)]
    assert coverage.summary_lines(same) == [
        "coverage a/main.c: 50.0% lines (1/2)",
        "coverage b/main.c: 100.0% lines (2/2)",
    ]


INNER = """
import json, os, shutil
from pathlib import Path

def test_with_counters(hil_artifacts):
    src = Path(os.environ["COVERAGE_DATA"])
    shutil.copytree(src, hil_artifacts / "coverage", copy_function=shutil.copyfile)  # written now
"""


@needs_gcc
def test_the_plugin_merges_and_ends_the_terminal_summary_with_a_line_per_source(pytester, tmp_path, monkeypatch):
    build = _prog_build(tmp_path)
    data = tmp_path / "data"
    _run_test(build, data, "t", "-3")
    monkeypatch.setenv("COVERAGE_DATA", str(data / "t" / "coverage"))
    pytester.makepyfile(INNER)
    art = tmp_path / "run-artifacts"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hil-coverage", "--hil-artifacts", str(art))
    result.assert_outcomes(passed=1)
    lines = [ln for ln in result.outlines if ln.strip()]
    assert lines[-2] == "coverage prog.c: 70.0% lines (7/10)", lines[-6:]
    assert "passed" in lines[-1]
    result.stdout.fnmatch_lines([f"kernel-hil coverage: {art}/coverage/index.html"])
    assert (art / "coverage" / "index.html").is_file()


FLAVOUR = """
def test_flavour(hil_config):
    from hil.deploy import coverage
    assert hil_config.linux.flavour == "debug" and coverage.enabled()
"""


def test_the_coverage_option_selects_the_debug_kernel(pytester):
    pytester.makepyfile(FLAVOUR)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hil-coverage")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hil-coverage", "--hil-kernel", "stock")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--hil-coverage needs the debug kernel*"])


@needs_gcc
def test_the_run_report_links_the_coverage_report(tmp_path):
    build = _prog_build(tmp_path)
    folder = tmp_path / "run"
    art = folder / "artifacts"
    _run_test(build, art, "suites_linux_test_kserver.py_test_x", "5")
    summary = coverage.render(art)
    assert summary is not None
    t = datetime(2026, 11, 27, 2, 0, 0)
    run = Run("r1", "nightly", "host", "0.1.0", "6.1.176-hil-debug", t, t, folder=str(folder))
    run.results = [TestResult("suites/linux/test_kserver.py::test_x", "passed", 1.0, ["passed"])]
    page = write_report(run, folder / "report.html", known_crashes={}, trends=[], coverage=summary.index).read_text()
    assert 'href="artifacts/coverage/index.html"' in page
    assert '<a href="#coverage">Coverage</a>' in page
    assert 'data-coverage="prog/prog.c"' in page and 'data-percent="80.0"' in page and "8/10" in page
    plain = write_report(run, folder / "plain.html", known_crashes={}, trends=[]).read_text()
    assert 'id="coverage"' not in plain


@needs_gcc
def test_hil_qualify_merges_every_attempts_data_for_its_report(tmp_path):
    """Each pytest attempt merged only its own session's tests; after reruns the run's report
    is the merge of every test folder's data (a rerun test's folder holds its last attempt's)."""
    from hil.qualify.runner import _coverage_report

    assert _coverage_report(tmp_path / "artifacts", 1) is None, "no --hil-coverage: no report"
    build = _prog_build(tmp_path)
    art = tmp_path / "artifacts"
    _run_test(build, art, "test_positive", "5")
    first = coverage.render(art)  # attempt 1's session
    assert first is not None and first.files[0].covered == 8
    _run_test(build, art, "test_negative", "-3")  # attempt 2: a rerun, in a session of its own
    index = _coverage_report(art, 2)
    assert index == art / "coverage" / "index.html"
    assert coverage.read_summary(index.parent)[0].covered == 9
