"""Where kernel-hil keeps things outside the repository.

QEMU runs as the ``libvirt-qemu`` user, so every file it opens (kernels, images, overlays)
must sit in a directory that user can traverse.  ``/root`` is not such a directory, so when
running as root the default cache is ``/var/cache/kernel-hil``; otherwise the XDG cache.
``HIL_CACHE_DIR`` overrides both.

Test data that is not ours to commit (the crash corpus of real console logs) lives in the
team's shared folder; ``shared_dir()`` finds it wherever the checkout is.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if env := os.environ.get("HIL_CACHE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/kernel-hil")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kernel-hil"


def ensure_dir(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` (and parents) readable and traversable by the QEMU user."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def images_dir() -> Path:
    return ensure_dir(cache_root() / "images")


def runtime_dir() -> Path:
    """Per-session overlays, save files and console logs live below this."""
    return ensure_dir(cache_root() / "run")


def project_root() -> Path:
    """The checkout this package was imported from (recipes live in ``guests/``)."""
    return Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The team's shared folder (seeds, test data): ``HIL_SHARED_DIR``, else ``shared`` beside
    the checkout (which may not exist: callers check)."""
    if env := os.environ.get("HIL_SHARED_DIR"):
        return Path(env)
    return project_root().parent / "shared"


def linux_crash_corpus() -> Path:
    """The corpus of real Linux console logs (a path that may not exist)."""
    return shared_dir() / "testdata" / "crash-logs" / "linux"


CORPUS_HINT = "set HIL_SHARED_DIR to the folder that holds testdata/crash-logs/linux"
