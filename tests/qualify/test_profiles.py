"""Profiles: built-in ones, a team's [profiles.NAME], their checks, and the pytest selection."""

from __future__ import annotations

import pytest

from hil.config import load_config
from hil.errors import ConfigError
from hil.paths import bundled
from hil.qualify.profiles import BUILTIN, pytest_selection, resolve


def _config(tmp_path, text):
    (tmp_path / "hil.toml").write_text(text)
    return load_config(tmp_path / "hil.toml")


def test_builtin_profiles_and_the_default():
    assert resolve(None, {}).name == "nightly"
    assert resolve("smoke", {}).markers == "smoke"
    pre, night = BUILTIN["prerelease"], BUILTIN["nightly"]
    assert pre.execs > night.execs and pre.connections > night.connections and pre.soak_s > night.soak_s


def test_a_team_profile_starts_from_the_builtin_of_its_name_or_nightly(tmp_path):
    cfg = _config(
        tmp_path, '[profiles.mine]\npaths = ["tests", "suites:linux"]\nreruns = 3\n[profiles.smoke]\nworkers = 1\n'
    )
    mine, smoke = resolve("mine", cfg.profiles), resolve("smoke", cfg.profiles)
    assert mine.reruns == 3 and mine.execs == BUILTIN["nightly"].execs
    assert smoke.workers == 1 and smoke.markers == "smoke"
    assert pytest_selection(mine)[:2] == ["tests", str(bundled("suites") / "linux")]


@pytest.mark.parametrize(
    "text, problem",
    [
        ('[profiles.x]\nreruns = "2"\n', "reruns in \\[profiles.x\\] must be int, not str"),
        ("[profiles.x]\nexecz = 5\n", "unknown key 'execz' in \\[profiles.x\\]"),
        ('[profiles.x]\npaths = "tests"\n', "paths in \\[profiles.x\\] must be a list of strings"),
        ("[profiles.x]\nreruns = -1\n", "reruns = -1 is negative"),
        ('[profiles.x]\nflavour = "kasan"\n', "flavour = 'kasan' is not one of stock, debug"),
        ("profiles = 3\n", "profiles must be tables"),
    ],
)
def test_a_bad_profile_is_one_line_naming_the_key(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=problem):
        _config(tmp_path, text)


def test_an_unknown_profile_names_the_known_ones():
    with pytest.raises(ConfigError, match="no profile 'nightlyy'") as e:
        resolve("nightlyy", {})
    assert "nightly" in e.value.fix and "smoke" in e.value.fix


def test_no_soak_deselects_the_soak_and_the_environment_overrides(monkeypatch):
    monkeypatch.delenv("HIL_SOAK_S", raising=False)
    assert pytest_selection(BUILTIN["smoke"])[-2:] == ["-m", "(smoke) and not soak"]
    assert "-m" not in pytest_selection(BUILTIN["nightly"])
    monkeypatch.setenv("HIL_SOAK_S", "0")
    assert pytest_selection(BUILTIN["nightly"])[-2:] == ["-m", "not soak"]
    monkeypatch.setenv("HIL_STORM_EXECS", "123")
    assert BUILTIN["nightly"].size("execs") == 123
    monkeypatch.setenv("HIL_STORM_EXECS", "many")
    with pytest.raises(ConfigError, match="HIL_STORM_EXECS='many' is not an integer"):
        BUILTIN["nightly"].size("execs")
