"""Fixtures every qualification suite shares (suites/linux, suites/stress).

The suites deploy the team's own builds when ``[drivers]`` in hil.toml names them, the in-repo
reference builds otherwise (:func:`hil.deploy.artifacts.resolve`); the public ``kmod`` fixture
loads them, names each in the test's JUnit properties, and fails the test on a kernel report.
"""

from __future__ import annotations

import pytest

from hil.deploy import artifacts, reference
from hil.deploy.artifacts import Deployed
from hil.deploy.module_session import ModuleSession

from .kserver_client import SERVE_DIR, KServerClient


@pytest.fixture
def kserver_ko(hil_config, linux_guest) -> Deployed:
    """The kserver to qualify: ``[drivers] kserver``, else the reference build."""
    return artifacts.resolve(hil_config.drivers, "kserver", lambda: reference.build_kserver(linux_guest.kbuild_dir))


@pytest.fixture
def agent_ko(hil_config, linux_guest) -> Deployed:
    """The Linux agent to qualify: ``[drivers] linux_agent``, else the reference build."""
    return artifacts.resolve(hil_config.drivers, "linux_agent", lambda: reference.build_agent(linux_guest.kbuild_dir))


@pytest.fixture
def crashmod(linux_guest, kmod):
    """The guest with the crash-on-command test module loaded (``echo CMD > /proc/hil_crash``)."""
    kmod.load(reference.build_crashmod(linux_guest.kbuild_dir))
    return linux_guest


class KServer:
    """A loaded kserver: its host-side port (forwarded to the guest port) and its counters."""

    def __init__(self, modules: ModuleSession, guest_port: int, host_port: int, params: dict, host: str = "127.0.0.1"):
        self.modules = modules
        self.host = host  # where host_port listens: the guest's host
        self.guest_port = guest_port
        self.host_port = host_port
        self.params = params

    def client(self, timeout: float = 60.0) -> KServerClient:
        return KServerClient(self.host, self.host_port, timeout=timeout)

    def stats(self) -> dict[str, int]:
        return self.modules.stats("kserver")


@pytest.fixture
def start_kserver(linux_guest, kmod, kserver_ko):
    """``start_kserver(guest_port=7070, **params) -> KServer``: load kserver serving SERVE_DIR."""

    def start(guest_port: int = 7070, **params) -> KServer:
        params.setdefault("allow", linux_guest.controller_address)  # where this machine's clients come from
        params.setdefault("root", SERVE_DIR)
        params.setdefault("reply", "hello from kserver")
        linux_guest.run(f"mkdir -p {params['root']}").check()
        kmod.load(kserver_ko, port=guest_port, **params)
        host_port = linux_guest.forward_port(guest_port)
        return KServer(kmod, guest_port, host_port, params, host=linux_guest.forward_host)

    return start


@pytest.fixture
def start_agent(linux_guest, kmod, agent_ko):
    """``start_agent(port, **params)``: load hil_agent reporting to this machine's port: at
    10.0.2.2 (this machine's 127.0.0.1 through QEMU user networking) for a local guest, at this
    machine's own address for a guest on a remote libvirt host."""

    def start(port: int, **params) -> None:
        params.setdefault("collector", linux_guest.controller_address)
        kmod.load(agent_ko, port=port, **params)

    return start
