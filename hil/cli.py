"""The ``hil`` command: a thin dispatcher over one module per sub-command.

Each entry of :data:`COMMANDS` names a module in :mod:`hil.commands` that provides
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.  Modules import
their heavy dependencies (libvirt, asyncio servers) inside ``run`` so that ``hil --help``
stays fast and works on a machine that lacks them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hil.errors import HilError

COMMANDS: dict[str, str] = {
    "qualify": "hil.commands.qualify",
    "image": "hil.commands.image",
    "doctor": "hil.commands.doctor",
    "bench": "hil.commands.bench",
    "collector": "hil.commands.collector",
    "crash-scan": "hil.commands.crash_scan",
    "sweep": "hil.commands.sweep",
    "history": "hil.commands.history",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hil", description="kernel-hil: boot real guests, deploy kernel drivers, witness every byte"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except HilError as exc:
        print(f"hil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hil {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
