"""``hil collector``: run the agent collector standalone and print records as they arrive."""

from __future__ import annotations

import sys

HELP = "run the agent collector standalone and print records as they arrive"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; guests reach it as 10.0.2.2 through QEMU user networking)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free port, printed at start)")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between polls of every agent (default 1.0)"
    )
    parser.add_argument(
        "--capture-dir",
        default=None,
        metavar="DIR",
        help="write each connection's raw bytes to DIR/connNNNN-HOST-KIND.bin",
    )
    parser.add_argument(
        "--token",
        default=None,
        metavar="SECRET",
        help="refuse agents whose HELLO does not carry this shared token "
        "(hil_agent token=SECRET; the Windows agent's Token setting); "
        "default: accept any agent",
    )


def format_record(rec) -> str:
    import time

    ms = int(rec.wall * 1000) % 1000
    stamp = time.strftime("%H:%M:%S", time.localtime(rec.wall)) + f".{ms:03d}"
    sha = rec.sha256.hex() if any(rec.sha256) else "-"
    return f"{stamp} {rec.host} {rec.kind:<7} pid={rec.pid} size={rec.image_size} sha256={sha} {rec.image_path}"


def run(args) -> int:
    import logging

    from hil.collector import Collector

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    collector = Collector(args.host, args.port, interval=args.interval, capture_dir=args.capture_dir, token=args.token)
    with collector:
        print(
            f"collector listening on {collector.host}:{collector.port} "
            f"(poll every {args.interval:g} s"
            f"{', token required' if args.token else ''}); Ctrl-C to stop",
            flush=True,
        )
        for rec in collector.follow():
            print(format_record(rec), flush=True)
    return 0
