"""The adoption path, as a driver team takes it: the wheel built from this tree, installed into
a fresh venv outside the checkout, the examples copied to folders of their own and run there,
and the qualification suites aimed at a kserver.ko the team built elsewhere.

Nothing here may reach back into the checkout: the nested runs get no PYTHONPATH, run from
temporary folders, and use only the venv's interpreter, so a code path that needs a checkout
fails here first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from hil.deploy import kmod
from hil.deploy.modinfo import read_modinfo
from hil.images.linux_image import cached_image

REPO = Path(__file__).resolve().parents[2]
IMAGE = cached_image()

pytestmark = [
    pytest.mark.hil_linux,
    pytest.mark.skipif(IMAGE is None, reason="the embedded guest image is not built: hil image build linux"),
]


def _env() -> dict[str, str]:
    """This process's environment without anything that points at the checkout or this run."""
    drop = (
        "PYTHONPATH",
        "PYTEST_ADDOPTS",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_CURRENT_TEST",
        "VIRTUAL_ENV",
        "PYTHONHOME",
    )
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(cmd: list, cwd: Path, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _pytest(python: Path, project: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    """A team's pytest run in ``project``.  Its own --basetemp: pytest keeps only the three
    newest numbered temporary folders of a user, so nested runs would delete this run's."""
    return _run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={project / '.tmp'}", *args],
        cwd=project,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip wheel`` of this tree, installed into a fresh venv; returns the venv's python."""
    root = tmp_path_factory.mktemp("adoption")
    dist = root / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO], cwd=root)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("kernel_hil-*.whl")
    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", venv], cwd=root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    got = _run([python, "-m", "pip", "install", "-q", wheel], cwd=root)
    assert got.returncode == 0, got.stderr[-3000:]
    return python


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("reports", "__pycache__", ".pytest_cache"))
    return dest


def _junit(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


def _props(tc: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in tc.iter("property")}


def _outcome(tc: ET.Element) -> str:
    for what in ("failure", "error", "skipped"):
        if tc.find(what) is not None:
            return what
    return "passed"


def test_the_installed_framework_finds_everything_inside_the_venv(installed, tmp_path):
    probe = _run(
        [
            installed,
            "-c",
            "import hil, hil.paths as p; print(hil.__file__); print(*(p.bundled(n) for n in p.BUNDLED), sep='\\n')",
        ],
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.split()
    venv = installed.parent.parent
    assert all(Path(line).is_relative_to(venv) for line in lines), lines
    names = zipfile.ZipFile(next((venv.parent / "dist").glob("*.whl"))).namelist()
    for needed in (
        "hil/guests/linux/recipe.toml",
        "hil/drivers/protocol/hil_proto.c",
        "hil/drivers/linux/kserver/kserver.c",
        "hil/suites/conftest.py",
        "hil/suites/linux/test_kserver.py",
    ):
        assert needed in names
    doctor = _run([installed.parent / "hil", "doctor"], cwd=tmp_path)
    assert "native codec" in doctor.stdout or doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_the_module_example_passes_from_a_copy(installed, tmp_path):
    project = _copy(REPO / "examples" / "out-of-tree-module", tmp_path / "team-module")
    res = _pytest(installed, project, "--junitxml=junit.xml")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    cases = _junit(project / "junit.xml")
    assert len(cases) >= 4 and all(_outcome(tc) == "passed" for tc in cases)
    loaded = _props(cases[0])
    assert Path(loaded["hil_deployed_hello_hil"]).name == "hello_hil.ko"


def test_the_wsk_example_passes_from_a_copy(installed, tmp_path):
    if shutil.which("wine64") is None and shutil.which("wine") is None:
        pytest.skip("Wine is not installed (apt-get install -y wine64 wine)")
    project = _copy(REPO / "examples" / "wsk-driver", tmp_path / "team-wsk")
    res = _pytest(installed, project, "--junitxml=junit.xml")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    cases = _junit(project / "junit.xml")
    assert cases and all(_outcome(tc) == "passed" for tc in cases)


def _team_kserver(folder: Path) -> Path:
    """kserver.ko as a team's own build produces it: its sources in a folder of its own, built
    with make against the guest kernel's headers."""
    assert IMAGE is not None and IMAGE.kbuild_dir is not None  # skipped without the image; it has its headers
    src = _copy(REPO / "drivers" / "linux" / "kserver", folder)
    made = subprocess.run(
        ["make", *kmod.make_arguments(IMAGE.kbuild_dir), f"M={src}", "modules"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    return src / "kserver.ko"


def test_the_kserver_suite_qualifies_a_prebuilt_module(installed, tmp_path):
    ko = _team_kserver(tmp_path / "team-kserver")
    project = tmp_path / "qualify"
    project.mkdir()
    (project / "hil.toml").write_text(f'[drivers]\nkserver = "{ko}"\n')
    res = _pytest(
        installed, project, "--pyargs", "hil.suites", "-k", "kserver", "-m", "not soak", "--junitxml=junit.xml"
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    cases = _junit(project / "junit.xml")
    assert len(cases) >= 7 and all(_outcome(tc) == "passed" for tc in cases)
    sha = hashlib.sha256(ko.read_bytes()).hexdigest()
    for tc in cases:
        props = _props(tc)
        assert props["hil_deployed_kserver"] == str(ko.resolve()), tc.get("name")
        assert props["hil_deployed_kserver_sha256"] == sha
        assert props["hil_deployed_kserver_origin"] == "configured"


def test_a_module_built_for_another_kernel_stops_the_run_in_one_line(installed, tmp_path):
    ko = _team_kserver(tmp_path / "team-kserver")
    release = read_modinfo(ko).kernel_release
    major, rest = release.split(".", 1)
    other = f"{int(major) + 1}.{rest}"
    ko.write_bytes(ko.read_bytes().replace(f"vermagic={release}".encode(), f"vermagic={other}".encode()))
    project = tmp_path / "qualify"
    project.mkdir()
    (project / "hil.toml").write_text(f'[drivers]\nkserver = "{ko}"\n')
    res = _pytest(installed, project, "--pyargs", "hil.suites", "-k", "kserver and allow_list", timeout=600)
    assert res.returncode != 0
    line = f"drivers.kserver = '{ko}' was built for kernel {other}, but the guest runs {release}"
    assert line in res.stdout, res.stdout[-3000:]
    assert "fix: rebuild it against the guest's headers" in res.stdout
