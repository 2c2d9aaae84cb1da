"""Lab-only: a real Windows guest (HIL_WINDOWS_IMAGE).  Skipped with the reason elsewhere.

What only real Windows can show: process-notify callbacks for real process creations, and
the minifilter communication port (both are stubs in Wine 8.0).
"""

from __future__ import annotations

import hashlib
import os

import pytest

from hil.windows import deploy

pytestmark = [pytest.mark.windows, pytest.mark.windows_lab, pytest.mark.hil_windows]


@pytest.fixture
def windows_guest(windows_image, tmp_path, request):
    from hil.provision.accel import choose_accel
    from hil.windows.guest import WindowsLabGuest

    user = os.environ.get("HIL_WINDOWS_USER", "hil")
    password = os.environ.get("HIL_WINDOWS_PASSWORD", "")
    try:
        cfg = request.getfixturevalue("hil_config").windows
        user, password = cfg.winrm_user or user, cfg.winrm_password or password
    except pytest.FixtureLookupError:
        pass
    if not password:
        pytest.skip("no WinRM password configured (HIL_WINDOWS_PASSWORD or [windows] winrm_password)")
    with WindowsLabGuest(windows_image, tmp_path, user=user, password=password,
                         accel=choose_accel(os.environ.get("HIL_ACCEL", "auto"))) as g:
        deploy.require_testsigning(g.transport)
        g.transport.mkdir(r"C:\hil")
        yield g
        assert g.bugcheck() is None, f"the guest bug-checked: {g.bugcheck()}"


def test_real_process_creations_are_reported(windows_guest, win_build, collector):
    t = windows_guest.transport
    # The guest reaches the host's collector through QEMU user networking: 10.0.2.2.
    deploy.install_driver(t, win_build["hilagent.sys"], "hilagent")
    t.run_ps("New-Item -Force -Path HKLM:\\SYSTEM\\CurrentControlSet\\Services\\hilagent\\Parameters|Out-Null;"
             "Set-ItemProperty HKLM:\\SYSTEM\\CurrentControlSet\\Services\\hilagent\\Parameters "
             f"-Name CollectorPort -Type DWord -Value {collector.port};"
             "Set-ItemProperty HKLM:\\SYSTEM\\CurrentControlSet\\Services\\hilagent\\Parameters "
             "-Name CollectorIp -Type DWord -Value 0x0a000202").check()
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


def test_minifilter_port_round_trip(windows_guest, win_build):
    t = windows_guest.transport
    for name in ("hilflt.sys", "hilfltc.exe"):
        t.put(win_build[name], rf"C:\hil\{name}")
    from hil.deploy.windows_build import windows_dir  # the INF ships in the repository

    t.put(windows_dir() / "minifilter" / "hilflt.inf", r"C:\hil\hilflt.inf")
    t.run_cmd(r"RUNDLL32.EXE SETUPAPI.DLL,InstallHinfSection DefaultInstall.NTamd64 132 C:\hil\hilflt.inf").check()
    deploy.fltmc_load(t, "hilflt")
    try:
        r1 = t.run_cmd(r"C:\hil\hilfltc.exe hello").check()
        assert r1.stdout.strip().endswith(b"pong: hello")
        r2 = t.run_cmd(r"C:\hil\hilfltc.exe again").check()
        assert b"reply 1: pong: again" in r2.stdout  # sequence restarts per connection
    finally:
        deploy.fltmc_unload(t, "hilflt")
