"""``hil bench NAME``: benchmarks that print figures and ratios, one ``key: value`` per line.

Speed and memory targets live here, never in timed tests.  Each entry of :data:`BENCHES`
names a module in :mod:`hil.bench` with ``HELP``, ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import importlib

HELP = "run a benchmark and print its figures (key: value lines)"

BENCHES: dict[str, str] = {
    "provision": "hil.bench.provision",
    "collector": "hil.bench.collector",
    "crash-corpus": "hil.bench.crash_corpus",
    "crash": "hil.bench.crash",
    "agent": "hil.bench.agent",
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, module_name in BENCHES.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_bench_run=module.run)


def run(args) -> int:
    return args._bench_run(args)
