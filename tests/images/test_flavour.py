"""Choosing the guest kernel flavour: ``[linux] flavour``, ``--hil-kernel``, a profile's
``flavour`` (``prerelease`` = debug); and what ``hil image`` and ``hil doctor`` say about the
debug kernel."""

from __future__ import annotations

import json
import sys

import pytest

from hil.cli import main
from hil.commands.doctor import debug_kernel_checks
from hil.config import HilConfig, choose_flavour, load_config
from hil.errors import ConfigError
from hil.images import debug_kernel as dk
from hil.images.linux_image import cached_image, image_dir_for
from hil.images.recipe import load_linux_recipe
from hil.qualify.profiles import BUILTIN, resolve


def _config(tmp_path, text):
    (tmp_path / "hil.toml").write_text(text)
    return load_config(tmp_path / "hil.toml")


# ---- the configuration -------------------------------------------------------------------------------


def test_the_default_flavour_is_stock_and_debug_is_accepted(tmp_path):
    assert load_config(start=tmp_path).linux.flavour == "stock"
    assert _config(tmp_path, '[linux]\nflavour = "debug"\n').linux.flavour == "debug"


def test_a_bad_flavour_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        _config(tmp_path, '[linux]\nflavour = "kasan"\n')
    assert "linux.flavour = 'kasan' is not one of stock, debug" in e.value.problem and "\n" not in e.value.problem
    assert "debug" in (e.value.fix or "")


def test_the_debug_flavour_needs_the_embedded_image(tmp_path):
    (tmp_path / "mine.qcow2").write_bytes(b"")
    with pytest.raises(ConfigError, match="linux.flavour = 'debug' is the embedded guest's kernel rebuilt"):
        _config(tmp_path, '[linux]\nimage = "mine.qcow2"\nflavour = "debug"\n')


# ---- option > profile > configuration -------------------------------------------------------------------


def test_the_option_wins_then_the_profile_then_the_configuration():
    cfg = HilConfig()
    assert choose_flavour(cfg, None, BUILTIN["nightly"]) == "stock"
    assert choose_flavour(cfg, None, BUILTIN["prerelease"]) == "debug" and cfg.linux.flavour == "debug"
    assert choose_flavour(HilConfig(), "stock", BUILTIN["prerelease"]) == "stock"
    debug_cfg = HilConfig()
    debug_cfg.linux.flavour = "debug"
    assert choose_flavour(debug_cfg, None, BUILTIN["nightly"]) == "debug"  # nightly does not say
    assert choose_flavour(debug_cfg, "stock", None) == "stock"


def test_prerelease_selects_the_debug_kernel_and_the_others_leave_it_to_the_configuration(tmp_path):
    assert BUILTIN["prerelease"].flavour == "debug"
    assert BUILTIN["nightly"].flavour == "" and BUILTIN["smoke"].flavour == ""
    cfg = _config(tmp_path, '[profiles.mine]\nflavour = "debug"\n[profiles.prerelease]\nflavour = "stock"\n')
    assert resolve("mine", cfg.profiles).flavour == "debug"
    assert resolve("prerelease", cfg.profiles).flavour == "stock"  # a team may say otherwise


def test_a_bad_profile_flavour_names_the_profile(tmp_path):
    with pytest.raises(ConfigError, match="\\[profiles.x\\] flavour = 'kasan' is not one of stock, debug"):
        _config(tmp_path, '[profiles.x]\nflavour = "kasan"\n')


def test_a_profile_flavour_over_a_users_own_image_is_refused(tmp_path):
    (tmp_path / "mine.qcow2").write_bytes(b"")
    cfg = _config(tmp_path, '[linux]\nimage = "mine.qcow2"\n')
    with pytest.raises(ConfigError, match="profile prerelease: flavour = 'debug' is the embedded guest's kernel"):
        choose_flavour(cfg, None, BUILTIN["prerelease"])


INNER = """
import os

def test_flavour(hil_config):
    assert hil_config.linux.flavour == os.environ["EXPECT_FLAVOUR"]
"""


@pytest.mark.parametrize(
    "args, expected",
    [
        ([], "stock"),
        (["--hil-kernel", "debug"], "debug"),
        (["--hil-profile", "prerelease"], "debug"),
        (["--hil-profile", "prerelease", "--hil-kernel", "stock"], "stock"),
    ],
)
def test_the_pytest_option_and_profile_set_the_runs_flavour(pytester, monkeypatch, args, expected):
    pytester.makepyfile(INNER)
    monkeypatch.setenv("EXPECT_FLAVOUR", expected)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)


def test_a_bad_kernel_option_is_refused_by_pytest(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--hil-kernel", "kasan")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--hil-kernel: invalid choice: 'kasan'*"])


# ---- hil image / hil doctor ------------------------------------------------------------------------------


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A cache with the embedded image's manifest and headers (no disk: nothing boots here)."""
    monkeypatch.setenv("HIL_CACHE_DIR", str(tmp_path / "cache"))
    img_dir = image_dir_for(load_linux_recipe())
    generated = img_dir / "kbuild/usr/src/linux-headers-6.1.0-50-cloud-amd64/include/generated"
    generated.mkdir(parents=True)
    (generated / "package.h").write_text('#define LINUX_PACKAGE_ID " Debian 6.1.176-1"\n')
    (img_dir / "vmlinuz").write_bytes(b"")
    manifest = {"kernel_release": "6.1.0-50-cloud-amd64", "cmdline": "root=/dev/vda"}
    (img_dir / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path / "cache"


def _built(plan):
    plan.dir.mkdir(parents=True)
    manifest = {
        "key": plan.key,
        "release": "6.1.176-hil-debug",
        "source_version": plan.source_version,
        "build_s": 1323.7,
        "built_at": "2026-11-27T23:29:08Z",
    }
    (plan.dir / "manifest.json").write_text(json.dumps(manifest))


def test_hil_image_show_tells_the_debug_kernels_state(fake_cache, capsys):
    assert main(["image", "show", "linux"]) == 0
    out = capsys.readouterr().out
    plan = dk.plan_for(cached_image())
    assert f"debug kernel {plan.key}: not built (run `hil image build linux --flavour debug`" in out
    assert "  source linux-source-6.1=6.1.176-1 (the guest kernel 6.1.0-50-cloud-amd64)" in out
    assert main(["image", "show", "linux", "--flavour", "debug"]) == 1  # asked for it: not there
    assert main(["image", "path", "linux", "--flavour", "debug"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == str(plan.dir)

    _built(plan)
    assert main(["image", "show", "linux", "--flavour", "debug"]) == 0
    out = capsys.readouterr().out
    assert "linux image" not in out
    assert (
        f"debug kernel {plan.key}: {plan.dir}\n  release 6.1.176-hil-debug (source linux-source-6.1=6.1.176-1)" in out
    )
    assert "\n  built 2026-11-27T23:29:08Z in 22.1 min\n" in out
    assert f"  kbuild {plan.dir}/kbuild/linux-headers-6.1.176-hil-debug" in out
    assert f"  modules {plan.dir}/lib/modules/6.1.176-hil-debug" in out


def test_hil_doctor_has_a_line_for_the_debug_kernel_and_its_build_deps(fake_cache, monkeypatch):
    img = cached_image()
    plan = dk.plan_for(img)
    kernel, deps = debug_kernel_checks(img, HilConfig())
    assert (kernel.name, kernel.ok, kernel.required) == ("debug kernel", False, False)
    assert kernel.fix == "hil image build linux --flavour debug" and plan.pin in kernel.detail
    monkeypatch.setattr(dk, "missing_build_packages", lambda: ["flex", "libelf-dev"])
    cfg = HilConfig()
    cfg.linux.flavour = "debug"
    kernel, deps = debug_kernel_checks(img, cfg)
    assert kernel.required and deps.required and not deps.ok
    assert deps.detail == "missing flex, libelf-dev" and deps.fix == "apt-get install -y flex libelf-dev"
    _built(plan)
    kernel, deps = debug_kernel_checks(img, cfg)
    assert kernel.ok and kernel.detail == f"6.1.176-hil-debug in {plan.dir}" and not deps.required
    assert debug_kernel_checks(None, None)[0].detail == "needs the linux image first (hil image build linux)"


def test_hil_image_build_takes_the_flavour():
    from hil.cli import build_parser

    args = build_parser().parse_args(["image", "build", "linux", "--flavour", "debug", "--rebuild"])
    assert (args.flavour, args.rebuild) == ("debug", True)
    assert sys.modules["hil.commands.image"].run is args._run
