"""What the wheel holds: the modules of ``hil/`` and the bundled folders, never this repository's
own tests or test doubles.  The wheel is built the way test_wheel.py builds it (``pip wheel`` of
this tree), but only listed: a few seconds, no guest, no venv.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from hil.paths import BUNDLED

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    dist = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = dist.glob("kernel_hil-*.whl")
    with zipfile.ZipFile(path) as whl:
        yield whl


def _files(wheel: zipfile.ZipFile) -> list[str]:
    return [n for n in wheel.namelist() if not n.endswith("/") and ".dist-info/" not in n]


def test_no_test_double_is_shipped(wheel):
    fakes = [n for n in _files(wheel) if PurePosixPath(n).name.lower().startswith("fake")]
    assert fakes == []


def test_no_file_of_the_projects_tests_is_shipped(wheel):
    ours = {}
    for p in (REPO / "tests").rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts and p.stat().st_size:
            ours[hashlib.sha256(p.read_bytes()).hexdigest()] = p.relative_to(REPO)
    shipped = {n: ours[h] for n in _files(wheel) if (h := hashlib.sha256(wheel.read(n)).hexdigest()) in ours}
    assert shipped == {}
    assert not [n for n in _files(wheel) if n.split("/")[0] == "tests"]


def test_every_module_shipped_is_one_of_the_trees(wheel):
    """A module moved out of hil/ must not live on in the wheel (a stale build/ folder would
    keep it: setup.py clears it)."""
    bundled = tuple(f"hil/{name}/" for name in BUNDLED)
    modules = [n for n in _files(wheel) if n.startswith("hil/") and not n.startswith(bundled)]
    assert "hil/deploy/kmod.py" in modules
    assert [n for n in modules if not (REPO / n).is_file()] == []
