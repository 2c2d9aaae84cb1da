"""WineGuest pieces that need no driver: DbgPrint parsing, path mapping, prefix clones."""

from __future__ import annotations

import os
import shutil

import pytest

from hil.errors import GuestError
from hil.guest.wine import WineGuest
from hil.provision.owner import Owner

pytestmark = [pytest.mark.windows, pytest.mark.wine]


def test_dbgprint_lines_are_extracted(tmp_path):
    g = WineGuest(tmp_path, Owner.current())
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
    g = WineGuest(tmp_path, Owner.current())
    assert g.unix_path(r"C:\hil\x.sys") == g.prefix / "drive_c" / "hil" / "x.sys"
    for bad in (r"D:\x", r"C:\..\..\etc\passwd", "relative\\x"):
        with pytest.raises(GuestError):
            g.unix_path(bad)


@pytest.mark.skipif(not (shutil.which("wine") or shutil.which("wine64")), reason="Wine is not installed")
def test_clone_shares_dlls_and_put_never_touches_the_template(tmp_path):
    from hil.wine import prefix

    template = prefix.ensure_template()
    g = WineGuest(tmp_path, Owner.current())
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


def test_prefixes_of_dead_owners_are_swept_and_live_ones_spared(tmp_path):
    import json

    from hil.provision.sweep import OWNER_FILE, sweep_wine_prefixes

    me = Owner.current().as_dict()
    dead = tmp_path / "hil-dead-gw0-wine-1"
    live = tmp_path / "hil-live-main-wine-2"
    cloning = tmp_path / "hil-new-main-wine-3"  # no owner record yet: a clone in progress
    for d in (dead, live, cloning):
        (d / "drive_c").mkdir(parents=True)
    (dead / OWNER_FILE).write_text(json.dumps({**me, "pid": "999999999"}))
    (live / OWNER_FILE).write_text(json.dumps(me))
    assert sweep_wine_prefixes(tmp_path) == [str(dead)]
    assert not dead.exists() and live.exists() and cloning.exists()
