"""``hil image build linux`` / ``hil image show linux``."""

from __future__ import annotations

HELP = "build or show cached guest images (content-addressed, rebuilt when the recipe changes)"


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["build", "show", "path"])
    parser.add_argument("os", choices=["linux"], help="which guest recipe (guests/<os>/recipe.toml)")
    parser.add_argument("--recipe", help="path of another recipe.toml")
    parser.add_argument("--rebuild", action="store_true", help="build again even if cached")


def run(args) -> int:
    from pathlib import Path

    from hil.images.linux_image import cached_image, ensure_linux_image, image_dir_for
    from hil.images.recipe import load_linux_recipe

    recipe = load_linux_recipe(Path(args.recipe) if args.recipe else None)
    if args.action == "build":
        built = ensure_linux_image(recipe, rebuild=args.rebuild)
        print(built.dir)
        return 0
    img = cached_image(recipe)
    if args.action == "path":
        print(image_dir_for(recipe))
        return 0 if img else 1
    if img is None:
        print(f"linux image {recipe.key()}: not built (run `hil image build linux`)")
        return 1
    print(
        f"linux image {recipe.key()}: {img.dir}\n  kernel {img.kernel_release}\n  disk {img.disk}"
        f"\n  kbuild {img.kbuild_dir}"
    )
    return 0
