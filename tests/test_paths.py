"""Finding the team's shared folder: HIL_SHARED_DIR, else beside the checkout."""

from pathlib import Path

import pytest

from hil import paths


def test_env_names_the_shared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_SHARED_DIR", str(tmp_path))
    assert paths.shared_dir() == tmp_path
    assert paths.linux_crash_corpus() == tmp_path / "testdata" / "crash-logs" / "linux"


def test_without_env_the_folder_beside_the_checkout_is_used(monkeypatch):
    monkeypatch.delenv("HIL_SHARED_DIR", raising=False)
    assert paths.shared_dir() == Path(paths.__file__).resolve().parent.parent.parent / "shared"


def test_a_missing_folder_gives_a_path_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_SHARED_DIR", str(tmp_path / "absent"))
    assert not paths.linux_crash_corpus().exists()


@pytest.mark.parametrize("name", paths.BUNDLED)
def test_bundled_folders_are_found_whatever_the_layout(name):
    """In a checkout they stand beside hil/, in a wheel inside it; either way they exist."""
    found = paths.bundled(name)
    assert found.is_dir() and found.name == name


def test_an_unknown_bundled_folder_is_refused():
    with pytest.raises(ValueError, match="not one of the bundled folders"):
        paths.bundled("tests")
