"""Fixtures for the Linux kernel-module suites (kserver, agent, and the stress suites).

The work lives in :mod:`hil.deploy.kmod`; these fixtures only tie it to a test: build the module
for the guest's own kernel (cached), load it, and on teardown unload whatever is still loaded,
save the guest's dmesg as an artifact and fail the test if the kernel logged an oops, BUG,
WARNING or lockup while it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.deploy import kmod
from hil.errors import HilError


class ModuleSession:
    """Modules a test loaded into its guest; unloads leftovers and checks the kernel at the end."""

    def __init__(self, guest, artifacts: Path):
        self.guest = guest
        self.artifacts = artifacts
        self.loaded: list[str] = []
        # only what happens from here on counts: boot-time noise is not this test's doing
        self.console_start = len(guest.console_text())
        self.log_token = kmod.mark_kernel_log(guest, "module test starts")

    def load(self, ko: Path, **params) -> kmod.ModuleEvent:
        ev = kmod.load_module(self.guest, ko, **params)
        self.loaded.append(ko.stem)
        return ev

    def unload(self, name: str, **kw) -> kmod.ModuleEvent:
        ev = kmod.unload_module(self.guest, name, **kw)
        if name in self.loaded:
            self.loaded.remove(name)
        return ev

    def stats(self, name: str) -> dict[str, int]:
        return kmod.parse_counters(kmod.module_param(self.guest, name, "stats"))

    def console_problems(self) -> list[str]:
        return kmod.kernel_problems(self.guest.console_text()[self.console_start:])

    def finish(self) -> list[str]:
        problems: list[str] = []
        for name in list(self.loaded):
            try:
                self.unload(name, check=False)
            except HilError as exc:
                problems.append(f"unloading {name} at teardown: {exc}")
        try:
            kmod.save_dmesg(self.guest, self.artifacts / "dmesg.txt")
            problems += kmod.kernel_problems(kmod.kernel_log_since(self.guest, self.log_token))
        except HilError as exc:
            problems.append(f"could not read dmesg: {exc}")
        problems += self.console_problems()
        return problems


@pytest.fixture
def kmod_artifacts(request, tmp_path) -> Path:
    """The plugin's per-test artifact folder when there is one, else the test's tmp_path."""
    try:
        return request.getfixturevalue("hil_artifacts")
    except pytest.FixtureLookupError:
        return tmp_path


@pytest.fixture
def modules(linux_guest, kmod_artifacts):
    session = ModuleSession(linux_guest, kmod_artifacts)
    yield session
    problems = session.finish()
    if problems:
        pytest.fail("the guest kernel complained during the test (dmesg saved to "
                    f"{kmod_artifacts / 'dmesg.txt'}):\n" + "\n".join(problems[:30]), pytrace=False)


@pytest.fixture
def kserver_ko(linux_guest) -> Path:
    return kmod.build_kserver(linux_guest.kbuild_dir)


@pytest.fixture
def agent_ko(linux_guest) -> Path:
    return kmod.build_agent(linux_guest.kbuild_dir)


class KServer:
    """A loaded kserver: its host-side port (forwarded to the guest port) and its counters."""

    def __init__(self, modules: ModuleSession, guest_port: int, host_port: int, params: dict):
        self.modules = modules
        self.guest_port = guest_port
        self.host_port = host_port
        self.params = params

    def client(self, timeout: float = 60.0) -> kmod.KServerClient:
        return kmod.KServerClient("127.0.0.1", self.host_port, timeout=timeout)

    def stats(self) -> dict[str, int]:
        return self.modules.stats("kserver")


SERVE_DIR = kmod.KSERVER_SERVE_DIR


@pytest.fixture
def start_kserver(linux_guest, modules, kserver_ko):
    """``start_kserver(allow=..., **params) -> KServer``: load kserver serving SERVE_DIR."""

    def start(guest_port: int = 7070, **params) -> KServer:
        params.setdefault("allow", "10.0.2.2")
        params.setdefault("root", SERVE_DIR)
        params.setdefault("reply", "hello from kserver")
        linux_guest.run(f"mkdir -p {params['root']}").check()
        modules.load(kserver_ko, port=guest_port, **params)
        host_port = linux_guest.forward_port(guest_port)
        return KServer(modules, guest_port, host_port, params)

    return start


@pytest.fixture
def start_agent(linux_guest, modules, agent_ko):
    """``start_agent(port, **params)``: load hil_agent reporting to 10.0.2.2:port (the host's
    127.0.0.1:port through QEMU user networking)."""

    def start(port: int, **params) -> None:
        modules.load(agent_ko, port=port, **params)

    return start

