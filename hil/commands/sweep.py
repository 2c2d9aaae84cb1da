"""``hil sweep``: remove guests and runtime folders left by sessions that no longer run."""

from __future__ import annotations

HELP = "remove domains, overlays and save files left behind by dead sessions (never live ones)"


def add_arguments(parser) -> None:
    parser.add_argument("--kept", action="store_true", help="also remove guests kept by --hil-keep-failed")
    parser.add_argument("--uri", default=None, help="libvirt URI (default: from the config)")


def run(args) -> int:
    from hil.config import load_config
    from hil.paths import runtime_dir
    from hil.provision.daemons import open_connection
    from hil.provision.sweep import sweep

    uri = args.uri or load_config().libvirt_uri
    result = sweep(open_connection(uri), runtime_dir(), include_kept=args.kept)
    for d in result.domains:
        print(f"removed domain {d}")
    for d in result.dirs:
        print(f"removed folder {d}")
    if not (result.domains or result.dirs):
        print("nothing to remove")
    return 0
