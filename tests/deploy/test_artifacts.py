"""``[drivers]``: a team's own builds, checked when the configuration loads and against the
guest's kernel, with real modules built against the guest's headers and real mingw drivers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hil.config import load_config
from hil.deploy import artifacts, kmod
from hil.deploy.modinfo import NotAModule, read_modinfo
from hil.errors import ConfigError
from hil.images.linux_image import cached_image

IMAGE = cached_image()
KBUILD = IMAGE.kbuild_dir if IMAGE is not None else None
pytestmark = pytest.mark.skipif(KBUILD is None, reason="the embedded guest image is not built: hil image build linux")

MODULE_C = r"""
#include <linux/module.h>
static int __init m_init(void) { return 0; }
static void __exit m_exit(void) { }
module_init(m_init);
module_exit(m_exit);
MODULE_LICENSE("GPL");
"""


def _module(tmp_path: Path, name: str) -> Path:
    """A real module called ``name`` built against the guest's headers, copied out of the cache."""
    assert KBUILD is not None  # the module is skipped without the image
    src = tmp_path / f"src-{name}"
    src.mkdir()
    (src / f"{name}.c").write_text(MODULE_C)
    (src / "Kbuild").write_text(f"obj-m := {name}.o\n")
    out = tmp_path / "build" / f"{name}.ko"
    out.parent.mkdir(exist_ok=True)
    shutil.copyfile(kmod.build_module(src, KBUILD), out)
    return out


def _config(tmp_path: Path, drivers: str):
    p = tmp_path / "hil.toml"
    p.write_text("[drivers]\n" + drivers)
    return load_config(p)


def test_a_team_module_is_read_and_accepted(tmp_path):
    ko = _module(tmp_path, "kserver")
    info = read_modinfo(ko)
    assert info.name == "kserver"
    assert info.kernel_release == kmod.kernel_release(KBUILD)
    cfg = _config(tmp_path, 'kserver = "build/kserver.ko"\n')  # relative to hil.toml
    assert cfg.drivers.kserver == str(ko)
    artifacts.check_kernel(cfg.drivers, kmod.kernel_release(KBUILD), cfg.source, KBUILD)
    deployed = artifacts.resolve(cfg.drivers, "kserver", reference=lambda: pytest.fail("built the reference"))
    assert deployed.origin == "configured" and deployed.path == ko and len(deployed.sha256) == 64
    assert ("hil_deployed_kserver", str(ko)) in deployed.properties()


def test_unset_means_the_reference_build(tmp_path):
    cfg = _config(tmp_path, "")
    ref = _module(tmp_path, "kserver")
    deployed = artifacts.resolve(cfg.drivers, "kserver", reference=lambda: ref)
    assert deployed.origin == "reference" and deployed.path == ref


def test_a_module_built_for_another_kernel_gives_one_clear_line(tmp_path):
    ko = _module(tmp_path, "kserver")
    release = read_modinfo(ko).kernel_release
    other = release.replace(release.split(".")[0], str(int(release.split(".")[0]) + 1), 1)
    data = ko.read_bytes()
    assert data.count(f"vermagic={release}".encode()) == 1
    ko.write_bytes(data.replace(f"vermagic={release}".encode(), f"vermagic={other}".encode()))
    cfg = _config(tmp_path, f'kserver = "{ko}"\n')  # loads: nothing yet says which kernel runs
    with pytest.raises(ConfigError) as e:
        artifacts.check_kernel(cfg.drivers, release, cfg.source, KBUILD)
    assert e.value.problem == (
        f"{cfg.source}: drivers.kserver = '{ko}' was built for kernel {other}, but the guest runs {release}"
    )
    assert "\n" not in e.value.problem and "make -C" in e.value.fix


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "does not exist"),
        (b"not an elf\n", "is not an ELF file"),
        (b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00" + b"\0" * 100, "not a relocatable kernel module"),
    ],
)
def test_a_file_that_is_no_module_is_refused_at_load(tmp_path, content, problem):
    ko = tmp_path / "kserver.ko"
    if content is not None:
        ko.write_bytes(content)
    with pytest.raises(ConfigError, match=f"drivers.kserver = .*{problem}"):
        _config(tmp_path, f'kserver = "{ko}"\n')


def test_a_module_of_another_name_is_refused(tmp_path):
    ko = _module(tmp_path, "mydriver")
    with pytest.raises(ConfigError, match="is module 'mydriver', but the kserver suites drive 'kserver'"):
        _config(tmp_path, f'linux_agent = "{ko}"\n'.replace("linux_agent", "kserver"))


def test_windows_roles_need_a_native_pe_and_a_minifilter_its_inf(tmp_path):
    from hil.deploy import windows_build

    if shutil.which(windows_build.CC) is None:
        pytest.skip(f"mingw-w64 is not installed (apt-get install -y {windows_build.APT_PACKAGES})")
    build = windows_build.build_all()
    agent = shutil.copy(build["hilagent.sys"], tmp_path / "hilagent.sys")
    cfg = _config(tmp_path, f'windows_agent = "{agent}"\n')
    assert cfg.drivers.windows_agent == str(agent)
    with pytest.raises(ConfigError, match="drivers.windows_agent = .*hilsvc.exe"):
        _config(tmp_path, f'windows_agent = "{build["hilsvc.exe"]}"\n')
    ko = _module(tmp_path, "hilflt")
    with pytest.raises(ConfigError, match="drivers.minifilter = .*not a PE image"):
        _config(tmp_path, f'minifilter = "{ko}"\n')
    flt = Path(shutil.copy(build["hilflt.sys"], tmp_path / "hilflt.sys"))
    with pytest.raises(ConfigError, match="has no hilflt.inf beside it"):
        _config(tmp_path, f'minifilter = "{flt}"\n')
    flt.with_suffix(".inf").write_text("; the INF\n")
    assert _config(tmp_path, f'minifilter = "{flt}"\n').drivers.minifilter == str(flt)


def test_read_modinfo_names_a_damaged_file(tmp_path):
    ko = _module(tmp_path, "kserver")
    ko.write_bytes(ko.read_bytes()[:200])
    with pytest.raises(NotAModule, match="damaged ELF file|no .modinfo"):
        read_modinfo(ko)


def test_doctor_names_what_each_role_deploys_and_a_kernel_mismatch(tmp_path):
    from hil.commands.doctor import driver_checks

    ko = _module(tmp_path, "kserver")
    release = read_modinfo(ko).kernel_release
    cfg = _config(tmp_path, f'kserver = "{ko}"\n')
    rows = {c.name: c for c in driver_checks(cfg, release)}
    assert rows["drivers.kserver"].ok and str(ko) in rows["drivers.kserver"].detail
    assert rows["drivers.linux_agent"].detail.startswith("the reference build")
    bad = driver_checks(cfg, "9.9.9-other")[0]
    assert not bad.ok and f"was built for kernel {release}, but the guest runs 9.9.9-other" in bad.detail
