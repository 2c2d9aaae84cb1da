"""Where kernel-hil keeps things outside the repository.

QEMU runs as the ``libvirt-qemu`` user, so every file it opens (kernels, images, overlays)
must sit in a directory that user can traverse.  ``/root`` is not such a directory, so when
running as root the default cache is ``/var/cache/kernel-hil``; otherwise the XDG cache.
``HIL_CACHE_DIR`` overrides both.
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
