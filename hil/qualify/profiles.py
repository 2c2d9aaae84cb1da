"""Qualification profiles: which suites a run selects, at which sizes, how often a failure is
retried on a fresh guest, and what makes the run fail.

Built in: ``smoke`` (minutes: boot, deploy, one collector round trip, one crash caught),
``nightly`` (every suite at its CI size) and ``prerelease`` (larger storms and a soak).  A team
adds or overrides profiles in hil.toml; every key is optional and starts from ``nightly``'s::

    [profiles.mine]
    paths = ["tests", "suites:linux"]   # folders/files (relative to where hil qualify runs);
                                        # "suites:X" = the installed suites' folder X
    k = "not windows"                   # a pytest -k expression
    markers = ""                        # a pytest -m expression
    execs = 20000                       # process storm size
    connections = 5000                  # connection storm size
    concurrency = 16                    # connection storm client threads
    soak_s = 600                        # the soak's duration (0: no soak)
    reruns = 2                          # a failed test is run again on a fresh guest this often
    fail_on_flaky = false               # a fail-then-pass does not fail the run
    workers = 0                         # xdist workers; 0: sized to the machine
    flavour = "debug"                   # the guest kernel: "stock" | "debug"; unset: [linux] flavour

The stress fixtures read the sizes of the run's profile (``--hil-profile``); the environment
variables ``HIL_STORM_EXECS``, ``HIL_STORM_CONNECTIONS``, ``HIL_STORM_CONCURRENCY`` and
``HIL_SOAK_S`` still override them for one run.

The guest kernel of a run: ``--hil-kernel`` if given, else the profile's ``flavour`` if it sets
one (``prerelease`` sets ``debug``: KASAN, lockdep, UBSAN, ... on the same Debian source), else
``[linux] flavour`` (:func:`hil.config.choose_flavour`, applied by the pytest plugin, so
``hil qualify --profile prerelease`` and ``pytest --hil-profile prerelease`` agree).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from hil.config import check_flavour
from hil.errors import ConfigError

SUITES_PREFIX = "suites:"
ENV_OVERRIDES = {
    "execs": "HIL_STORM_EXECS",
    "connections": "HIL_STORM_CONNECTIONS",
    "concurrency": "HIL_STORM_CONCURRENCY",
    "soak_s": "HIL_SOAK_S",
}


@dataclass(frozen=True)
class Profile:
    name: str = "nightly"
    paths: tuple[str, ...] = ("suites:",)
    k: str = ""
    markers: str = ""
    execs: int = 10000
    connections: int = 2000
    concurrency: int = 16
    soak_s: int = 60
    reruns: int = 1
    fail_on_flaky: bool = False
    workers: int = 0
    flavour: str = ""  # "" = the configuration's [linux] flavour; else one of hil.config.FLAVOURS

    def size(self, key: str) -> int:
        """A stress size, with the environment's override (one clear error when it is not a number)."""
        env = ENV_OVERRIDES[key]
        value = os.environ.get(env, "")
        if not value:
            return getattr(self, key)
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{env}={value!r} is not an integer", f"unset {env} or give a whole number") from None


BUILTIN: dict[str, Profile] = {
    "smoke": Profile("smoke", markers="smoke", soak_s=0, reruns=1),
    "nightly": Profile("nightly"),
    "prerelease": Profile(
        "prerelease", execs=100000, connections=20000, concurrency=32, soak_s=1800, reruns=2, flavour="debug"
    ),
}
DEFAULT = "nightly"


def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(Profile) if f.name != "name"}


def from_table(name: str, table: dict, source: str) -> Profile:
    """A ``[profiles.NAME]`` table: every key checked; missing keys come from the built-in
    profile of the same name, else from ``nightly``."""
    base = BUILTIN.get(name, BUILTIN[DEFAULT])
    known = _fields()
    values = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {key!r} in [profiles.{name}]", f"known keys there: {', '.join(sorted(known))}"
            )
        default = getattr(base, key)
        if isinstance(default, tuple):
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(
                    f"{source}: {key} in [profiles.{name}] must be a list of strings",
                    f'for example {key} = ["suites:linux", "tests"]',
                )
            value = tuple(value)
        elif type(value) is not type(default):
            raise ConfigError(
                f"{source}: {key} in [profiles.{name}] must be {type(default).__name__}, not {type(value).__name__}",
                f"for example {key} = {default!r}",
            )
        values[key] = value
    profile = dataclasses.replace(base, name=name, **values)
    check(profile, source)
    return profile


def check(profile: Profile, source: str) -> None:
    where = f"{source}: [profiles.{profile.name}]"
    for key in ("execs", "connections", "concurrency", "soak_s", "reruns", "workers"):
        if getattr(profile, key) < 0:
            raise ConfigError(f"{where} {key} = {getattr(profile, key)} is negative", f"give {key} >= 0")
    if profile.flavour:
        check_flavour(profile.flavour, f"{where} flavour")
    if not profile.paths:
        raise ConfigError(f"{where} paths is empty", 'select something, e.g. paths = ["suites:"]')


def resolve(name: str | None, configured: dict[str, Profile]) -> Profile:
    """The profile ``name`` (a user's first, then the built-in ones); None: ``nightly``."""
    name = name or DEFAULT
    if name in configured:
        return configured[name]
    if name in BUILTIN:
        return BUILTIN[name]
    known = sorted({*BUILTIN, *configured})
    raise ConfigError(f"no profile {name!r}", f"choose one of {', '.join(known)}, or add [profiles.{name}] to hil.toml")


def pytest_selection(profile: Profile) -> list[str]:
    """Paths (``suites:X`` = the installed suites' folder X), then ``-k``/``-m``."""
    from hil.paths import bundled

    args = []
    for p in profile.paths:
        if p.startswith(SUITES_PREFIX):
            rest = p[len(SUITES_PREFIX) :].strip("/")
            args.append(str(bundled("suites") / rest) if rest else str(bundled("suites")))
        else:
            args.append(p)
    if profile.k:
        args += ["-k", profile.k]
    markers = profile.markers
    if profile.size("soak_s") == 0:  # no soak asked for: deselected, not skipped
        markers = f"({markers}) and not soak" if markers else "not soak"
    if markers:
        args += ["-m", markers]
    return args
