"""The pytest plugin: options, a few fixtures, hooks.  All real work lives in the library.

Options (group ``hil``): ``--hil-config``, ``--hil-accel``, ``--hil-keep-failed``,
``--hil-artifacts``, ``--hil-profile``, ``--hil-kernel``, ``--hil-coverage`` (see
:mod:`hil.deploy.coverage`), ``--hil-results``.  Fixtures: ``hil_config``,
``hil_lab`` (session; one per xdist worker), ``hil_hosts`` (session: this worker's libvirt hosts,
its own first; see :mod:`hil.hosts.pytest_hosts`, which also sizes ``-n auto`` to the hosts),
``linux_guest`` (a clean guest per test), ``hil_artifacts`` (the test's artifact folder),
``hil_profile`` (the run's qualification profile: stress sizes, soak length),
``collector`` (the reference collector on 127.0.0.1, see :mod:`hil.collector`), ``kmod``
(build, load and unload kernel modules in ``linux_guest``, see :mod:`hil.deploy.pytest_fixtures`);
Windows drivers (:mod:`hil.wine.pytest_fixtures`): ``mingw`` (build a team's drivers and tools,
session), ``win_build`` (the reference build, session), ``wine_guest`` (a fresh Wine prefix per
test), ``wine_driver`` (start a ``.sys`` in it, stopped at teardown); ``windows_guest`` (a real
Windows guest for labs, see :mod:`hil.windows.pytest_fixtures`).

Crashes (:mod:`hil.crash.monitor`): a guest crash during a test fails that test with the crash
title as its message, whatever the test itself did (a crash during fixture setup is an error);
the evidence (console log, ``crash.txt``: title, kind, function, excerpt) goes to the test's
artifact folder and into the JUnit XML as ``hil_crash_*`` properties; the guest is discarded.
A ``WARNING`` (or another non-fatal report) fails the test the same way, and the tainted guest
is discarded too, but commands keep working until the test ends.  A test that means to crash
the guest says so: ``with linux_guest.expect_crash(kind="BUG", function=..., timeout=10)`` or
the marker ``@pytest.mark.expect_crash(kind=..., function=..., timeout=...)``.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from hil.collector.pytest_fixtures import collector  # noqa: F401  (re-exported fixture)
from hil.deploy.pytest_fixtures import kmod  # noqa: F401  (re-exported fixture)
from hil.errors import HilError
from hil.guest.fixture import GUESTS_KEY, REPORTS_KEY, lend_guest
from hil.hosts import pytest_hosts
from hil.hosts.pytest_hosts import hil_hosts  # noqa: F401  (re-exported fixture)
from hil.windows.pytest_fixtures import windows_guest  # noqa: F401  (re-exported fixture)
from hil.wine.pytest_fixtures import mingw, win_build, wine_driver, wine_guest  # noqa: F401  (re-exported fixtures)

ARTIFACTS_KEY = pytest.StashKey[Path]()
SESSION_START_KEY = pytest.StashKey[float]()  # the controller's start: pages show only this run
PROFILE_KEY = pytest.StashKey[object]()  # hil.qualify.profiles.Profile


def pytest_addoption(parser):
    group = parser.getgroup("hil", "kernel-hil")
    group.addoption(
        "--hil-config",
        metavar="FILE",
        help="hil.toml to use (default: hil.toml or "
        "[tool.hil] in pyproject.toml, searched upward from the current folder)",
    )
    group.addoption(
        "--hil-accel",
        choices=["auto", "kvm", "tcg"],
        default=None,
        help="accelerator: KVM only where it really works (auto), or force one",
    )
    group.addoption(
        "--hil-keep-failed",
        action="store_true",
        help="keep a failed test's guest running for debugging and print how to reach it",
    )
    group.addoption(
        "--hil-artifacts", metavar="DIR", help="where per-test console logs, agent transcripts and captures go"
    )
    group.addoption(
        "--hil-profile",
        metavar="NAME",
        default=None,
        help="the qualification profile whose sizes the suites use (smoke, nightly, "
        "prerelease or a [profiles.NAME] of hil.toml; default nightly)",
    )
    group.addoption(
        "--hil-kernel",
        choices=["stock", "debug"],
        default=None,
        help="the embedded guest's kernel: Debian's (stock) or the same source with KASAN, lockdep, "
        "UBSAN, kmemleak, ... (debug; built once and cached); default: the profile's, else [linux] flavour",
    )
    group.addoption(
        "--hil-coverage",
        action="store_true",
        help="build the modules under test with gcov profiling, collect their line coverage after each "
        "test and write a merged report (coverage/index.html in the artifacts); selects the debug kernel",
    )
    group.addoption(
        "--hil-results",
        metavar="FILE",
        default=None,
        help="write every test report as a JSON line to FILE (what hil qualify reads)",
    )


def pytest_configure(config):
    for marker in (
        "hil_linux: the test uses a real Linux guest",
        "windows: a Windows driver test (Wine or lab)",
        "wine: runs the driver for real under Wine on this host",
        "windows_lab: needs a real Windows guest (HIL_WINDOWS_IMAGE)",
        "hil_windows: the test uses a libvirt Windows guest",
        "smoke: part of the smoke profile (boot, deploy, a collector round trip, a crash)",
        "soak: runs for the profile's soak_s (deselect with -m 'not soak')",
        "debug_kernel: needs the debug kernel flavour (--hil-kernel debug); skipped on the stock kernel",
        "expect_crash(kind=None, function=None, timeout=10): the test crashes its guest on "
        "purpose; it fails unless a matching crash is detected",
    ):
        config.addinivalue_line("markers", marker)
    from hil.config import load_config

    try:
        config._hil_config = load_config(config.getoption("--hil-config"))
    except HilError as exc:
        raise pytest.UsageError(f"kernel-hil configuration: {exc}") from None
    if config.getoption("--hil-accel"):
        config._hil_config.accel = config.getoption("--hil-accel")
    artifacts = config.getoption("--hil-artifacts") or config._hil_config.artifacts
    config.stash[ARTIFACTS_KEY] = Path(artifacts).resolve()
    from hil.config import choose_flavour
    from hil.qualify.profiles import resolve

    _configure_coverage(config)
    try:
        config.stash[PROFILE_KEY] = resolve(config.getoption("--hil-profile"), config._hil_config.profiles)
        choose_flavour(config._hil_config, config.getoption("--hil-kernel"), config.stash[PROFILE_KEY])
    except HilError as exc:
        raise pytest.UsageError(f"kernel-hil: {exc}") from None
    pytest_hosts.configure(config)  # probes several or remote hosts once, on the controller
    if _worker(config) is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(DeadWorkerSweeper(config), "hil-dead-worker-sweeper")
    results = config.getoption("--hil-results")
    if results and _worker(config) is None:
        from hil.qualify.results import ResultsWriter

        config.pluginmanager.register(ResultsWriter(Path(results), config.rootpath), "hil-results")
    # SIGTERM (CI timeouts, a killed terminal) unwinds like Ctrl-C so guests are cleaned up
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        try:
            signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            pass


def _configure_coverage(config) -> None:
    """``--hil-coverage``: modules are built with gcov profiling (:mod:`hil.deploy.coverage`),
    which needs a kernel with ``CONFIG_GCOV_KERNEL``: the embedded guest's debug flavour."""
    from hil.deploy import coverage

    on = bool(config.getoption("--hil-coverage"))
    coverage.set_enabled(on)
    if not on or config._hil_config.linux.image != "embedded":
        return  # a team's own image: its kernel must have CONFIG_GCOV_KERNEL (checked at build)
    if config.getoption("--hil-kernel") == "stock":
        raise pytest.UsageError("kernel-hil: --hil-coverage needs the debug kernel (CONFIG_GCOV_KERNEL), not stock")
    config.option.hil_kernel = "debug"


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` with ``hosts`` in hil.toml: as many workers as the reachable hosts' weights."""
    return pytest_hosts.auto_num_workers(config)


class DeadWorkerSweeper:
    """On the xdist controller: a worker that died (``kill -9``, the OOM killer) cannot remove
    its guests, and libvirtd keeps them running.  Sweep them the moment xdist reports the node
    down, so the session ends with no guest of ours, not at the next session's start."""

    def __init__(self, config):
        self.config = config

    def pytest_testnodedown(self, node, error) -> None:
        if error is None:
            return  # a worker that ended normally removed its own guests
        from hil.hosts.placement import open_host
        from hil.paths import runtime_dir
        from hil.provision.sweep import sweep

        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        worker = getattr(getattr(node, "gateway", None), "id", "?")
        nowhere = Path("/nonexistent")  # each host's domains first; this machine's folders once, after
        domains: list[str] = []
        for host in pytest_hosts.reachable_hosts(self.config):
            try:
                conn = open_host(host.uri)
                try:
                    domains += sweep(conn, nowhere, wine_run_dir=nowhere).domains
                finally:
                    conn.close()
            except Exception as exc:  # one host's failure is one line; the others are still swept
                if tr:
                    tr.write_line(
                        f"kernel-hil: worker {worker} died; its guests on {host.uri} could not be swept: "
                        f"{getattr(exc, 'problem', exc)}"
                    )
        swept = sweep(None, runtime_dir())
        swept.domains = domains
        if tr and (swept.domains or swept.dirs):
            tr.write_line(
                f"kernel-hil: worker {worker} died; removed its guests {', '.join(swept.domains) or '-'} "
                f"and {len(swept.dirs)} runtime folder(s)"
            )


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _worker(config) -> str | None:
    return getattr(config, "workerinput", {}).get("workerid")


def pytest_sessionstart(session):
    if _worker(session.config) is None:  # the controller: forget an earlier run's timelines
        for old in session.config.stash[ARTIFACTS_KEY].glob("timeline-*.json"):
            old.unlink(missing_ok=True)
        session.config.stash[SESSION_START_KEY] = time.time()


def pytest_sessionfinish(session):
    """Each process dumps its lab steps; the controller draws them as ``timeline.html``."""
    from hil.report import histogram, timeline
    from hil.steps import TIMELINE

    folder = session.config.stash[ARTIFACTS_KEY]
    worker = _worker(session.config)
    if TIMELINE.records:
        folder.mkdir(parents=True, exist_ok=True)
        timeline.dump(TIMELINE.records, worker or "main", folder / f"timeline-{worker or 'main'}.json")
    if worker is None:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        pages = {
            "timeline": timeline.render(list(folder.glob("timeline-*.json")), folder / "timeline.html"),
            "latency histograms": histogram.render_index(
                folder, folder / "latency.html", since=session.config.stash.get(SESSION_START_KEY, 0.0)
            ),
        }
        for what, out in pages.items():
            if out and tr:
                tr.ensure_newline()
                tr.write_line(f"kernel-hil {what}: {out}")
        _render_coverage(session, folder, tr)


_COVERAGE_KEY = pytest.StashKey[list]()  # the terminal summary's last lines


def _render_coverage(session, folder: Path, tr) -> None:
    """``--hil-coverage``, on the controller: merge the tests' coverage data of this session into
    ``coverage/index.html`` and keep the per-source lines for the end of the terminal summary."""
    from hil.deploy import coverage

    if not session.config.getoption("--hil-coverage"):
        return
    try:
        summary = coverage.render(folder, since=session.config.stash.get(SESSION_START_KEY, 0.0))
    except (HilError, OSError) as exc:
        session.config.stash[_COVERAGE_KEY] = [f"coverage: no report: {exc}"]
        return
    if summary is None:
        session.config.stash[_COVERAGE_KEY] = ["coverage: no data (no test loaded a module built with coverage)"]
        return
    if tr:
        tr.ensure_newline()
        tr.write_line(f"kernel-hil coverage: {summary.index}")
    notes = [f"coverage: {note}" for note in summary.notes]
    session.config.stash[_COVERAGE_KEY] = notes + coverage.summary_lines(summary.files)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The coverage lines (``--hil-coverage``) end the summary, one per source: the outermost
    wrapper writes them after everything else, pytest's short summary included."""
    try:
        return (yield)
    finally:
        lines = config.stash.get(_COVERAGE_KEY, [])
        if lines:
            terminalreporter.ensure_newline()
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def hil_config(pytestconfig):
    return pytestconfig._hil_config


@pytest.fixture(scope="session")
def hil_profile(pytestconfig):
    """The run's :class:`hil.qualify.profiles.Profile` (``--hil-profile``; default nightly):
    stress sizes (``hil_profile.size("execs")``, the environment may override), soak length."""
    return pytestconfig.stash[PROFILE_KEY]


@pytest.fixture(scope="session")
def hil_lab(hil_config, worker_id, pytestconfig):
    """One lab per xdist worker: its own libvirt connection, guests, names, ports, snapshot,
    on its own host first (``hil_hosts``: the others take over if that one is lost)."""
    from hil.lab import Lab
    from hil.provision.owner import Owner

    owner = Owner.current(worker=None if worker_id == "master" else worker_id)
    lab = Lab(hil_config, owner=owner, hosts=pytest_hosts.hosts_for(pytestconfig))
    try:
        lab.start()
    except HilError as exc:
        pytest.fail(f"kernel-hil lab: {exc}", pytrace=False)
    yield lab
    lab.close()


def _safe(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150]


@pytest.fixture
def hil_artifacts(request) -> Path:
    """This test's artifact folder, emptied of an earlier run's files."""
    d = request.config.stash[ARTIFACTS_KEY] / _safe(request.node.nodeid)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    return d


_NEXT_ITEM_KEY = pytest.StashKey[object]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Remember which test this process runs next (xdist included): the lab prepares a guest
    ahead only for a next test that will use one."""
    item.stash[_NEXT_ITEM_KEY] = nextitem


def upcoming_linux_guests(item, most: int = 8) -> int:
    """How many tests this process will run next, in a row, that ask for ``linux_guest``: the
    items after ``item`` when this process runs the whole session; under xdist only the next
    one is known (0 or 1)."""
    nextitem = item.stash.get(_NEXT_ITEM_KEY, None)
    if nextitem is None:
        return 0
    following = [nextitem]
    if _worker(item.config) is None:
        items = item.session.items
        try:
            at = items.index(nextitem)
        except ValueError:  # not one of the session's items: only the next one is known
            pass
        else:
            following = items[at : at + most]
    count = 0
    for later in following:
        if "linux_guest" not in getattr(later, "fixturenames", ()):
            break
        count += 1
    return count


@pytest.fixture
def linux_guest(request, hil_lab, hil_artifacts):
    """A clean, ready Linux guest for this test, destroyed (or kept, if it failed) afterwards."""
    try:
        guest = hil_lab.linux_guest(label=request.node.name, upcoming=upcoming_linux_guests(request.node))
    except HilError as exc:
        pytest.fail(f"kernel-hil: no Linux guest: {exc}", pytrace=False)
    yield from lend_guest(request, hil_lab, guest, hil_artifacts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """``@pytest.mark.expect_crash(...)``: the test body runs inside ``guest.expect_crash``."""
    marker = item.get_closest_marker("expect_crash")
    guest = _guest_of(item)
    if marker is None or guest is None:
        return (yield)
    with guest.expect_crash(*marker.args, **marker.kwargs):
        return (yield)


def _guest_of(item):
    guests = item.stash.get(GUESTS_KEY, [])
    return guests[0] if guests else None


_REPORTED_KEY = pytest.StashKey[set]()


class CrashRepr:
    """A test report's failure text for a guest crash: the title is the message."""

    def __init__(self, title: str, text: str):
        self.reprcrash = type("ReprCrash", (), {"message": title, "path": "", "lineno": 0})()
        self.title = title
        self.text = text

    def toterminal(self, tw) -> None:
        for line in self.text.splitlines():
            tw.line(line)

    def __str__(self) -> str:
        return self.text


def _unexpected_crashes(item, when: str) -> list:
    """Crashes on this test's guests nobody expected and no phase has reported yet."""
    reported = item.stash.setdefault(_REPORTED_KEY, set())
    out = []
    for g in item.stash.get(GUESTS_KEY, []):
        if g.monitor is not None and g.is_running():
            if when == "call":  # what the body made the guest print is in the log now
                g.console_barrier()
            g.monitor.quiesce()  # waits only while a report is half printed
        for c in g.unexpected_crashes():
            # by title: the monitor may hand out a new Crash object for one it finalised
            if (id(g), c.title) not in reported:
                reported.add((id(g), c.title))
                out.append((g, c))
    return out


def _fail_for_crashes(report, crashes) -> None:
    g, first = crashes[0]
    title = first.title
    text = [f"guest {g.name} crashed: {title}", ""]
    for g2, c in crashes:
        text += [
            f"--- {g2.name}: {c.title} (kind {c.report.kind}, function {c.report.function or '-'}, "
            f"seen on the {c.source})",
            *c.report.text.splitlines()[:40],
            "",
        ]
    if report.failed and report.longrepr is not None:
        text += ["--- the test's own error:", str(report.longrepr)[-3000:]]
    report.outcome = "failed"
    report.longrepr = CrashRepr(title, "\n".join(text))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when in ("setup", "call") or (report.when == "teardown" and item.stash.get(GUESTS_KEY, None)):
        crashes = _unexpected_crashes(item, report.when)
        if crashes and not report.skipped:
            _fail_for_crashes(report, crashes)
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    if report.when == "teardown":
        _attach(item, report)
    return report


def _attach(item, report) -> None:
    """Put each guest's console (tail in the terminal, whole in pytest-html) into the report."""
    guests = item.stash.get(GUESTS_KEY, [])
    if not guests:
        return
    failed = any(r.failed for r in item.stash.get(REPORTS_KEY, {}).values())
    extras = getattr(report, "extras", [])
    for g in guests:
        text = g.console_text()
        if failed:
            tail = "\n".join(text.splitlines()[-40:])
            report.sections.append((f"guest {g.name} console (last 40 lines)", tail))
        try:
            from pytest_html import extras as html_extras

            extras.append(html_extras.text(text, name=f"{g.name} console"))
        except ImportError:
            pass
    report.extras = extras
