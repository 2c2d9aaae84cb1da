"""Lab-only: a real Windows guest (the public ``windows_guest`` fixture: ``HIL_WINDOWS_IMAGE``
or ``[windows] image``).  Skipped with the reason elsewhere.

What only real Windows can show: process-notify callbacks for real process creations, and
the minifilter communication port (both are stubs in Wine 8.0).  The drivers deployed are
``[drivers] windows_agent`` and ``[drivers] minifilter`` from hil.toml when set (the team's own
builds; a minifilter's ``.inf`` beside its ``.sys``), the reference builds otherwise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hil.deploy import artifacts
from hil.deploy.artifacts import Deployed
from hil.windows import deploy

pytestmark = [pytest.mark.windows, pytest.mark.windows_lab, pytest.mark.hil_windows]


@pytest.fixture
def lab_agent(request, hil_config, win_build) -> Deployed:
    """The release agent: ``[drivers] windows_agent``, else the reference ``hilagent.sys``."""
    agent = artifacts.resolve(hil_config.drivers, "windows_agent", lambda: win_build["hilagent.sys"])
    request.node.user_properties.extend(agent.properties())
    return agent


@pytest.fixture
def minifilter(request, hil_config, win_build) -> tuple[Deployed, Path]:
    """The minifilter and its INF: ``[drivers] minifilter`` (INF beside it), else ``hilflt.sys``
    and the INF that ships with its sources."""
    flt = artifacts.resolve(hil_config.drivers, "minifilter", lambda: win_build["hilflt.sys"])
    request.node.user_properties.extend(flt.properties())
    if flt.origin == "configured":
        return flt, flt.path.with_suffix(".inf")
    from hil.deploy.windows_build import windows_dir

    return flt, windows_dir() / "minifilter" / "hilflt.inf"


def test_real_process_creations_are_reported(windows_guest, lab_agent, collector):
    t = windows_guest.transport
    # The guest reaches the host's collector through QEMU user networking: 10.0.2.2.
    deploy.install_driver(t, lab_agent.path, "hilagent")
    t.run_ps(
        "New-Item -Force -Path HKLM:\\SYSTEM\\CurrentControlSet\\Services\\hilagent\\Parameters|Out-Null;"
        "Set-ItemProperty HKLM:\\SYSTEM\\CurrentControlSet\\Services\\hilagent\\Parameters "
        f"-Name CollectorPort -Type DWord -Value {collector.port};"
        "Set-ItemProperty HKLM:\\SYSTEM\\CurrentControlSet\\Services\\hilagent\\Parameters "
        "-Name CollectorIp -Type DWord -Value 0x0a000202"
    ).check()
    deploy.enable_verifier(t, "hilagent.sys")
    windows_guest.reboot()
    assert "hilagent.sys" in deploy.verified_drivers(t)
    deploy.start_driver(t, "hilagent")
    collector.wait_for_agent(kind="win-wdm", timeout=60)
    t.run_cmd("cmd /c exit 0").check()
    rec = collector.wait_for(kind="created", image_path=lambda p: p.lower().endswith("\\cmd.exe"), timeout=60)
    cmd_bytes = t.read_file(r"C:\Windows\System32\cmd.exe")
    assert rec.sha256 == hashlib.sha256(cmd_bytes).digest()
    collector.wait_for(kind="exited", pid=rec.pid, timeout=60)
    deploy.stop_driver(t, "hilagent")
    deploy.delete_driver(t, "hilagent")
    deploy.reset_verifier(t)


def test_minifilter_port_round_trip(windows_guest, minifilter, win_build):
    t = windows_guest.transport
    flt, inf = minifilter
    # The INF names the .sys it copies: both keep their file names.
    t.put(flt.path, rf"C:\hil\{flt.path.name}")
    t.put(inf, rf"C:\hil\{inf.name}")
    t.put(win_build["hilfltc.exe"], r"C:\hil\hilfltc.exe")
    t.run_cmd(rf"RUNDLL32.EXE SETUPAPI.DLL,InstallHinfSection DefaultInstall.NTamd64 132 C:\hil\{inf.name}").check()
    deploy.fltmc_load(t, "hilflt")
    try:
        r1 = t.run_cmd(r"C:\hil\hilfltc.exe hello").check()
        assert r1.stdout.strip().endswith(b"pong: hello")
        r2 = t.run_cmd(r"C:\hil\hilfltc.exe again").check()
        assert b"reply 1: pong: again" in r2.stdout  # sequence restarts per connection
    finally:
        deploy.fltmc_unload(t, "hilflt")
