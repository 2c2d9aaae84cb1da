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


def _failing_wine(folder, real: str, say: str, times: int):
    """A ``wine`` whose first ``times`` calls with ``wineboot`` fail as the flake did (exit 1,
    saying ``say``); every other call is the real Wine."""
    count = folder / "wineboot-calls"
    script = folder / "wine"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = wineboot ]; then\n'
        f"  echo x >> {count}\n"
        f'  if [ "$(wc -l < {count})" -le {times} ]; then echo "{say}" >&2; exit 1; fi\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_a_failed_wineboot_is_retried_once_with_its_reason_logged(tmp_path, monkeypatch, caplog):
    """A prefix whose first ``wineboot`` fails boots on a fresh wineserver, and the log says why."""
    from hil.wine import prefix

    wine = _failing_wine(tmp_path, prefix.wine_binary(), "wine: simulated boot failure", times=1)
    monkeypatch.setattr(prefix, "wine_binary", lambda: str(wine))
    g = WineGuest(tmp_path / "w", Owner.current())
    try:
        with caplog.at_level("WARNING", logger="hil.guest.wine"):
            g.boot()
        assert g.run("echo booted").exit_code == 0
    finally:
        g.destroy()
    said = [r.getMessage() for r in caplog.records if "wineboot exited 1" in r.getMessage()]
    assert len(said) == 1 and "simulated boot failure" in said[0], caplog.text


def test_a_wineboot_that_keeps_failing_names_its_last_words(tmp_path, monkeypatch):
    from hil.wine import prefix

    wine = _failing_wine(tmp_path, prefix.wine_binary(), "wine: could not load kernel32.dll", times=2)
    monkeypatch.setattr(prefix, "wine_binary", lambda: str(wine))
    g = WineGuest(tmp_path / "w", Owner.current())
    try:
        with pytest.raises(GuestError, match=r"wineboot failed twice .*exit 1.*could not load kernel32\.dll"):
            g.boot()
    finally:
        g.destroy()


def test_a_booted_prefix_loads_no_usb_or_hid_bus_driver(tmp_path):
    """Wine's wineusb.sys crashed winedevice.exe during a boot once (a page fault in ntoskrnl):
    a guest here has no USB or HID device, so those bus drivers are never loaded."""
    g = WineGuest(tmp_path, Owner.current())
    try:
        g.boot()
        assert g.run("echo up").exit_code == 0
        log = g.console_text()
    finally:
        g.destroy()
    assert "mountmgr.sys" in log  # the loaddll trace is there: what it lacks is meaningful
    for bus in ("wineusb.sys", "winebus.sys", "winehid.sys"):
        assert f'{bus}" at' not in log, bus
