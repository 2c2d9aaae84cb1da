"""Static checks of Windows kernel drivers (.sys) with pefile.

A driver that Windows will load must be a PE32+ image with the native subsystem (1), must
import only from kernel-mode modules (a user-mode DLL import makes the load fail with
STATUS_INVALID_IMAGE_FORMAT or worse), and must carry a valid PE checksum.

    report = check_driver(Path("hilagent.sys"))
    report.raise_for_problems()

``python -m hil.deploy.pecheck FILE...`` prints one line per file and exits non-zero on a
problem; ``--fix-checksum`` rewrites the checksum first (what the build does after linking).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from hil.errors import HilError

IMAGE_SUBSYSTEM_NATIVE = 1
IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY = 0x0080

# Modules a kernel driver may import from (compared case-insensitively).
KERNEL_MODULES = frozenset(
    m.lower()
    for m in (
        "ntoskrnl.exe",
        "hal.dll",
        "netio.sys",
        "fltmgr.sys",
        "ksecdd.sys",
        "cng.sys",
        "ndis.sys",
        "wdfldr.sys",
        "tdi.sys",
        "wmilib.sys",
        "storport.sys",
        "msrpc.sys",
    )
)


class PeCheckError(HilError):
    """A driver image failed a static check."""


@dataclass
class PeReport:
    path: Path
    subsystem: int
    machine: int
    imports: dict[str, list[str]]
    checksum_stored: int
    checksum_computed: int
    force_integrity: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> PeReport:
        if self.problems:
            raise PeCheckError(
                f"{self.path.name}: " + "; ".join(self.problems),
                "link with -Wl,--subsystem,native -nostdlib and kernel import libraries only; "
                "hil.deploy.windows_build sets the checksum after linking",
            )
        return self


def _load(path: Path):
    try:
        import pefile
    except ImportError as exc:  # pragma: no cover - dependency declared in pyproject [test]
        raise HilError("pefile is not installed", "pip install pefile") from exc
    return pefile.PE(str(path), fast_load=False)


def write_checksum(path: Path) -> int:
    """Recompute and store the PE checksum of ``path``; returns it."""
    pe = _load(path)
    try:
        pe.OPTIONAL_HEADER.CheckSum = pe.generate_checksum()
        data = pe.write()
    finally:
        pe.close()
    tmp = path.with_name(path.name + ".cksum")
    tmp.write_bytes(data)
    tmp.replace(path)
    return _load(path).OPTIONAL_HEADER.CheckSum


def inspect(path: Path) -> PeReport:
    path = Path(path)
    pe = _load(path)
    try:
        imports: dict[str, list[str]] = {}
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
            dll = entry.dll.decode(errors="replace")
            imports[dll] = [(i.name or b"#%d" % i.ordinal).decode(errors="replace") for i in entry.imports]
        report = PeReport(
            path=path,
            subsystem=pe.OPTIONAL_HEADER.Subsystem,
            machine=pe.FILE_HEADER.Machine,
            imports=imports,
            checksum_stored=pe.OPTIONAL_HEADER.CheckSum,
            checksum_computed=pe.generate_checksum(),
            force_integrity=bool(pe.OPTIONAL_HEADER.DllCharacteristics & IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY),
        )
    finally:
        pe.close()
    return report


def check_driver(path: Path, require_integrity: bool = False) -> PeReport:
    """Inspect ``path`` and list every reason Windows would refuse to load it."""
    r = inspect(path)
    if r.machine != IMAGE_FILE_MACHINE_AMD64:
        r.problems.append(f"machine is {r.machine:#x}, not AMD64")
    if r.subsystem != IMAGE_SUBSYSTEM_NATIVE:
        r.problems.append(f"subsystem is {r.subsystem}, not native (1)")
    bad = sorted(d for d in r.imports if d.lower() not in KERNEL_MODULES)
    if bad:
        r.problems.append("imports from non-kernel modules: " + ", ".join(bad))
    if not r.imports:
        r.problems.append("imports nothing (not linked against ntoskrnl?)")
    if r.checksum_stored == 0 or r.checksum_stored != r.checksum_computed:
        r.problems.append(f"PE checksum {r.checksum_stored:#x} != computed {r.checksum_computed:#x}")
    if require_integrity and not r.force_integrity:
        r.problems.append("FORCE_INTEGRITY not set (link with -Wl,--forceinteg)")
    return r


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m hil.deploy.pecheck")
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--fix-checksum", action="store_true")
    args = ap.parse_args(argv)
    rc = 0
    for f in args.files:
        if args.fix_checksum:
            write_checksum(f)
        r = check_driver(f)
        status = "ok" if r.ok else "FAIL: " + "; ".join(r.problems)
        print(
            f"{f.name}: subsystem={r.subsystem} imports={','.join(sorted(r.imports))} checksum={r.checksum_stored:#x} {status}"
        )
        rc |= 0 if r.ok else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
