"""Finding the team's shared folder: HIL_SHARED_DIR, else beside the checkout."""

from hil import paths


def test_env_names_the_shared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_SHARED_DIR", str(tmp_path))
    assert paths.shared_dir() == tmp_path
    assert paths.linux_crash_corpus() == tmp_path / "testdata" / "crash-logs" / "linux"


def test_without_env_the_folder_beside_the_checkout_is_used(monkeypatch):
    monkeypatch.delenv("HIL_SHARED_DIR", raising=False)
    assert paths.shared_dir() == paths.project_root().parent / "shared"


def test_a_missing_folder_gives_a_path_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_SHARED_DIR", str(tmp_path / "absent"))
    assert not paths.linux_crash_corpus().exists()
