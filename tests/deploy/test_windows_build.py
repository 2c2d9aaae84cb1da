"""Every Windows target builds with mingw-w64 and every driver passes the PE checks."""

from __future__ import annotations

import pytest

from hil.deploy import pecheck, windows_build

pytestmark = pytest.mark.windows


@pytest.mark.parametrize("name", windows_build.DRIVERS)
def test_driver_is_a_loadable_kernel_image(win_build, name):
    report = pecheck.check_driver(win_build[name]).raise_for_problems()
    assert report.subsystem == pecheck.IMAGE_SUBSYSTEM_NATIVE
    assert "ntoskrnl.exe" in {d.lower() for d in report.imports}
    assert report.checksum_stored == report.checksum_computed != 0


def test_imports_match_what_each_driver_uses(win_build):
    imports = {n: {d.upper() for d in pecheck.inspect(win_build[n]).imports} for n in windows_build.DRIVERS}
    assert imports["hilsocks.sys"] == {"NTOSKRNL.EXE", "NETIO.SYS"}
    assert imports["hilagent.sys"] == {"NTOSKRNL.EXE", "NETIO.SYS"}
    assert imports["hilflt.sys"] == {"NTOSKRNL.EXE", "FLTMGR.SYS"}
    flt = pecheck.inspect(win_build["hilflt.sys"]).imports
    names = {f for d, fs in flt.items() if d.upper() == "FLTMGR.SYS" for f in fs}
    assert {
        "FltRegisterFilter",
        "FltCreateCommunicationPort",
        "FltBuildDefaultSecurityDescriptor",
        "FltFreeSecurityDescriptor",
        "FltCloseCommunicationPort",
        "FltUnregisterFilter",
    } <= names


def test_agent_requests_integrity_checks(win_build):
    # PsSetCreateProcessNotifyRoutineEx refuses images linked without /INTEGRITYCHECK.
    for name in ("hilagent.sys", "hilagent_test.sys"):
        pecheck.check_driver(win_build[name], require_integrity=True).raise_for_problems()


def test_injection_interface_is_compiled_out_of_release(win_build):
    marker = "HilAgentTest".encode("utf-16-le")
    assert marker in win_build["hilagent_test.sys"].read_bytes()
    assert marker not in win_build["hilagent.sys"].read_bytes()
    assert b"TEST BUILD" not in win_build["hilagent.sys"].read_bytes()


def test_user_tools_are_console_programs(win_build):
    for name in ("hilsvc.exe", "hilagentctl.exe", "hilfltc.exe"):
        r = pecheck.inspect(win_build[name])
        assert r.subsystem == 3, name  # IMAGE_SUBSYSTEM_WINDOWS_CUI
    assert "fltlib.dll" in {d.lower() for d in pecheck.inspect(win_build["hilfltc.exe"]).imports}


def test_build_is_cached_by_source_hash(win_build):
    again = windows_build.build_all()
    assert again.cached and again.directory == win_build.directory
    assert windows_build.build_key() == win_build.key
    # outputs live outside the source tree
    assert windows_build.windows_dir() not in win_build.directory.parents
