"""Remove what dead sessions left behind: domains, overlays, save files, runtime folders.

Runs at the start of every session (so a SIGKILLed worker's guests go at the next run) and as
``hil sweep``.  Only domains carrying our owner metadata whose owner process is gone are
touched; another live session's guests are left alone.
"""

from __future__ import annotations

import json
import logging
import shutil
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


def sweep(conn, runtime_root: Path, include_kept: bool = False) -> SweepResult:
    import libvirt

    result = SweepResult()
    for dom in conn.listAllDomains():
        name = dom.name()
        if not name.startswith(DOMAIN_PREFIX):
            continue
        try:
            owner = read_owner(dom.XMLDesc(0))
        except libvirt.libvirtError:
            continue  # vanished meanwhile
        if owner is None:
            continue
        if include_kept and owner.get("keep") == "1":
            owner = {**owner, "keep": "0"}
        if Owner.is_alive(owner):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            result.domains.append(name)
            log.info("swept domain %s (owner pid %s gone)", name, owner.get("pid"))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
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
            if include_kept and owner.get("keep") == "1":
                owner = {**owner, "keep": "0"}
            if not owner or not Owner.is_alive(owner):
                shutil.rmtree(d, ignore_errors=True)
                result.dirs.append(str(d))
                log.info("swept runtime folder %s", d)
    return result
