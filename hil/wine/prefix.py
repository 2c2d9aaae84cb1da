"""Wine prefixes: one booted template per Wine version, cheap clones per test.

``wineboot -i`` costs about 17 s and 700 MB here, so it runs once per Wine version into
``<cache>/wine/template-<version>/`` (guarded by a file lock so xdist workers share it).  A
guest's prefix is a clone: regular files under ``drive_c/windows`` are hard links to the
template (Wine never rewrites those DLLs in place, and :meth:`WineGuest.put` always replaces
files instead of writing into them), everything else (registry hives, user profile, ini files)
is copied.  A clone takes well under a second.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from hil.errors import EnvironmentProblem
from hil.paths import cache_root
from hil.steps import step

APT_PACKAGES = "wine64 (and wine for the 'wine' launcher)"
_COPY_SUFFIXES = {".reg", ".ini", ".log", ".dat", ".txt", ".inf"}


def wine_binary() -> str:
    for name in ("wine", "wine64"):
        path = shutil.which(name)
        if path:
            return path
    raise EnvironmentProblem("Wine is not installed", "apt-get install -y wine64 wine")


def wineserver_binary() -> str:
    for cand in (shutil.which("wineserver"), "/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise EnvironmentProblem("wineserver is not installed", "apt-get install -y wine64 wine")


def wine_version() -> str:
    out = subprocess.run([wine_binary(), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or "unknown"


def base_env(prefix: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINE")}
    env.update(
        WINEPREFIX=str(prefix),
        WINEARCH="win64",
        # No Mono/Gecko installer dialogs, no display needed.  Wine's own USB and HID bus
        # drivers stay unloaded: a guest here has no such devices, and wineusb.sys once
        # crashed winedevice.exe during a prefix boot (a page fault in ntoskrnl, in 1 of
        # about 300 suite boots), failing a test before its driver was even installed.
        WINEDLLOVERRIDES="mscoree,mshtml=;wineusb.sys,winebus.sys,winehid.sys=d",
        WINEDEBUG="-all",
    )
    env.pop("DISPLAY", None)
    return env


def kill_prefix(prefix: Path, timeout: float = 30.0) -> None:
    """``wineserver -k`` then wait for it to exit (``-w``)."""
    env = base_env(prefix)
    ws = wineserver_binary()
    subprocess.run([ws, "-k"], env=env, capture_output=True, timeout=timeout)
    subprocess.run([ws, "-w"], env=env, capture_output=True, timeout=timeout)


def run_dir() -> Path:
    """Where per-test prefixes live: beside the templates (hard links need one filesystem)."""
    return cache_root() / "wine" / "run"


def template_dir() -> Path:
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in wine_version())
    return cache_root() / "wine" / f"template-{safe}"


def ensure_template() -> Path:
    """The booted template prefix for this Wine version (created on first use)."""
    tdir = template_dir()
    ready = tdir / ".hil-ready"
    if ready.is_file():
        return tdir
    tdir.parent.mkdir(parents=True, exist_ok=True)
    with open(tdir.parent / (tdir.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.is_file():
            return tdir
        shutil.rmtree(tdir, ignore_errors=True)
        with step("wine-template", prefix=str(tdir)):
            env = base_env(tdir)
            proc = subprocess.run([wine_binary(), "wineboot", "-i"], env=env, capture_output=True, timeout=300)
            kill_prefix(tdir)
            if proc.returncode != 0 or not (tdir / "system.reg").is_file():
                raise EnvironmentProblem(
                    f"wineboot -i failed for the template prefix {tdir} (exit {proc.returncode}): "
                    + proc.stderr.decode(errors="replace")[-1500:],
                    "check that Wine runs at all: WINEPREFIX=/tmp/x wine wineboot -i",
                )
        ready.write_text(wine_version() + "\n")
    return tdir


def clone_prefix(dest: Path) -> Path:
    """Make ``dest`` a fresh prefix cloned from the template (see module docstring)."""
    src = ensure_template()
    if dest.exists():
        raise FileExistsError(dest)
    windir = src / "drive_c" / "windows"
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        out = dest / rel
        out.mkdir(parents=True, exist_ok=True)
        for d in list(dirs):
            p = Path(root) / d
            if p.is_symlink():
                os.symlink(os.readlink(p), out / d)
                dirs.remove(d)
        for f in files:
            p = Path(root) / f
            if f in (".hil-ready",):
                continue
            if p.is_symlink():
                os.symlink(os.readlink(p), out / f)
            elif p.suffix.lower() not in _COPY_SUFFIXES and Path(root).is_relative_to(windir):
                try:
                    os.link(p, out / f)
                except OSError:
                    shutil.copy2(p, out / f)
            else:
                shutil.copy2(p, out / f)
    return dest
