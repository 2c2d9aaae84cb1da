"""The pytest side of several libvirt hosts (issue 16), called from :mod:`hil.pytest_plugin`.

- The controller (no xdist, or the xdist controller) probes the hosts once when ``hosts``
  names more than one or a remote one: each unreachable host is one line on stderr and is left
  out; none reachable is a usage error.  The reachable ones go to every xdist worker in its
  ``workerinput["hil_hosts"]``, so workers do not probe again.
- ``-n auto`` (:func:`auto_num_workers`): with ``hosts`` set, the workers are the reachable
  hosts' capacity (the sum of their weights); without, xdist's own count.
- ``hil_hosts`` (fixture) / :func:`hosts_for`: this process's hosts in its order of preference,
  :func:`hil.hosts.placement.assign` of its worker index (``gw3``: 3; no xdist: 0).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

import pytest

from hil.config import HilConfig, HostConfig
from hil.errors import HilError
from hil.hosts.placement import assign, capacity, host_address, probe

HOSTS_KEY = pytest.StashKey[list[HostConfig]]()  # this run's reachable hosts
_PROBED_KEY = pytest.StashKey[tuple[list[HostConfig], list[str]]]()  # probed once per process
WORKERINPUT_KEY = "hil_hosts"


def needs_probe(hosts: list[HostConfig]) -> bool:
    """Probe when there is a choice to make or a network in between: several hosts or a remote
    one.  The lone local host is left to the lab, which says precisely what is wrong with it."""
    return len(hosts) > 1 or any(host_address(h.uri) for h in hosts)


def _probe_once(config: pytest.Config, hil_config: HilConfig) -> tuple[list[HostConfig], list[str]]:
    probed = config.stash.get(_PROBED_KEY, None)
    if probed is None:
        hosts = hil_config.host_list()
        probed = probe(hosts) if needs_probe(hosts) else (hosts, [])
        config.stash[_PROBED_KEY] = probed
    return probed


def auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: the reachable hosts' capacity when ``hosts`` is set, else None (xdist's
    count).  xdist asks before ``pytest_configure``, so this loads the configuration itself; an
    error in it is left for ``pytest_configure`` to report."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # the user's explicit count, which xdist reads
    from hil.config import load_config

    try:
        hil_config = load_config(config.getoption("--hil-config"))
    except HilError:
        return None
    if not hil_config.hosts:
        return None
    reachable, _ = _probe_once(config, hil_config)
    return capacity(reachable) or None


def configure(config: pytest.Config) -> None:
    """Settle this process's reachable hosts (``config._hil_config`` is loaded)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKERINPUT_KEY in workerinput:
        config.stash[HOSTS_KEY] = [HostConfig(**h) for h in workerinput[WORKERINPUT_KEY]]
        return
    hil_config: HilConfig = config._hil_config  # type: ignore[attr-defined]
    reachable, lines = _probe_once(config, hil_config)
    for line in lines:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()
    if not reachable:
        raise pytest.UsageError(
            f"kernel-hil: no libvirt host of {hil_config.source} is reachable ({len(lines)} probed, each named "
            "above): start libvirtd on one of them or fix hosts in hil.toml"
        )
    config.stash[HOSTS_KEY] = reachable
    if workerinput is None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(HostsToWorkers(reachable), "hil-hosts-to-workers")


class HostsToWorkers:
    """On the xdist controller: hand each worker the hosts probed here."""

    def __init__(self, hosts: list[HostConfig]):
        self.hosts = hosts

    def pytest_configure_node(self, node) -> None:
        node.workerinput[WORKERINPUT_KEY] = [dataclasses.asdict(h) for h in self.hosts]


def reachable_hosts(config: pytest.Config) -> list[HostConfig]:
    """This run's reachable hosts, in the order ``hosts`` lists them."""
    hosts = config.stash.get(HOSTS_KEY, None)
    if hosts is None:
        hosts = config._hil_config.host_list()  # type: ignore[attr-defined]
    return hosts


def worker_index(config: pytest.Config) -> int:
    """The xdist worker's number (``gw3``: 3); 0 without xdist."""
    workerid = getattr(config, "workerinput", {}).get("workerid", "")
    m = re.fullmatch(r"gw(\d+)", workerid)
    return int(m.group(1)) if m else 0


def hosts_for(config: pytest.Config) -> list[HostConfig]:
    """This process's hosts in its order of preference: its own first, then the fail-overs."""
    return assign(worker_index(config), reachable_hosts(config))


@pytest.fixture(scope="session")
def hil_hosts(pytestconfig) -> list[HostConfig]:
    """This process's libvirt hosts, its own first (spread by weight), then the others for
    fail-over (see :func:`hil.hosts.placement.assign`)."""
    return hosts_for(pytestconfig)
