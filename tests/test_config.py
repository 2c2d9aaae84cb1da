"""Configuration errors name the key, the file and the fix."""

from __future__ import annotations

import pytest

from hil.config import load_config
from hil.errors import ConfigError


def write(tmp_path, text, name="hil.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_without_a_file(tmp_path):
    cfg = load_config(start=tmp_path)
    assert cfg.accel == "auto" and cfg.linux.image == "embedded" and cfg.linux.snapshot


def test_unknown_key_names_the_key_and_the_known_ones(tmp_path):
    p = write(tmp_path, "[linux]\nmemory = 512\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "unknown key 'memory' in [linux]" in str(e.value)
    assert "memory_mib" in e.value.fix and str(p) in str(e.value)


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match="vcpus in \\[linux\\] must be int, not str"):
        load_config(write(tmp_path, '[linux]\nvcpus = "two"\n'))


def test_missing_image_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="linux.image = .*nope.qcow2.* does not exist"):
        load_config(write(tmp_path, '[linux]\nimage = "nope.qcow2"\n'))


def test_bad_accel(tmp_path):
    with pytest.raises(ConfigError, match="accel = 'fast'"):
        load_config(write(tmp_path, 'accel = "fast"\n'))


def test_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "accel = \n"))


def test_pyproject_tool_table_found_upward(tmp_path):
    write(tmp_path, '[project]\nname = "x"\n[tool.hil]\naccel = "tcg"\n[tool.hil.linux]\nvcpus = 1\n', "pyproject.toml")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    cfg = load_config(start=sub)
    assert cfg.accel == "tcg" and cfg.linux.vcpus == 1


def test_relative_image_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "img.qcow2").write_bytes(b"")
    cfg = load_config(write(tmp_path, '[linux]\nimage = "img.qcow2"\n'))
    assert cfg.linux.image == str(tmp_path / "img.qcow2")


def test_pytest_reports_a_bad_config_in_one_line(pytester):
    pytester.makefile(".toml", hil="[linux]\nbogus = 1\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--hil-config", "hil.toml")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*kernel-hil configuration:*unknown key 'bogus' in [[]linux]*"])
    assert "Traceback" not in result.stderr.str()
