"""The agent's portable helpers (own SHA-256, UTF-16 -> UTF-8) compiled for the host and
checked against Python's implementations."""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess

import pytest

from hil.deploy.windows_build import windows_dir

pytestmark = pytest.mark.windows

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "hilutil.h"
/* stdin: u8 op, u32 len, payload.  op 1: sha256 -> 32 bytes; op 2: utf16->utf8 (u32 cap first) */
static unsigned char buf[1 << 22], out[1 << 22];
int main(void) {
    unsigned char op; unsigned int len, cap;
    while (fread(&op, 1, 1, stdin) == 1) {
        if (fread(&len, 4, 1, stdin) != 1) return 2;
        if (op == 2 && fread(&cap, 4, 1, stdin) != 1) return 2;
        if (len > sizeof(buf) || fread(buf, 1, len, stdin) != len) return 2;
        if (op == 1) {
            hil_sha256 c; unsigned char d[32]; size_t i, step = len % 7 + 1;
            hil_sha256_init(&c);
            for (i = 0; i < len; i += step) hil_sha256_update(&c, buf + i, len - i < step ? len - i : step);
            hil_sha256_final(&c, d); fwrite(d, 1, 32, stdout);
        } else {
            unsigned int n = (unsigned int)hil_utf16_to_utf8((const uint16_t *)buf, len / 2, out, cap);
            fwrite(&n, 4, 1, stdout); fwrite(out, 1, n, stdout);
        }
        fflush(stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def util(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no host C compiler")
    d = tmp_path_factory.mktemp("hilutil")
    (d / "h.c").write_text(HARNESS)
    exe = d / "h"
    agent = windows_dir() / "agent"
    subprocess.run(
        [
            cc,
            "-O2",
            "-Wall",
            "-Werror",
            "-fsanitize=address,undefined",
            f"-I{agent}",
            "-o",
            str(exe),
            str(d / "h.c"),
            str(agent / "hilutil.c"),
        ],
        check=True,
    )

    def call(op: int, payload: bytes, cap: int | None = None) -> bytes:
        inp = struct.pack("<BI", op, len(payload)) + (struct.pack("<I", cap) if op == 2 else b"") + payload
        return subprocess.run([str(exe)], input=inp, capture_output=True, check=True).stdout

    return call


def test_sha256_matches_hashlib(util):
    rng = random.Random(7)
    sizes = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, 65536 + 3, 1 << 20]
    for n in sizes:
        data = rng.randbytes(n)
        assert util(1, data) == hashlib.sha256(data).digest(), n


def _utf8(util, text_or_units, cap: int) -> bytes:
    raw = text_or_units if isinstance(text_or_units, bytes) else text_or_units.encode("utf-16-le")
    out = util(2, raw, cap)
    n = struct.unpack_from("<I", out)[0]
    return out[4 : 4 + n]


def test_utf16_to_utf8_matches_python(util):
    for text in ["", r"\??\C:\Windows\notepad.exe", "dätä 测试 ✓", "emoji 😀 end", "\u0800\uffff"]:
        assert _utf8(util, text, 4096) == text.encode("utf-8")


def test_utf16_to_utf8_truncates_on_character_boundary(util):
    text = "ab测😀"
    full = text.encode("utf-8")  # 1+1+3+4 bytes
    for cap in range(len(full) + 1):
        got = _utf8(util, text, cap)
        assert full.startswith(got) and len(got) <= cap
        got.decode("utf-8")  # never a split character


def test_unpaired_surrogates_become_replacement(util):
    units = struct.pack("<4H", 0x41, 0xD800, 0x42, 0xDC00)
    assert _utf8(util, units, 100) == "A\ufffdB\ufffd".encode("utf-8")
