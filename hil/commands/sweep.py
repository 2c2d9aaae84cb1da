"""``hil sweep``: remove guests and runtime folders left by sessions that no longer run, on
every libvirt host of the configuration (``hosts``, or ``libvirt_uri``)."""

from __future__ import annotations

HELP = "remove domains, overlays and save files left behind by dead sessions (never live ones)"


def add_arguments(parser) -> None:
    parser.add_argument("--kept", action="store_true", help="also remove guests kept by --hil-keep-failed")
    parser.add_argument("--uri", default=None, help="one libvirt URI (default: every host of the config)")


def run(args) -> int:
    from hil.config import HostConfig, load_config
    from hil.errors import HilError
    from hil.hosts.host import GuestHost
    from hil.hosts.sweep import sweep_host_files
    from hil.paths import runtime_dir
    from hil.provision.sweep import sweep

    hosts = [HostConfig(args.uri)] if args.uri else load_config().host_list()
    removed, rc = 0, 0
    for hc in hosts:
        host = None
        try:
            host = GuestHost(hc)
            result = sweep(host.conn, runtime_dir(), include_kept=args.kept)
            files = sweep_host_files(host, runtime_dir()) if host.remote else []
        except HilError as exc:
            print(f"{hc.uri}: not swept: {exc}")
            rc = 1
            continue
        finally:
            if host is not None:
                host.close()
        for d in result.domains:
            print(f"{hc.uri}: removed domain {d}")
        for f in files:
            print(f"{hc.uri}: removed file {f}")
        for d in result.dirs:
            print(f"removed folder {d}")
        removed += len(result.domains) + len(files) + len(result.dirs)
    if not removed and not rc:
        print("nothing to remove")
    return rc
