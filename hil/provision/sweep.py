"""Remove what dead sessions left behind: domains of every kind, overlays, save files,
runtime folders and Wine prefixes.

Runs at the start of every session (so a SIGKILLed worker's guests go at the next run), when
xdist reports a worker dead, and as ``hil sweep``.  Only what carries our owner record (a
domain's metadata, a folder's or a Wine prefix's ``owner.json``) and whose owner process is
gone is touched; another live session's guests are left alone.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hil.provision.domain_xml import read_owner
from hil.provision.owner import DOMAIN_PREFIX, Owner

log = logging.getLogger("hil.sweep")
OWNER_FILE = "owner.json"


@dataclass
class SweepResult:
    domains: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)


# A prefix without an owner record is being cloned, or was left by a clone that died; give a
# live clone this long to write its record.
UNOWNED_PREFIX_GRACE_S = 600.0


def _dead(owner: dict[str, str], include_kept: bool) -> bool:
    if include_kept and owner.get("keep") == "1":
        owner = {**owner, "keep": "0"}
    return not Owner.is_alive(owner)


def sweep_wine_prefixes(run_dir: Path, include_kept: bool = False) -> list[str]:
    """Kill the wineserver of, and delete, every Wine prefix whose owner is gone."""
    from hil.wine.prefix import kill_prefix

    removed: list[str] = []
    if not run_dir.is_dir():
        return removed
    for p in run_dir.iterdir():
        try:
            owner = json.loads((p / OWNER_FILE).read_text())
        except (OSError, ValueError):
            try:
                if time.time() - p.stat().st_mtime < UNOWNED_PREFIX_GRACE_S:
                    continue
            except OSError:
                continue
            owner = {}
        if owner and not _dead(owner, include_kept):
            continue
        try:
            kill_prefix(p, timeout=15)
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(p, ignore_errors=True)
        removed.append(str(p))
        log.info("swept Wine prefix %s (owner pid %s gone)", p, owner.get("pid", "-"))
    return removed


def sweep(conn, runtime_root: Path, include_kept: bool = False, wine_run_dir: Path | None = None) -> SweepResult:
    """conn: a libvirt connection (None: no domains to look at); runtime_root: the lab's
    runtime folders; wine_run_dir: where Wine prefixes live (default: the cache's)."""
    result = SweepResult()
    if conn is not None:
        _sweep_domains(conn, result, include_kept)
    _sweep_dirs(runtime_root, result, include_kept)
    if wine_run_dir is None:
        from hil.wine.prefix import run_dir

        wine_run_dir = run_dir()
    result.prefixes = sweep_wine_prefixes(wine_run_dir, include_kept)
    return result


def _sweep_domains(conn, result: SweepResult, include_kept: bool) -> None:
    import libvirt

    for dom in conn.listAllDomains():
        name = dom.name()
        if not name.startswith(DOMAIN_PREFIX):
            continue
        try:
            owner = read_owner(dom.XMLDesc(0))
        except libvirt.libvirtError:
            continue  # vanished meanwhile
        if owner is None or not _dead(owner, include_kept):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            result.domains.append(name)
            log.info("swept %s domain %s (owner pid %s gone)", owner.get("kind", "linux"), name, owner.get("pid"))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise


def _sweep_dirs(runtime_root: Path, result: SweepResult, include_kept: bool) -> None:
    if runtime_root.is_dir():
        for d in runtime_root.iterdir():
            owner_file = d / OWNER_FILE
            try:
                owner = json.loads(owner_file.read_text())
            except (OSError, ValueError):
                owner = None
            if owner is None and d.is_dir() and not any(d.iterdir()):
                owner = {}
            if owner is None:
                continue
            if not owner or _dead(owner, include_kept):
                shutil.rmtree(d, ignore_errors=True)
                result.dirs.append(str(d))
                log.info("swept runtime folder %s", d)
