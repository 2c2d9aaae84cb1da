"""WineGuest pieces that need no driver: DbgPrint parsing, path mapping, prefix clones."""

from __future__ import annotations

import os
import shutil

import pytest

from hil.errors import GuestError
from hil.wine.guest import WineGuest

pytestmark = [pytest.mark.windows, pytest.mark.wine]


def test_dbgprint_lines_are_extracted(tmp_path):
    g = WineGuest(tmp_path)
    g.debug_log.write_text(
        "0120:warn:debugstr:vDbgPrintExWithPrefix 0000004d:00000001: [hilsocks] listening on 127.0.0.1:5\n"
        "0124:fixme:ntoskrnl:something unrelated\n"
        '0128:warn:debugstr:OutputDebugStringA "plain"\n'
    )
    texts = [dl.text for dl in g.dbgprint_lines()]
    assert texts[0] == "[hilsocks] listening on 127.0.0.1:5"
    assert len(texts) == 2
    assert g.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)", timeout=1).group(1) == "5"
    with pytest.raises(GuestError, match="no DbgPrint line"):
        g.wait_for_log("never", timeout=0.2)


def test_unix_path_mapping_is_confined(tmp_path):
    g = WineGuest(tmp_path)
    assert g.unix_path(r"C:\hil\x.sys") == g.prefix / "drive_c" / "hil" / "x.sys"
    for bad in (r"D:\x", r"C:\..\..\etc\passwd", "relative\\x"):
        with pytest.raises(GuestError):
            g.unix_path(bad)


@pytest.mark.skipif(not (shutil.which("wine") or shutil.which("wine64")), reason="Wine is not installed")
def test_clone_shares_dlls_and_put_never_touches_the_template(tmp_path):
    from hil.wine import prefix

    template = prefix.ensure_template()
    g = WineGuest(tmp_path)
    try:
        g.boot()
        dll = r"C:\windows\system32\kernel32.dll"
        assert os.stat(g.unix_path(dll)).st_ino == os.stat(template / "drive_c/windows/system32/kernel32.dll").st_ino
        assert os.stat(g.prefix / "system.reg").st_ino != os.stat(template / "system.reg").st_ino
        before = (template / "drive_c/windows/system32/kernel32.dll").read_bytes()
        r = g.run("echo hello from cmd")
        assert r.exit_code == 0 and b"hello from cmd" in r.stdout
        assert g.run("exit /b 3").exit_code == 3
        g.write_file(dll, b"replaced")
        assert g.read_file(dll) == b"replaced"
        assert (template / "drive_c/windows/system32/kernel32.dll").read_bytes() == before
    finally:
        g.destroy()
    assert not g.prefix.exists()


def test_stale_prefixes_of_dead_processes_are_reaped(tmp_path):
    from hil.wine.prefix import reap_stale_prefixes

    dead = tmp_path / "gw0-999999999-abc"  # no such pid
    live = tmp_path / f"main-{os.getpid()}-def"
    other = tmp_path / "unrelated"
    for d in (dead, live, other):
        (d / "drive_c").mkdir(parents=True)
    removed = reap_stale_prefixes(tmp_path)
    assert removed == [dead] and not dead.exists()
    assert live.exists() and other.exists()
