"""Remove what dead sessions left in a remote host's pool: overlays and console logs.

A local guest's files live in its lab's runtime folder, which the ordinary sweep removes with
its dead owner (:mod:`hil.provision.sweep`).  A remote guest's live on its host, named after
their owner (``hil-<session>-<worker>-<n>.qcow2`` / ``.console.log``).  Such a volume is a
leftover when no domain on that host uses it and no live lab of this machine has that owner
prefix.  The cache's volumes (uploaded images, snapshots) are never touched here.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hil.provision.owner import DOMAIN_PREFIX, Owner
from hil.provision.sweep import OWNER_FILE

log = logging.getLogger("hil.sweep")

_GUEST_FILE = re.compile(rf"^({re.escape(DOMAIN_PREFIX)}[0-9a-f]+-[\w.-]+?-)\d+\.(?:qcow2|console\.log)$")


def live_prefixes(runtime_root: Path) -> set[str]:
    """The name prefixes of this machine's live labs (their runtime folders' owners)."""
    live: set[str] = set()
    if not runtime_root.is_dir():
        return live
    for d in runtime_root.iterdir():
        try:
            owner = json.loads((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if Owner.is_alive(owner):
            live.add(f"{DOMAIN_PREFIX}{owner.get('session')}-{owner.get('worker')}-")
    return live


def files_in_use(conn: Any) -> set[str]:
    """The base names of every file a domain of that host uses (disks, console logs)."""
    used: set[str] = set()
    for dom in conn.listAllDomains():
        try:
            root = ET.fromstring(dom.XMLDesc(0))
        except Exception:
            continue  # vanished meanwhile
        for el in root.iter("source"):
            for attr in ("file", "path"):
                if el.get(attr):
                    used.add(Path(el.get(attr, "")).name)
    return used


def sweep_host_files(host: Any, runtime_root: Path) -> list[str]:
    """Delete the guest files of dead owners from ``host``'s pool (a :class:`GuestHost`)."""
    live, used = live_prefixes(runtime_root), files_in_use(host.conn)

    def leftover(name: str) -> bool:
        m = _GUEST_FILE.match(name)
        return m is not None and name not in used and m.group(1) not in live

    removed = host.store.delete_matching(leftover)
    for name in removed:
        log.info("swept %s from %s (its owner is gone)", name, host.uri)
    return list(removed)
