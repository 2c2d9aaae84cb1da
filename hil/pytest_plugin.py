"""The pytest plugin: options, a few fixtures, hooks.  All real work lives in the library.

Options (group ``hil``): ``--hil-config``, ``--hil-accel``, ``--hil-keep-failed``,
``--hil-artifacts``.  Fixtures: ``hil_config``, ``hil_lab`` (session; one per xdist worker),
``linux_guest`` (a clean guest per test), ``hil_artifacts`` (the test's artifact folder),
``collector`` (the reference collector on 127.0.0.1, see :mod:`hil.collector`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from hil.collector.pytest_fixtures import collector  # noqa: F401  (re-exported fixture)
from hil.errors import HilError

ARTIFACTS_KEY = pytest.StashKey[Path]()
REPORTS_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser):
    group = parser.getgroup("hil", "kernel-hil")
    group.addoption("--hil-config", metavar="FILE", help="hil.toml to use (default: hil.toml or "
                    "[tool.hil] in pyproject.toml, searched upward from the current folder)")
    group.addoption("--hil-accel", choices=["auto", "kvm", "tcg"], default=None,
                    help="accelerator: KVM only where it really works (auto), or force one")
    group.addoption("--hil-keep-failed", action="store_true",
                    help="keep a failed test's guest running for debugging and print how to reach it")
    group.addoption("--hil-artifacts", metavar="DIR",
                    help="where per-test console logs, agent transcripts and captures go")


def pytest_configure(config):
    for marker in ("hil_linux: the test uses a real Linux guest",
                   "windows: a Windows driver test (Wine or lab)",
                   "wine: runs the driver for real under Wine on this host",
                   "windows_lab: needs a real Windows guest (HIL_WINDOWS_IMAGE)",
                   "hil_windows: the test uses a libvirt Windows guest"):
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
    # SIGTERM (CI timeouts, a killed terminal) unwinds like Ctrl-C so guests are cleaned up
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        try:
            signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            pass


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def hil_config(pytestconfig):
    return pytestconfig._hil_config


@pytest.fixture(scope="session")
def hil_lab(hil_config, worker_id):
    """One lab per xdist worker: its own libvirt connection, guests, names, ports, snapshot."""
    from hil.lab import Lab
    from hil.provision.owner import Owner

    lab = Lab(hil_config, owner=Owner.current(worker=None if worker_id == "master" else worker_id))
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
    """This test's artifact folder (created on first use)."""
    d = request.config.stash[ARTIFACTS_KEY] / _safe(request.node.nodeid)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def linux_guest(request, hil_lab, hil_artifacts):
    """A clean, ready Linux guest for this test, destroyed (or kept, if it failed) afterwards."""
    try:
        guest = hil_lab.linux_guest(label=request.node.name)
    except HilError as exc:
        pytest.fail(f"kernel-hil: no Linux guest: {exc}", pytrace=False)
    yield guest
    _collect_guest_artifacts(request, guest, hil_artifacts)
    failed = any(r.failed for r in request.node.stash.get(REPORTS_KEY, {}).values())
    keep = failed and request.config.getoption("--hil-keep-failed")
    hil_lab.discard(guest, keep=keep)
    if keep:
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        msg = (f"\nkept guest {guest.name} for {request.node.nodeid}:\n"
               f"  console: virsh -c {hil_lab.config.libvirt_uri} console {guest.name}  (root, no password)\n"
               f"  agent:   virsh -c {hil_lab.config.libvirt_uri} qemu-agent-command {guest.name} "
               "'{\"execute\":\"guest-ping\"}'\n"
               f"  remove:  hil sweep --kept\n")
        if tr:
            tr.write_line(msg)


def _collect_guest_artifacts(request, guest, folder: Path) -> None:
    for kind, src in (("console.log", guest.spec.console_log), ("agent.log", guest.transcript_path)):
        if src and Path(src).exists():
            dst = folder / f"{guest.spec.instance}.{kind}"
            shutil.copyfile(src, dst)
            request.node.user_properties.append((f"hil_{kind.replace('.', '_')}", str(dst)))
    request.node.stash.setdefault(_GUESTS_KEY, []).append(guest)


_GUESTS_KEY = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    if report.when == "teardown":
        _attach(item, report)
    return report


def _attach(item, report) -> None:
    """Put each guest's console (tail in the terminal, whole in pytest-html) into the report."""
    guests = item.stash.get(_GUESTS_KEY, [])
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
