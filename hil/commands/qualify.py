"""``hil qualify``: the main job, a qualification run with a verdict, a history and a report."""

from __future__ import annotations

HELP = "run the suites of a profile (smoke, nightly, prerelease, yours), remember it, write one report"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--profile", default=None, help="smoke | nightly | prerelease | a [profiles.NAME] of hil.toml (default nightly)"
    )
    parser.add_argument(
        "--history",
        metavar="URL",
        default=None,
        help="history database: sqlite:///FILE or postgresql://... (default: hil.toml's "
        "history, else SQLite in the data folder)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="where run folders go (default: hil-runs beside the artifacts folder)",
    )
    parser.add_argument("--config", metavar="FILE", default=None, help="hil.toml to use")
    parser.add_argument(
        "pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="passed to pytest after --, e.g. -- -x --hil-accel tcg"
    )


def run(args) -> int:
    from pathlib import Path

    from hil.config import load_config
    from hil.qualify.profiles import resolve
    from hil.qualify.runner import qualify

    config = load_config(args.config)
    profile = resolve(args.profile, config.profiles)
    out = Path(args.out) if args.out else Path(config.artifacts).resolve().parent / "hil-runs"
    outcome = qualify(
        config, profile, history_url=args.history, out=out, config_path=args.config, extra=args.pytest_args
    )
    run = outcome.run
    counts = ", ".join(f"{run.count(o)} {o}" for o in ("passed", "failed", "error", "flaky", "skipped"))
    print(f"\nhil qualify: {outcome.verdict.word}: {outcome.verdict.reason} ({counts})")
    print(f"report: {outcome.report}")
    return outcome.exit_code
