"""The one way a pytest fixture hands out a guest of any kind and takes it back.

:func:`lend_guest` registers the guest with the test (so the plugin's crash path sees it),
yields it, and afterwards saves its console and crash evidence into the test's artifact
folder and has the lab destroy it (or keep it, for ``--hil-keep-failed``).  The Linux, the
Windows lab and the Wine fixtures all go through it, so a crash of any kind fails the test the
same way (:func:`hil.pytest_plugin.pytest_runtest_makereport`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.guest.base import Guest

GUESTS_KEY = pytest.StashKey[list]()
REPORTS_KEY = pytest.StashKey[dict]()


def lend_guest(request: Any, lab: Any, guest: Guest, artifacts: Path) -> Iterator[Guest]:
    request.node.stash.setdefault(GUESTS_KEY, []).append(guest)
    if getattr(guest, "host_uri", ""):
        request.node.user_properties.append(("hil_host", guest.host_uri))  # type: ignore[attr-defined]
    try:
        yield guest
    finally:
        if guest.monitor is not None:
            guest.monitor.quiesce()  # a report still being printed belongs to this test
        failed = any(r.failed for r in request.node.stash.get(REPORTS_KEY, {}).values())
        keep = failed and request.config.getoption("--hil-keep-failed")
        _collect_guest_artifacts(request, guest, artifacts)
        _collect_crash_evidence(request, guest, artifacts)
        lab.discard(guest, keep=keep)  # destroyed off the next test's path (the lab's reaper)
        if keep:
            tr = request.config.pluginmanager.get_plugin("terminalreporter")
            if tr:
                tr.write_line(_kept_message(request, lab, guest))


def _kept_message(request: Any, lab: Any, guest: Guest) -> str:
    lines = [f"\nkept {guest.kind.value} guest {guest.name} for {request.node.nodeid}:"]
    lines.append(f"  console: tail -f {guest.console_path}")
    if guest.kind.value == "linux":
        lines.append(
            f"  agent:   virsh -c {getattr(guest, 'host_uri', '') or lab.config.libvirt_uri} qemu-agent-command {guest.name} "
            '\'{"execute":"guest-ping"}\''
        )
    lines.append("  remove:  hil sweep --kept\n")
    return "\n".join(lines)


def _collect_guest_artifacts(request: Any, guest: Guest, folder: Path) -> None:
    guest.console_text()  # a remote host's console: its last bytes into the mirror
    sources = (("console.log", guest.console_path), ("agent.log", getattr(guest, "transcript_path", None)))
    for kind, src in sources:
        if not src or not Path(src).exists():
            continue
        if Path(src).resolve().is_relative_to(folder.resolve()):
            dst = Path(src)  # already in the test's folder (a Wine guest's log)
        else:
            dst = folder / f"{guest.instance}.{kind}"
            shutil.copyfile(src, dst)
        request.node.user_properties.append((f"hil_{kind.replace('.', '_')}", str(dst)))


def _collect_crash_evidence(request: Any, guest: Guest, folder: Path) -> None:
    """``crash.txt`` (every crash, expected ones too) and ``hil_crash_*`` JUnit properties."""
    crashes = guest.crashes
    if not crashes:
        return
    path = folder / f"{guest.instance}.crash.txt"
    console = guest.console_text()
    path.write_text("\n\n".join(c.describe(console) for c in crashes))
    first = crashes[0].report
    props = request.node.user_properties
    props += [
        ("hil_crash_title", first.title),
        ("hil_crash_kind", str(first.kind)),
        ("hil_crash_function", first.function),
        ("hil_crash_expected", str(crashes[0].expected)),
        ("hil_crash_txt", str(path)),
    ]
