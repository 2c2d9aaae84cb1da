"""pecheck rejects what Windows would refuse to load."""

from __future__ import annotations

import shutil

import pytest

from hil.deploy import pecheck

pytestmark = pytest.mark.windows


def test_user_mode_program_is_not_a_driver(win_build):
    r = pecheck.check_driver(win_build["hilsvc.exe"])
    assert not r.ok
    text = "; ".join(r.problems)
    assert "subsystem is 3" in text
    assert "non-kernel modules" in text and "KERNEL32.dll".lower() in text.lower()
    with pytest.raises(pecheck.PeCheckError):
        r.raise_for_problems()


def test_bad_checksum_is_detected_and_fixed(win_build, tmp_path):
    copy = tmp_path / "x.sys"
    shutil.copy(win_build["hilsocks.sys"], copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF  # change the image: the stored checksum no longer matches
    copy.write_bytes(bytes(data))
    r = pecheck.check_driver(copy)
    assert any("checksum" in p for p in r.problems)
    pecheck.write_checksum(copy)
    assert pecheck.check_driver(copy).ok


def test_cli_reports_each_file(win_build, capsys):
    rc = pecheck.main([str(win_build["hilsocks.sys"]), str(win_build["hilsvc.exe"])])
    out = capsys.readouterr().out
    assert rc == 1
    assert "hilsocks.sys: subsystem=1" in out and " ok" in out.splitlines()[0]
    assert "FAIL" in out.splitlines()[1]
