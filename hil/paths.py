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


BUNDLED = ("drivers", "guests", "suites")
"""The repository's top-level folders the framework needs at run time.  The wheel maps each into
the package (``hil/drivers``, ``hil/guests``, ``hil/suites``: see setup.py); in a source
checkout (an editable install) they stand beside ``hil/``."""

_PACKAGE = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    """Where the bundled folder ``name`` (one of :data:`BUNDLED`) is: inside the installed
    package, else beside it in a source checkout.  The one place that knows both layouts."""
    if name not in BUNDLED:
        raise ValueError(f"{name!r} is not one of the bundled folders {BUNDLED}")
    inside = _PACKAGE / name
    return inside if inside.is_dir() else _PACKAGE.parent / name


def shared_dir() -> Path:
    """The team's shared folder (seeds, test data): ``HIL_SHARED_DIR``, else ``shared`` beside
    the source checkout (which may not exist: callers check)."""
    if env := os.environ.get("HIL_SHARED_DIR"):
        return Path(env)
    return _PACKAGE.parent.parent / "shared"


def linux_crash_corpus() -> Path:
    """The corpus of real Linux console logs (a path that may not exist)."""
    return shared_dir() / "testdata" / "crash-logs" / "linux"


CORPUS_HINT = "set HIL_SHARED_DIR to the folder that holds testdata/crash-logs/linux"
