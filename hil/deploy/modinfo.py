"""What a Linux kernel module file says about itself: its ``.modinfo`` section.

``modinfo`` needs the module's kernel installed; this reads the ELF file directly, so a team's
prebuilt ``.ko`` is checked on the host before any guest boots: is it a module at all, what is it
called, and which kernel was it built for (``vermagic``)?
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from hil.errors import HilError

ELF_MAGIC = b"\x7fELF"
ELFCLASS64, ELFDATA2LSB, ET_REL = 2, 1, 1


class NotAModule(HilError):
    """The file is not a loadable Linux kernel module."""


@dataclass(frozen=True)
class ModInfo:
    path: Path
    fields: dict[str, str]

    @property
    def name(self) -> str:
        return self.fields.get("name", self.path.stem.replace("-", "_"))

    @property
    def vermagic(self) -> str:
        return self.fields.get("vermagic", "")

    @property
    def kernel_release(self) -> str:
        """The release the module was built for: the first word of ``vermagic``."""
        return self.vermagic.split(" ", 1)[0]


def read_modinfo(path: Path) -> ModInfo:
    """Parse ``path``'s ``.modinfo`` (64-bit little-endian ELF, as x86_64 modules are)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC:
        raise NotAModule(f"{path} is not an ELF file", "name the .ko your kernel module build produced")
    if data[4] != ELFCLASS64 or data[5] != ELFDATA2LSB:
        raise NotAModule(f"{path} is not a 64-bit little-endian ELF file", "build the module for x86_64")
    try:
        (e_type,) = struct.unpack_from("<H", data, 16)
        (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
        e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        if e_type != ET_REL:
            raise NotAModule(
                f"{path} is an ELF file but not a relocatable kernel module (e_type {e_type})",
                "name the .ko, not a program or shared library",
            )

        def section(i: int) -> tuple[int, int, int]:
            name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize)
            return name, off, size

        _n, str_off, str_size = section(e_shstrndx)
        strtab = data[str_off : str_off + str_size]
        for i in range(e_shnum):
            name_off, off, size = section(i)
            if strtab[name_off : strtab.index(b"\0", name_off)] == b".modinfo":
                fields: dict[str, str] = {}
                for entry in data[off : off + size].split(b"\0"):
                    key, eq, value = entry.decode(errors="replace").partition("=")
                    if eq:
                        fields.setdefault(key, value)
                return ModInfo(path, fields)
    except (struct.error, ValueError) as exc:
        raise NotAModule(f"{path} is a damaged ELF file ({exc})", "rebuild the module") from None
    raise NotAModule(
        f"{path} has no .modinfo section: not a Linux kernel module", "name the .ko your kernel module build produced"
    )
