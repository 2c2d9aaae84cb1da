"""The kernel modules one test builds and loads into its guest: the ``kmod`` fixture's object.

Library first (the pytest fixture in :mod:`hil.deploy.pytest_fixtures` only ties it to a test)::

    session = ModuleSession(guest, artifacts_dir)
    ko = session.build(Path("src/mymod"))           # against the guest's own kernel headers
    session.load(ko, debug=1)
    ...
    session.finish()    # unload leftovers, save dmesg, hand kernel reports to the crash monitor

What the kernel reports while the test runs (oops, BUG, WARNING, lockups...) reaches the test
through the guest's crash monitor, the one path from a crash to a failed test: the console is
watched all along, and :meth:`finish` adds what only ``dmesg`` shows (a message below the
console log level).  On a kernel with kmemleak (the debug flavour) :meth:`finish` also asks it
for memory the unloaded modules allocated and never freed (:mod:`hil.deploy.kmemleak`): each
leak is a crash report too (``memory leak in <function>``, kind ``LEAK``); on a kernel without
kmemleak that costs one ``test -e`` per session.  What the session deployed is kept as
:class:`~hil.deploy.artifacts.Deployed` rows (path, SHA-256, origin) for the test's report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hil.crash import Report, parse_all
from hil.deploy import coverage, kmemleak, kmod
from hil.deploy.artifacts import Deployed
from hil.errors import HilError

log = logging.getLogger("hil.deploy.module_session")


class ModuleSession:
    """Modules a test built and loaded into ``guest``.

    guest: a running Linux guest (:class:`hil.guest.linux.LinuxGuest`: ``run``, ``put``,
        ``kbuild_dir``, ``monitor``).
    artifacts: the test's artifact folder (``dmesg.txt`` goes there).
    on_deploy: called with each :class:`Deployed` as it is loaded (the fixture puts it in the
        test's JUnit properties).
    """

    def __init__(self, guest, artifacts: Path, on_deploy: Callable[[Deployed], None] | None = None):
        self.guest = guest
        self.artifacts = Path(artifacts)
        self.on_deploy = on_deploy
        self.loaded: list[str] = []
        self.deployed: list[Deployed] = []
        self._built: set[Path] = set()
        self._ko: dict[str, Path] = {}  # module name -> the .ko loaded under it
        self._kmemleak: bool | None = None  # the kernel has kmemleak (None: not asked yet)
        self._unloaded: list[kmemleak.ModuleCode] = []  # not checked for leaks yet
        self._last_unload = 0.0  # time.monotonic() of the last rmmod
        # only what happens from here on counts: boot-time noise is not this test's doing
        self.console_start = len(guest.console_text())
        self.log_token = kmod.mark_kernel_log(guest, "module test starts")

    def build(self, src_dir: Path, extra_sources: Iterable[Path] = (), *, name: str | None = None) -> Path:
        """Build the out-of-tree module in ``src_dir`` against the guest's own kernel headers
        (cached by the sources and the kernel: a rebuild of unchanged sources is a lookup)."""
        if self.guest.kbuild_dir is None:
            raise HilError(
                f"guest {self.guest.name} has no kernel headers to build modules against",
                "set [linux] kbuild_dir in hil.toml to your kernel's headers tree",
            )
        ko = kmod.build_module(Path(src_dir), self.guest.kbuild_dir, extra_sources, name=name)
        self._built.add(ko)
        return ko

    def load(self, module: Path | Deployed, **params) -> kmod.ModuleEvent:
        """Copy the ``.ko`` (a path, or a :class:`Deployed` from ``artifacts.resolve``) into the
        guest and insmod it with ``params``; raises when insmod fails or the kernel complains."""
        deployed = (
            module
            if isinstance(module, Deployed)
            else Deployed.of(module, "built" if Path(module) in self._built else "file")
        )
        self.deployed.append(deployed)
        if self.on_deploy is not None:
            self.on_deploy(deployed)
        event = kmod.load_module(self.guest, deployed.path, **params)
        self.loaded.append(event.name)
        self._ko[event.name] = Path(deployed.path)
        return event

    def unload(self, name: str, **kw) -> kmod.ModuleEvent:
        """``rmmod`` ``name`` (see :func:`hil.deploy.kmod.unload_module`).  With kmemleak, where
        its code was is noted first, so :meth:`check_leaks` can name its frames afterwards."""
        code = self._module_code(name)
        event = kmod.unload_module(self.guest, name, **kw)
        if name in self.loaded:
            self.loaded.remove(name)
        if code is not None:
            self._unloaded.append(code)
            self._last_unload = time.monotonic()
        return event

    def _module_code(self, name: str) -> kmemleak.ModuleCode | None:
        if self._kmemleak is False:
            return None
        try:
            code = kmemleak.module_code(self.guest, name, self._ko.get(name))
        except kmemleak.NoKmemleak:
            self._kmemleak = False
            return None
        self._kmemleak = True
        return code

    def check_leaks(self) -> list[Report]:
        """Ask kmemleak for memory the modules unloaded so far allocated and never freed; each
        leak is given to the guest's crash bookkeeping (and returned).  Waits until the last
        unload is :data:`~hil.deploy.kmemleak.MIN_AGE_S` old (kmemleak ignores younger objects).
        Nothing to do, no guest command, without kmemleak or when nothing was unloaded."""
        if not self._unloaded:
            return []
        modules, self._unloaded = self._unloaded, []
        scanned = time.monotonic()
        wait = self._last_unload + kmemleak.MIN_AGE_S + kmemleak.AGE_MARGIN_S - scanned
        try:
            reports, listing = kmemleak.find_leaks(self.guest, modules, wait_s=wait)
        except kmemleak.NoKmemleak as exc:
            self._kmemleak = False
            log.warning("guest %s: leaks of unloaded modules are not checked: %s", self.guest.name, exc)
            return []
        if listing.strip():
            self.artifacts.mkdir(parents=True, exist_ok=True)
            (self.artifacts / "kmemleak.txt").write_text(listing)
        log.info(
            "kmemleak after unloading %s: %d leak(s), %.1f s",
            ", ".join(m.name for m in modules),
            len(reports),
            time.monotonic() - scanned,
        )
        for report in reports:
            self.guest.add_crash(report, source="kmemleak")
        return reports

    def param(self, name: str, param: str) -> str:
        """``/sys/module/<name>/parameters/<param>`` as text."""
        return kmod.module_param(self.guest, name, param)

    def stats(self, name: str) -> dict[str, int]:
        """A ``stats`` parameter of ``a=1 b=2`` counters, as a dict (kserver, hil_agent)."""
        return kmod.parse_counters(self.param(name, "stats"))

    def console_problems(self) -> list[str]:
        """Titles of the crash reports on the console since this session started."""
        return kmod.kernel_problems(self.guest.console_text()[self.console_start :])

    def finish(self) -> list[str]:
        """Unload what is still loaded, check for leaks (:meth:`check_leaks`), save
        ``dmesg.txt`` and give every kernel report since the start to the guest's crash
        bookkeeping (the one path to a failed test).  Returns what went wrong besides (an rmmod
        that failed)."""
        problems: list[str] = []
        if not self.guest.is_running():
            return problems  # a crashed guest: nothing to unload, the monitor has the story
        for name in list(self.loaded):
            try:
                self.unload(name, check=False)
            except HilError as exc:
                problems.append(f"unloading {name} at teardown: {exc}")
        problems += coverage.after_test(self.guest, self.deployed, self.artifacts)  # --hil-coverage
        try:
            self.check_leaks()
        except HilError as exc:
            problems.append(f"asking kmemleak for leaks: {exc}")
        try:
            kmod.save_dmesg(self.guest, self.artifacts / "dmesg.txt")
            log = kmod.kernel_log_since(self.guest, self.log_token)
        except HilError as exc:
            return problems + [f"could not read the guest's kernel log: {exc}"]
        for report in parse_all(log):
            self.guest.add_crash(report, source="dmesg")
        return problems
