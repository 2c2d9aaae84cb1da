"""Public pytest fixtures for Windows drivers built with mingw-w64 and run under Wine
(re-exported by :mod:`hil.pytest_plugin`; a conftest may import them too)::

    def test_my_driver(mingw, wine_driver, collector):
        sys_file = mingw.build_driver(["driver/mydrv.c", *mingw.protocol_sources])
        wine_driver(sys_file, "mydrv", collector_port="CollectorPort", Verbose=1)
        collector.wait_for_agent(kind="mydrv", timeout=30)

``mingw`` (session): builds a team's own drivers and console programs with
:mod:`hil.deploy.windows_build`, cached by their sources; relative paths are relative to
pytest's rootdir (the project's folder).  A failed build fails the test with the compiler's
messages; without mingw-w64 the test is skipped with the ``apt-get`` command.

``win_build`` (session): the reference build of the framework's own drivers and tools
(:class:`~hil.deploy.windows_build.BuildResult`: ``win_build["hilsocks.sys"]``).

``wine_guest``: a fresh Wine prefix per test with the service loader ``hilsvc.exe`` (and
``hilagentctl.exe``) in ``C:\\hil``; its DbgPrint log becomes the test's artifact
(``wine_debug_log`` in the JUnit properties) and a driver crash in the prefix fails the test
at teardown.  Skipped with the reason when Wine is not installed.

``wine_driver``: ``wine_driver(driver, service, *, collector_port=None, **params)`` installs
and starts a ``.sys`` (a path, or a :class:`~hil.deploy.artifacts.Deployed` from
``artifacts.resolve``) as a kernel-driver service in ``wine_guest``; ``params`` become REG_DWORD
values under the service's ``Parameters`` key, and ``collector_port="Name"`` adds the value
``Name`` = the ``collector`` fixture's port (the collector listens on 127.0.0.1, which is the
host's loopback under Wine too).  It returns a :class:`WineDriver`; what the test left running
is stopped and deleted at teardown (a driver that does not unload fails the test).  Each
driver deployed is named with its SHA-256 in the test's JUnit properties
(``hil_deployed_<name>``, ``..._sha256``, ``..._origin``: ``built`` by ``mingw``, ``file``,
or the ``Deployed``'s own).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hil.deploy import windows_build
from hil.deploy.artifacts import Deployed
from hil.errors import EnvironmentProblem, GuestError, HilError
from hil.guest.fixture import lend_guest

WINE_TOOLS = ("hilsvc.exe", "hilagentctl.exe")


class Mingw:
    """The ``mingw`` fixture's object: :func:`~hil.deploy.windows_build.build_driver` and
    :func:`~hil.deploy.windows_build.build_exe` with relative paths taken from ``root``, and a
    failed build turned into a failed test."""

    protocol_sources = windows_build.PROTOCOL_SOURCES
    ksock_sources = windows_build.KSOCK_SOURCES
    ksock_include_dirs = windows_build.KSOCK_INCLUDE_DIRS
    shipped_include_dirs = windows_build.SHIPPED_INCLUDE_DIRS

    def __init__(self, root: Path):
        self.root = Path(root)
        self.built: set[Path] = set()

    def build_driver(
        self, sources, name: str | None = None, include_dirs=(), defines=(), libs=windows_build.NT_LIBS, ldflags=()
    ) -> Path:
        """A kernel driver (``name`` defaults to the first source's stem + ``.sys``)."""
        return self._build(
            windows_build.build_driver,
            sources,
            name,
            include_dirs=include_dirs,
            defines=defines,
            libs=libs,
            ldflags=ldflags,
        )

    def build_exe(self, sources, name: str | None = None, include_dirs=(), defines=(), libs=(), ldflags=()) -> Path:
        """A console program (``wmain``; ``name`` defaults to the first source's stem + ``.exe``)."""
        return self._build(
            windows_build.build_exe,
            sources,
            name,
            include_dirs=include_dirs,
            defines=defines,
            libs=libs,
            ldflags=ldflags,
        )

    def _build(self, how, sources, name, **row) -> Path:
        try:
            out = how(sources, name, source_root=self.root, **row)
        except HilError as exc:
            pytest.fail(f"kernel-hil mingw: {exc}", pytrace=False)
        self.built.add(out.resolve())
        return out


@pytest.fixture(scope="session")
def mingw(pytestconfig) -> Mingw:
    try:
        windows_build.require_toolchain()
    except EnvironmentProblem as exc:
        pytest.skip(f"mingw-w64 is not installed ({exc.fix})")
    return Mingw(pytestconfig.rootpath)


@pytest.fixture(scope="session")
def win_build(mingw) -> windows_build.BuildResult:
    """The reference build: every in-repo driver and tool (cached by source hash)."""
    try:
        return windows_build.build_all()
    except HilError as exc:
        pytest.fail(f"kernel-hil reference Windows build: {exc}", pytrace=False)


def wine_missing() -> str | None:
    """Why Wine cannot run here, or None."""
    if shutil.which("wine") or shutil.which("wine64"):
        return None
    return "Wine is not installed (apt-get install -y wine64 wine)"


@pytest.fixture
def wine_guest(request, hil_lab, hil_artifacts):
    """A fresh Wine prefix with hilsvc.exe/hilagentctl.exe in C:\\hil, destroyed after the test.
    A driver's unhandled exception fails the test with Wine's own crash report."""
    if reason := wine_missing():
        pytest.skip(reason)
    build = request.getfixturevalue("win_build")
    try:
        guest = hil_lab.wine_guest(hil_artifacts / "wine", tools={t: build[t] for t in WINE_TOOLS}, name="wine")
    except HilError as exc:
        pytest.fail(f"kernel-hil: no Wine guest: {exc}", pytrace=False)
    request.node.user_properties.append(("wine_debug_log", str(guest.debug_log)))
    yield from lend_guest(request, hil_lab, guest, hil_artifacts)


class WineDriver:
    """A driver service ``wine_driver`` started: ``guest``, ``service``, ``deployed``, and
    ``log_start``, the index of its first DbgPrint line (``guest.wait_for_log(..., start=)``
    then sees only what this load printed)."""

    def __init__(self, guest, service: str, deployed: Deployed, log_start: int = 0):
        self.guest = guest
        self.service = service
        self.deployed = deployed
        self.log_start = log_start
        self.running = True

    def stop(self) -> None:
        """Stop the service (its DriverUnload runs) and delete it; raises :class:`GuestError`
        naming the service when either fails."""
        self.running = False  # tried once: teardown does not try again
        res = self.guest.stop_driver(self.service)
        if res.exit_code != 0:
            raise GuestError(
                f"stopping driver {self.service} failed: {res.text.strip()}",
                f"its DbgPrint output is in {self.guest.debug_log}",
            )
        res = self.guest.delete_driver(self.service)
        if res.exit_code != 0:
            raise GuestError(f"deleting service {self.service} failed: {res.text.strip()}")


@pytest.fixture
def wine_driver(request, wine_guest, mingw):
    started: list[WineDriver] = []

    def start(driver: Path | Deployed, service: str, *, collector_port: str | None = None, **params: int) -> WineDriver:
        if isinstance(driver, Deployed):
            deployed = driver
        else:
            path = Path(driver)
            deployed = Deployed.of(path, "built" if path.resolve() in mingw.built else "file")
        if collector_port:
            params[collector_port] = request.getfixturevalue("collector").port
        props = request.node.user_properties
        props += [p for p in deployed.properties() if p not in props]
        log_start = len(wine_guest.dbgprint_lines())
        wine_guest.install_driver(deployed.path, service, **params)
        wine_guest.start_driver(service)
        started.append(WineDriver(wine_guest, service, deployed, log_start))
        return started[-1]

    yield start
    problems = []
    for drv in reversed(started):
        if drv.running:
            try:
                drv.stop()
            except HilError as exc:
                problems.append(str(exc))
    if problems:
        pytest.fail("kernel-hil wine_driver teardown: " + "; ".join(problems), pytrace=False)
