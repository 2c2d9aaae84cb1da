"""Line coverage of the kernel modules under test (``--hil-coverage``).

End to end, with ``--hil-coverage`` (which selects the debug kernel, built with
``CONFIG_GCOV_KERNEL``):

1. **Build.**  :func:`hil.deploy.kmod.build_module` adds ``GCOV_PROFILE=y`` to kbuild's make
   line (:func:`make_arguments`): the module's objects are compiled with ``-fprofile-arcs
   -ftest-coverage`` and a ``.gcno`` lands beside each object (kbuild leaves ``<mod>.mod.o``
   alone).  Kbuild ignores the flag without ``CONFIG_GCOV_KERNEL`` (no ``.gcno``, and such a
   module could not be loaded anyway), so a coverage build against any other kernel is refused
   with the fix.  The build runs in its final cache folder, under a lock, instead of a temporary
   folder renamed afterwards: the object's absolute path is compiled in as the name of its
   ``.gcda`` in the guest (:func:`build_lock`, :func:`mark_complete`).
2. **Collect.**  The kernel shows each profiled object's counters as
   ``/sys/kernel/debug/gcov/<absolute object path>.gcda``.  6.1 keeps them when the module is
   unloaded (``gcov_persist=1``, the default: the counts are saved, and a later load of the same
   module adds to them; only a write to the file resets them), so :func:`collect` reads them once
   at the end of the test, after the session unloaded what was left, with the agent's file reads
   (no process started in the guest).  They go to ``<test artifacts>/coverage/<module>/``, with
   ``module.json`` naming the build.  Each test starts from a restored snapshot, so each test's
   counts are its own, and nothing is ever written to a ``.gcda`` to reset it: on 6.1 a write
   to an unloaded module's file hangs the writer for good (``gcov_seq_write`` removes its own
   debugfs file and waits for itself to leave it; seen on the debug kernel as the hung-task
   report ``debugfs_remove <- gcov_seq_write <- full_proxy_write``), and the agent with it.
3. **Report.**  :func:`render` merges the tests' data with gcovr: per module one gcov pass over
   every test's ``.gcda`` (gcovr adds the counts of one source up), then one merge of the
   modules' tracefiles into ``coverage/index.html`` (gcovr's HTML, a page per source) and
   ``coverage/summary.json``.  :func:`summary_lines` are the terminal's
   ``coverage kserver.c: 73.4% lines (512/697)`` (the path relative to the module's source
   folder; the percentage rounded down, so 100.0% means every line).

Library first: the ``kmod`` fixture calls :func:`collect` (through
:meth:`hil.deploy.module_session.ModuleSession.finish`), the plugin :func:`render` and
:func:`summary_lines`, ``hil qualify`` :func:`render` over the whole run and :func:`read_summary`
for its report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hil.errors import EnvironmentProblem, GuestError, HilError

log = logging.getLogger("hil.deploy.coverage")

GCOV_ROOT = "/sys/kernel/debug/gcov"
"""Where a ``CONFIG_GCOV_KERNEL`` kernel shows the counters (debugfs)."""
MAKE_FLAG = "GCOV_PROFILE=y"
"""What turns on profiling for every object of an out-of-tree module build."""
MARKER = ".hil-coverage.json"
"""Written last into a coverage build's folder: the build is complete, and where it ran."""
MODULE_JSON = "module.json"
"""Beside a test's ``.gcda`` files: which build they belong to."""
FOLDER = "coverage"
"""The folder name, in a test's artifacts (its data) and in the run's (the report)."""

_enabled = False


def enabled() -> bool:
    """Whether modules are built with gcov profiling and their counters collected
    (``--hil-coverage``; :func:`set_enabled`)."""
    return _enabled


def set_enabled(on: bool) -> None:
    global _enabled
    _enabled = bool(on)


# ---- building ---------------------------------------------------------------------------------


def gcov_kernel(kbuild_dir: Path) -> bool:
    """Whether the kernel of ``kbuild_dir`` was built with ``CONFIG_GCOV_KERNEL=y``."""
    for rel in ("include/config/auto.conf", ".config"):
        p = Path(kbuild_dir) / rel
        if p.is_file():
            return any(line.strip() == "CONFIG_GCOV_KERNEL=y" for line in p.read_text(errors="replace").splitlines())
    return False


def make_arguments(kbuild_dir: Path) -> list[str]:
    """The make arguments of a coverage build against ``kbuild_dir``; refused (with the fix)
    when that kernel has no gcov support, where kbuild would silently build without it."""
    if not gcov_kernel(kbuild_dir):
        raise EnvironmentProblem(
            f"coverage needs a kernel built with CONFIG_GCOV_KERNEL=y, and {kbuild_dir} is not one",
            "use the debug kernel (--hil-kernel debug, which --hil-coverage selects for the embedded guest), "
            "or point [linux] kbuild_dir and kernel at a kernel with CONFIG_GCOV_KERNEL=y",
        )
    return [MAKE_FLAG]


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Only one process builds into ``folder`` at a time (xdist workers share the cache)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def mark_complete(folder: Path, source: Path) -> None:
    """Record a finished coverage build: where its objects were compiled (the ``.gcda`` names in
    the guest) and the module's own source folder."""
    info = {"objdir": str(Path(folder)), "source": str(Path(source).resolve())}
    (Path(folder) / MARKER).write_text(json.dumps(info, indent=1) + "\n")


def profiled_objects(build_dir: Path) -> list[Path]:
    """The ``.gcno`` of each profiled object of a build, relative to it; none for a build
    without profiling."""
    build_dir = Path(build_dir)
    return sorted(p.relative_to(build_dir) for p in build_dir.rglob("*.gcno") if p.is_file())


def object_dir(build_dir: Path) -> str:
    """The folder the objects were compiled in: the coverage build's record, else the ``.ko``'s
    own folder (a team's build with ``.gcno`` files beside its ``.ko``)."""
    marker = Path(build_dir) / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text())["objdir"])
        except (ValueError, KeyError):
            pass
    return str(Path(build_dir))


# ---- collecting from a guest ------------------------------------------------------------------


@dataclass
class Collected:
    """What :func:`collect` took from one guest for one test.  ``missing``: guest files of
    profiled objects that were not there (a module whose load was refused before its code ran,
    which a test may mean to do: noted, not a failure)."""

    modules: list[str]
    files: int
    bytes: int
    seconds: float
    missing: list[str]


def gcda_path(objdir: str, gcno: Path) -> str:
    """The guest file holding the counters of the object whose ``.gcno`` is ``gcno``."""
    return f"{GCOV_ROOT}{objdir.rstrip('/')}/{gcno.with_suffix('.gcda').as_posix()}"


def collect(guest, modules: Iterable[Path], dest: Path) -> Collected:
    """Read the counters of each ``.ko`` in ``modules`` that was built with profiling (a
    ``.gcno`` beside it) from ``guest`` into ``dest/<module>/``.  A module without profiling is
    skipped.  The guest shows no counters for a module whose load was refused before its code
    ran (a bad parameter, say: the kernel registers them when the module's constructors run);
    those are listed in :attr:`Collected.missing`, and a module with none is left out."""
    started = time.monotonic()
    done = Collected([], 0, 0, 0.0, [])
    seen: set[Path] = set()
    for ko in modules:
        ko = Path(ko)
        build = ko.parent
        if build in seen:
            continue
        seen.add(build)
        objects = profiled_objects(build)
        if not objects:
            continue
        objdir = object_dir(build)
        out = Path(dest) / ko.stem
        got = 0
        for gcno in objects:
            remote = gcda_path(objdir, gcno)
            try:
                data = _read(guest, remote)
            except GuestError:
                done.missing.append(remote)
                continue
            target = out / gcno.with_suffix(".gcda")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            got += 1
            done.files += 1
            done.bytes += len(data)
        if got:
            info = {"module": ko.stem, "ko": str(ko), "build_dir": str(build), "objdir": objdir, "objects": got}
            (out / MODULE_JSON).write_text(json.dumps(info, indent=1) + "\n")
            done.modules.append(ko.stem)
    done.seconds = time.monotonic() - started
    log.info(
        "coverage: %s: %d file(s), %d bytes in %.2f s%s",
        ", ".join(done.modules) or "nothing",
        done.files,
        done.bytes,
        done.seconds,
        f"; no counters at {', '.join(done.missing)} (the module's code never ran?)" if done.missing else "",
    )
    return done


def _read(guest, remote: str) -> bytes:
    try:
        return guest.read_file(remote)
    except GuestError:
        # debugfs not mounted (systemd mounts it; a minimal image may not): mount it, once
        res = guest.run(f"test -d {GCOV_ROOT} || mount -t debugfs debugfs /sys/kernel/debug", timeout=30)
        if res.exit_code != 0:
            raise
        return guest.read_file(remote)


# ---- merging and reporting --------------------------------------------------------------------


@dataclass(frozen=True)
class FileCoverage:
    """One source file's line coverage over the run."""

    module: str  # the module (its label in the report: the .ko's name)
    file: str  # relative to the module's source folder
    covered: int
    total: int

    @property
    def percent(self) -> float:
        """Rounded down to a tenth: 100.0 only when every line ran."""
        return (self.covered * 1000 // self.total) / 10 if self.total else 0.0


@dataclass
class Summary:
    files: list[FileCoverage]
    index: Path  # the HTML report
    tests: int  # how many tests' data went into it
    notes: list[str]  # what could not be merged, and why


def data_sets(artifacts: Path, since: float = 0.0) -> list[Path]:
    """The ``<test>/coverage/<module>/`` folders of the run folder ``artifacts`` written since
    ``since`` (a time stamp: an earlier session's leftovers in a reused folder are not this
    run's)."""
    found = []
    for info in sorted(Path(artifacts).glob(f"*/{FOLDER}/*/{MODULE_JSON}")):
        if info.stat().st_mtime >= since:
            found.append(info.parent)
    return found


def _gcovr(args: list[str], cwd: Path, timeout: float = 600.0) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gcovr", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise HilError(f"gcovr took more than {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise HilError(
            f"gcovr {' '.join(args[:3])} ... failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )


def render(artifacts: Path, out: Path | None = None, *, since: float = 0.0) -> Summary | None:
    """Merge every test's coverage data in the run folder ``artifacts`` (see :func:`data_sets`)
    into ``out`` (default ``artifacts/coverage``): ``index.html`` and ``summary.json``.  None
    when no test collected any."""
    artifacts = Path(artifacts)
    out = Path(out) if out is not None else artifacts / FOLDER
    sets = data_sets(artifacts, since)
    if not sets:
        return None
    notes: list[str] = []
    by_build: dict[str, list[Path]] = {}
    names: dict[str, str] = {}
    for d in sets:
        info = json.loads((d / MODULE_JSON).read_text())
        by_build.setdefault(info["build_dir"], []).append(d)
        names[info["build_dir"]] = info["module"]
    labels = _labels(names)
    tests = {d.parent.parent for d in sets}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="hil-coverage-") as tmp_name:
        tmp = Path(tmp_name)
        sources = tmp / "src"  # <label>/<file>: the root of the merged report
        sources.mkdir()
        tracefiles = []
        for build_dir, dirs in sorted(by_build.items()):
            label = labels[build_dir]
            trace = _module_tracefile(Path(build_dir), label, dirs, tmp / label, sources / label, notes)
            if trace is not None:
                tracefiles.append(trace)
        if not tracefiles:
            (out / "index.html").write_text(
                "<!doctype html><title>coverage</title><p>no coverage data could be merged:</p><pre>"
                + "\n".join(notes)
                + "</pre>\n"
            )
            return Summary([], out / "index.html", len(tests), notes)
        args = ["--root", str(sources)]
        for t in tracefiles:
            args += ["--add-tracefile", str(t)]
        args += [
            "--html-details",
            str(out / "index.html"),
            "--html-title",
            "kernel-hil: line coverage of the modules under test",
            "--json-summary",
            str(out / "summary.json"),
            "--json-summary-pretty",
        ]
        _gcovr(args, cwd=tmp)
    (out / "tests.json").write_text(
        json.dumps({"tests": sorted(t.name for t in tests), "notes": notes}, indent=1) + "\n"
    )
    return Summary(read_summary(out), out / "index.html", len(tests), notes)


def _labels(names: dict[str, str]) -> dict[str, str]:
    """Each build's name in the report: its module's, with the build's key when two builds of
    one module name were loaded in the run."""
    count: dict[str, int] = {}
    for name in names.values():
        count[name] = count.get(name, 0) + 1
    return {b: (n if count[n] == 1 else f"{n}-{Path(b).name[:8]}") for b, n in names.items()}


def _module_tracefile(
    build_dir: Path, label: str, data_dirs: list[Path], work: Path, sources: Path, notes: list[str]
) -> Path | None:
    """One gcov pass over every test's counters of one build: each test's ``.gcda`` files next
    to a copy of the build's ``.gcno`` files in a folder of its own, all folders handed to one
    gcovr run, which adds the counts up per source.  The tracefile names each source
    ``<label>/<path relative to the build>``, and its text is copied to ``sources``."""
    objects = profiled_objects(build_dir) if build_dir.is_dir() else []
    if not objects:
        notes.append(f"{label}: its build {build_dir} (the .gcno files) is gone; its data is left out")
        return None
    stages = []
    for i, d in enumerate(data_dirs):
        stage = work / str(i)
        for gcno in objects:
            gcda = d / gcno.with_suffix(".gcda")
            if gcda.is_file():
                (stage / gcno).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(build_dir / gcno, stage / gcno)
                shutil.copy2(gcda, stage / gcno.with_suffix(".gcda"))
        if stage.is_dir():
            stages.append(str(stage))
    if not stages:
        notes.append(f"{label}: no counters were collected")
        return None
    raw = work / "raw.json"
    # --root: the build folder, so only the module's own sources count, not the kernel headers
    # whose inline functions gcov reports too; those are named relative to the kbuild tree,
    # which gcov cannot find from here (and need not: they are left out)
    _gcovr(
        ["--root", str(build_dir), "--gcov-ignore-errors=source_not_found", "--json", str(raw), *stages],
        cwd=work,
    )
    data = json.loads(raw.read_text())
    for entry in data.get("files", []):
        rel = entry["file"]
        src = build_dir / rel
        if src.is_file():
            (sources / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, sources / rel)
        entry["file"] = f"{label}/{rel}"
    trace = work / f"{label}.json"
    trace.write_text(json.dumps(data))
    return trace


def read_summary(folder: Path) -> list[FileCoverage]:
    """The per-file rows of a report :func:`render` wrote into ``folder`` (its ``summary.json``)."""
    p = Path(folder) / "summary.json"
    if not p.is_file():
        return []
    rows = []
    for f in json.loads(p.read_text()).get("files", []):
        module, _, rel = f["filename"].partition("/")
        rows.append(FileCoverage(module, rel or module, int(f["line_covered"]), int(f["line_total"])))
    return sorted(rows, key=lambda r: (r.module, r.file))


def summary_lines(files: Iterable[FileCoverage]) -> list[str]:
    """``coverage <file>: <pct>% lines (<covered>/<total>)``, one per source; the file is
    relative to its module's source folder, prefixed with the module when two modules of the
    run have a file of that name."""
    files = list(files)
    count: dict[str, int] = {}
    for f in files:
        count[f.file] = count.get(f.file, 0) + 1
    return [
        f"coverage {f.file if count[f.file] == 1 else f'{f.module}/{f.file}'}: "
        f"{f.percent:.1f}% lines ({f.covered}/{f.total})"
        for f in files
    ]


def after_test(guest, deployed: Iterable, artifacts: Path) -> list[str]:
    """The ``kmod`` session's end, with coverage on: :func:`collect` the counters of every
    module the test loaded (``deployed``: :class:`~hil.deploy.artifacts.Deployed` rows) into
    ``artifacts/coverage``.  Returns what went wrong (nothing to do with coverage off)."""
    if not enabled():
        return []
    paths = [Path(d.path) for d in deployed]
    if not paths:
        return []
    try:
        collect(guest, paths, Path(artifacts) / FOLDER)
    except HilError as exc:
        return [f"collecting coverage: {exc}"]
    return []
