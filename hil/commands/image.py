"""``hil image build linux [--flavour debug]`` / ``hil image show linux`` / ``hil image path linux``."""

from __future__ import annotations

HELP = "build or show cached guest images and the debug kernel (content-addressed, rebuilt when the recipe changes)"


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["build", "show", "path"])
    parser.add_argument("os", choices=["linux"], help="which guest recipe (guests/<os>/recipe.toml)")
    parser.add_argument("--recipe", help="path of another recipe.toml")
    parser.add_argument(
        "--flavour",
        choices=["stock", "debug"],
        default=None,
        help="build/path: the image (stock, default) or its debug kernel (debug: Debian's source of the "
        "guest kernel with KASAN, lockdep, UBSAN, ...; built once); show: both unless given",
    )
    parser.add_argument("--rebuild", action="store_true", help="build again even if cached")


def run(args) -> int:
    from pathlib import Path

    from hil.images.debug_kernel import debug_kernel_state
    from hil.images.linux_image import cached_image, ensure_linux_image, image_dir_for
    from hil.images.recipe import load_linux_recipe

    recipe = load_linux_recipe(Path(args.recipe) if args.recipe else None)
    debug = args.flavour == "debug"
    if args.action == "build":
        if debug:
            from hil.images.debug_kernel import ensure_debug_kernel

            kernel = ensure_debug_kernel(image=ensure_linux_image(recipe), rebuild=args.rebuild)
            print(kernel.dir)
            return 0
        built = ensure_linux_image(recipe, rebuild=args.rebuild)
        print(built.dir)
        return 0
    img = cached_image(recipe)
    if args.action == "path":
        if not debug:
            print(image_dir_for(recipe))
            return 0 if img else 1
        state = debug_kernel_state(img)
        if state.plan is not None:
            print(state.plan.dir)
        return 0 if state.kernel is not None else 1
    code = 0
    if args.flavour != "debug":
        if img is None:
            print(f"linux image {recipe.key()}: not built (run `hil image build linux`)")
            code = 1
        else:
            print(
                f"linux image {recipe.key()}: {img.dir}\n  kernel {img.kernel_release}\n  disk {img.disk}"
                f"\n  kbuild {img.kbuild_dir}"
            )
    if args.flavour != "stock":
        state = debug_kernel_state(img)
        print("\n".join(debug_kernel_lines(state)))
        if debug and state.kernel is None:
            code = 1
    return code


def debug_kernel_lines(state) -> list[str]:
    """``hil image show``'s lines for the debug kernel: built (release, files) or not (key, the
    pinned source, the command, whether this host has the build's packages)."""
    from hil.images.debug_kernel import BUILD_COMMAND, BUILD_TIME, missing_build_packages

    plan, k = state.plan, state.kernel
    if plan is None:
        return [f"debug kernel: {state.problem}"]
    if k is None:
        missing = missing_build_packages()
        return [
            f"debug kernel {plan.key}: not built (run `{BUILD_COMMAND}`: {BUILD_TIME}, once)",
            f"  source {plan.pin} (the guest kernel {plan.guest_release})",
            f"  build deps: missing {', '.join(missing)}" if missing else "  build deps: all present",
        ]
    return [
        f"debug kernel {plan.key}: {k.dir}",
        f"  release {k.release} (source {plan.pin})",
        *([f"  built {k.built_at} in {k.build_s / 60:.1f} min"] if k.build_s and k.built_at else []),
        f"  bzImage {k.bzimage}",
        f"  kbuild {k.kbuild_dir}",
        f"  modules {k.modules_dir}",
    ]
