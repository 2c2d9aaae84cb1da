"""README's layout table is the map a newcomer reads: every path in it exists, and every
subpackage of hil/ is in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_paths() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    first_cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    return [p for cell in first_cells for p in re.findall(r"`([^`]+)`", cell)]


def test_every_path_in_the_layout_table_exists():
    missing = [p for p in layout_paths() if not (ROOT / p).exists()]
    assert not missing, f"README's layout names paths that do not exist: {missing}"


def test_every_hil_subpackage_is_in_the_layout_table():
    listed = {p.rstrip("/") for p in layout_paths()}
    packages = sorted(f"hil/{d.name}" for d in (ROOT / "hil").iterdir() if (d / "__init__.py").is_file())
    assert [p for p in packages if p not in listed] == []
