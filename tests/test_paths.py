"""Finding the team's shared folder wherever the checkout is (CI clones it elsewhere)."""

from hil import paths


def test_env_names_the_shared_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HIL_SHARED_DIR", str(tmp_path))
    assert paths.shared_dir() == tmp_path
    assert paths.linux_crash_corpus() == tmp_path / "testdata" / "crash-logs" / "linux"


def test_without_env_a_candidate_folder_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("HIL_SHARED_DIR", raising=False)
    monkeypatch.setattr(paths, "SHARED_CANDIDATES", (str(tmp_path),))
    assert paths.shared_dir() == tmp_path.resolve()


def test_none_found_gives_a_path_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.delenv("HIL_SHARED_DIR", raising=False)
    monkeypatch.setattr(paths, "SHARED_CANDIDATES", (str(tmp_path / "absent"),))
    assert paths.shared_dir() is None
    assert not paths.linux_crash_corpus().exists()
