"""WinRMTransport (pywinrm) against the fake WS-Man server on 127.0.0.1: the SOAP exchange
(create shell, command, receive, signal, delete) and the chunked file copy, at protocol level."""

from __future__ import annotations

import os

import pytest
from fake_wsman import FakeWindowsHost, FakeWsman

from hil.errors import GuestError
from hil.windows import deploy
from hil.windows.winrm import WinRMTransport

pytestmark = pytest.mark.windows


@pytest.fixture
def fake_windows():
    host = FakeWindowsHost()
    with FakeWsman(host) as srv:
        yield srv, host


@pytest.fixture
def winrm(fake_windows):
    srv, _ = fake_windows
    t = WinRMTransport("127.0.0.1", srv.port, srv.user, srv.password, transport="basic", chunk_size=1000)
    yield t
    t.close()


def test_run_cmd_round_trip_reuses_one_shell(winrm, fake_windows):
    srv, host = fake_windows
    r1 = winrm.run_cmd("echo hello")
    r2 = winrm.run("echo again")
    assert (r1.exit_code, r1.stdout) == (0, b"hello\r\n")
    assert r2.stdout == b"again\r\n"
    winrm.close()
    assert srv.actions.count("Create") == 1  # one shell for both commands
    assert srv.actions.count("Command") == 2 and srv.actions.count("Signal") == 2
    assert srv.actions[-1] == "Delete" and not srv.shells


def test_exit_code_and_stderr_are_reported(winrm):
    r = winrm.run_cmd("nosuchtool /x")
    assert r.exit_code == 9009 and b"not recognized" in r.stderr
    with pytest.raises(GuestError):
        r.check()


def test_wrong_password_is_refused(fake_windows):
    srv, _ = fake_windows
    t = WinRMTransport("127.0.0.1", srv.port, srv.user, "wrong", transport="basic")
    with pytest.raises(Exception) as exc:
        t.run_cmd("echo x")
    assert "401" in str(exc.value) or "credentials" in str(exc.value).lower()


def test_powershell_goes_encoded(winrm, fake_windows):
    _, host = fake_windows
    r = winrm.run_ps("New-Item -ItemType Directory -Force -Path 'C:\\hil'|Out-Null")
    assert r.exit_code == 0
    assert host.ps_scripts == ["New-Item -ItemType Directory -Force -Path 'C:\\hil'|Out-Null"]


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 25_000])
def test_put_and_get_in_chunks(winrm, fake_windows, tmp_path, size):
    _, host = fake_windows
    data = os.urandom(size)
    src = tmp_path / "in.bin"
    src.write_bytes(data)
    winrm.put(src, r"C:\hil\it's.sys")
    assert host.files[r"c:\hil\it's.sys"] == data
    assert not any(k.endswith(".hilpart") for k in host.files)
    appends = [s for s in host.ps_scripts if ".hilpart';$b=" in s]
    assert len(appends) == max(1, -(-size // 1000))
    out = tmp_path / "out.bin"
    winrm.get(r"C:\hil\it's.sys", out)
    assert out.read_bytes() == data


def test_corrupted_upload_is_not_committed(winrm, fake_windows, monkeypatch):
    _, host = fake_windows
    real = host.powershell

    def corrupt(script):
        res = real(script)
        for k in host.files:
            if k.endswith(".hilpart"):
                host.files[k] = host.files[k][:-1] + b"X"
        return res

    monkeypatch.setattr(host, "powershell", corrupt)
    with pytest.raises(GuestError, match="hash mismatch"):
        winrm.write_file(r"C:\hil\x.sys", b"driver bytes")
    assert r"c:\hil\x.sys" not in host.files


def test_deploy_helpers_drive_sc_fltmc_verifier(winrm, fake_windows, tmp_path):
    _, host = fake_windows
    sys_file = tmp_path / "hilagent.sys"
    sys_file.write_bytes(b"MZ fake driver")
    deploy.require_testsigning(winrm)
    remote = deploy.install_driver(winrm, sys_file, "hilagent")
    assert host.files[remote.lower()] == b"MZ fake driver"
    assert (
        'sc create hilagent type= kernel start= demand error= normal binPath= "C:\\Windows\\System32\\drivers\\hilagent.sys"'
        in host.cmd_lines
    )
    deploy.start_driver(winrm, "hilagent")
    assert deploy.service_state(winrm, "hilagent") == "RUNNING"
    deploy.stop_driver(winrm, "hilagent")
    deploy.delete_driver(winrm, "hilagent")
    assert "hilagent" not in host.services

    assert deploy.enable_verifier(winrm, "hilagent.sys") is True
    assert "verifier /standard /driver hilagent.sys" in host.cmd_lines
    assert deploy.verified_drivers(winrm) == ["hilagent.sys"]
    deploy.reset_verifier(winrm)
    assert deploy.verified_drivers(winrm) == []

    deploy.fltmc_load(winrm, "hilflt")
    deploy.fltmc_unload(winrm, "hilflt")
    with pytest.raises(GuestError, match="fltmc unload"):
        deploy.fltmc_unload(winrm, "hilflt")


def test_testsigning_off_is_a_clear_error(winrm, fake_windows):
    _, host = fake_windows
    host.testsigning = False
    with pytest.raises(GuestError, match="test signing is off"):
        deploy.require_testsigning(winrm)


def test_service_names_are_validated(winrm):
    with pytest.raises(GuestError, match="invalid service name"):
        deploy.start_driver(winrm, "x & del c:\\")


def test_output_spread_over_several_receives():
    host = FakeWindowsHost()
    with FakeWsman(host, receives_per_command=4) as srv:
        with WinRMTransport("127.0.0.1", srv.port, srv.user, srv.password, transport="basic") as t:
            r = t.run_cmd("echo " + "x" * 100)
            assert r.exit_code == 0 and r.stdout == b"x" * 100 + b"\r\n"
        assert srv.actions.count("Receive") == 4


def test_a_hung_command_times_out_and_is_terminated(winrm, fake_windows):
    srv, _ = fake_windows
    with pytest.raises(GuestError, match="did not finish within 0.5 s"):
        winrm.run("hang", timeout=0.5)
    assert srv.actions[-1] == "Signal"  # the command was told to terminate
    assert winrm.run("echo still usable").stdout == b"still usable\r\n"


def test_spawn_returns_a_handle_whose_wait_gives_the_exit_code(winrm, fake_windows):
    _, host = fake_windows
    job = winrm.spawn("sc query nosuch")
    assert job.pid > 0 and job.command == "sc query nosuch"
    assert job.wait(timeout=10) == 1060  # the code the command itself exited with
    assert host.spawned == ["sc query nosuch"]
    assert winrm.spawn("echo hi").wait(timeout=10) == 0


def test_the_windows_lab_guests_deployer_over_winrm(winrm, fake_windows, tmp_path):
    """The one deployer interface on the lab kind: install (copy, service, REG_DWORD settings),
    start, is_loaded, stop, remove; a minifilter goes through fltmc."""
    from hil.guest import windows_lab
    from hil.guest.state import GuestState
    from hil.provision.spec import GuestSpec

    _, host = fake_windows
    spec = GuestSpec(
        name="hil-s-main-1",
        os="windows",
        disk=tmp_path / "w.qcow2",
        console_log=tmp_path / "w.log",
        forwards=[(winrm.port, windows_lab.WINRM_GUEST_PORT)],
    )
    g = windows_lab.WindowsLabGuest(None, spec, user="hil", password="x")
    g.winrm = g.transport = winrm  # the fake's endpoint instead of a booted domain's
    g._set_state(GuestState.BOOTED)
    g._set_state(GuestState.READY)
    sys_file = tmp_path / "hilagent.sys"
    sys_file.write_bytes(b"MZ fake driver")

    g.deployer.install(sys_file, "hilagent", CollectorPort=7000)
    assert host.registry[r"HKLM\SYSTEM\CurrentControlSet\Services\hilagent\Parameters"] == {"CollectorPort": "7000"}
    g.deployer.start("hilagent")
    assert g.deployer.is_loaded("hilagent")
    g.deployer.stop("hilagent")
    assert not g.deployer.is_loaded("hilagent")
    g.deployer.remove("hilagent")
    assert "hilagent" not in host.services

    g.deployer.install(sys_file, "hilflt", file_system=True)
    g.deployer.start("hilflt")
    assert "fltmc load hilflt" in host.cmd_lines
    with pytest.raises(GuestError, match="not a number"):
        g.deployer.install(sys_file, "hilx", Port="many")
