"""A guest image recipe (``guests/<os>/recipe.toml`` + ``overlay/``) and its content key."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hil.errors import ConfigError
from hil.paths import bundled

# Bump when the builder changes what it makes from the same recipe.
BUILDER_VERSION = "1"


@dataclass(frozen=True)
class LinuxRecipe:
    path: Path
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    headroom_mib: int
    cmdline: str
    mask: tuple[str, ...]
    enable: tuple[str, ...]

    @property
    def overlay(self) -> Path:
        return self.path.parent / "overlay"

    def key(self) -> str:
        """Content hash of everything that determines the image: recipe, overlay, builder."""
        h = hashlib.sha256()
        h.update(BUILDER_VERSION.encode())
        h.update(self.path.read_bytes())
        if self.overlay.is_dir():
            for f in sorted(p for p in self.overlay.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(self.overlay)).encode() + b"\0")
                h.update(f.read_bytes())
        return h.hexdigest()[:16]


def default_recipe_path(os_name: str = "linux") -> Path:
    return bundled("guests") / os_name / "recipe.toml"


def load_linux_recipe(path: Path | None = None) -> LinuxRecipe:
    path = path or default_recipe_path("linux")
    if not path.is_file():
        raise ConfigError(
            f"guest recipe {path} does not exist",
            "reinstall kernel-hil (the wheel ships guests/), or pass the path of a recipe.toml",
        )
    try:
        data = tomllib.loads(path.read_text())
        ds, img, boot, sd = data["debootstrap"], data.get("image", {}), data["boot"], data.get("systemd", {})
        return LinuxRecipe(
            path=path,
            suite=ds["suite"],
            mirror=ds["mirror"],
            variant=ds.get("variant", "minbase"),
            packages=tuple(ds["packages"]),
            headroom_mib=int(img.get("headroom_mib", 1024)),
            cmdline=boot["cmdline"],
            mask=tuple(sd.get("mask", ())),
            enable=tuple(sd.get("enable", ())),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"guest recipe {path} is invalid: {exc!r}",
            "compare it with guests/linux/recipe.toml in the kernel-hil repository",
        ) from None
