"""Several libvirt hosts (issue 16): ``hosts`` in hil.toml, probing, placement by weight, and
the pytest side (``-n auto`` sized to the hosts, each worker's ``hil_hosts``).

The only unreachable host these tests use is a closed port on this machine
(``qemu+tcp://127.0.0.1:1/system``: refused at once), never another address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

from hil.config import HostConfig, load_config
from hil.errors import ConfigError
from hil.hosts.placement import assign, capacity, controller_address, host_address, probe
from hil.hosts.pytest_hosts import needs_probe

CLOSED = "qemu+tcp://127.0.0.1:1/system"  # nobody listens on port 1: connection refused, fast


def write(tmp_path, text):
    p = tmp_path / "hil.toml"
    p.write_text(text)
    return p


# --- configuration --------------------------------------------------------------------------


def test_hosts_default_to_libvirt_uri_alone(tmp_path):
    cfg = load_config(write(tmp_path, 'libvirt_uri = "qemu:///session"\n'))
    assert cfg.hosts == [] and cfg.host_list() == [HostConfig("qemu:///session")]


def test_hosts_strings_and_tables(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            'libvirt_uri = "qemu:///session"\n'
            'hosts = ["qemu:///system", {uri = "qemu+tcp://lab2:16600/system", weight = 3, '
            'controller_address = "10.0.0.1"}, {uri = "qemu+ssh://hil@lab3/system"}]\n',
        )
    )
    assert cfg.host_list() == [  # hosts overrides libvirt_uri
        HostConfig("qemu:///system"),
        HostConfig("qemu+tcp://lab2:16600/system", 3, "10.0.0.1"),
        HostConfig("qemu+ssh://hil@lab3/system"),
    ]


def test_hosts_in_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.hil]\nhosts = ["qemu+tls://lab2/system"]\n')
    assert load_config(start=tmp_path).host_list() == [HostConfig("qemu+tls://lab2/system")]


@pytest.mark.parametrize(
    "toml, problem, fix",
    [
        (
            'hosts = "qemu:///system"',
            "hosts must be a list of libvirt URIs or tables",
            'for example hosts = ["qemu:///system", {uri = "qemu+tcp://lab2/system", weight = 2}]',
        ),
        ("hosts = [1]", "hosts[0] is int, not a URI string or a table", "for example hosts = ["),
        (
            'hosts = [{uri = "qemu:///system", wieght = 2}]',
            "unknown key 'wieght' in hosts[0]",
            "known keys there: controller_address, uri, weight",
        ),
        (
            'hosts = ["qemu:///system", {uri = "qemu+tcp://lab2/system", weight = 0}]',
            "weight in hosts[1] must be an int >= 1, not 0",
            "weight is the host's share of the workers, for example weight = 2",
        ),
        ('hosts = [{uri = "qemu:///system", weight = 1.5}]', "weight in hosts[0] must be an int >= 1, not 1.5", ""),
        ('hosts = [{uri = "qemu:///system", weight = true}]', "weight in hosts[0] must be an int >= 1, not True", ""),
        ("hosts = [{uri = 7}]", "uri in hosts[0] must be str, not int", 'for example uri = "qemu+tcp://lab2/system"'),
        ("hosts = [{weight = 2}]", "hosts[0] has no uri", 'write {uri = "qemu+tcp://HOST/system", weight = 1}'),
        (
            'hosts = ["http://lab2/system"]',
            "hosts[0] = 'http://lab2/system': the scheme 'http' is not one of qemu, qemu+tcp, qemu+ssh, qemu+tls, qemu+unix",
            "write qemu:///system, qemu+tcp://HOST/system, qemu+tls://HOST/system or qemu+ssh://USER@HOST/system",
        ),
        (
            'hosts = ["lab2"]',
            "hosts[0] = 'lab2': the scheme '(none)' is not one of qemu,",
            "write qemu:///system",
        ),
        (
            'hosts = ["qemu+tcp://lab2/"]',
            "hosts[0] = 'qemu+tcp://lab2/': the path '/' is not /system or /session",
            "end the URI with /system (or /session)",
        ),
        ('hosts = ["qemu+tcp:///system"]', "hosts[0] = 'qemu+tcp:///system' names no host", "write qemu:///system"),
        ('hosts = ["qemu+tcp://lab2:x/system"]', "hosts[0] = 'qemu+tcp://lab2:x/system' is not a valid URI", ""),
        (
            'hosts = ["qemu+unix://lab2/system"]',
            "hosts[0] = 'qemu+unix://lab2/system': qemu+unix reaches this machine only; it takes no host",
            "",
        ),
        (
            'hosts = ["qemu+tcp://Lab2/system", {uri = "qemu+tcp://lab2:16509/system", weight = 2}]',
            "hosts[1] = 'qemu+tcp://lab2:16509/system' is the same host as hosts[0]",
            "list each host once; a larger weight gives it more workers",
        ),
        (
            'hosts = ["qemu:///system", "qemu+unix:///system"]',
            "hosts[1] = 'qemu+unix:///system' is the same host as hosts[0]",
            "",
        ),
    ],
)
def test_hosts_errors_name_the_problem_and_the_fix(tmp_path, toml, problem, fix):
    p = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.problem == f"{p}: {problem}" or e.value.problem.startswith(f"{p}: {problem}"), e.value.problem
    assert "\n" not in e.value.problem and (e.value.fix or "").startswith(fix), e.value.fix


# --- URIs, addresses -------------------------------------------------------------------------


def test_host_address_and_the_controller_address():
    assert host_address("qemu:///system") == "" and controller_address("qemu:///system") == ""
    assert host_address("qemu+ssh://hil@lab2:2222/system") == "lab2"
    assert host_address("qemu+tcp://[fd00::2]/system") == "fd00::2"
    # the source address towards the host: loopback towards loopback (no packet is sent)
    assert controller_address(CLOSED) == "127.0.0.1"
    assert controller_address(HostConfig(CLOSED, controller_address="10.0.0.1")) == "10.0.0.1"


def test_needs_probe_only_for_several_or_remote_hosts():
    assert not needs_probe([HostConfig("qemu:///system")])
    assert needs_probe([HostConfig(CLOSED)])
    assert needs_probe([HostConfig("qemu:///system"), HostConfig("qemu:///session")])


# --- placement ------------------------------------------------------------------------------


def _spread(weights: list[int], workers: int) -> list[str]:
    hosts = [HostConfig(f"qemu+tcp://h{i}/system", w) for i, w in enumerate(weights)]
    return [host_address(assign(k, hosts)[0].uri) for k in range(workers)]


def test_assign_spreads_workers_by_weight():
    assert _spread([1, 1], 2) == ["h0", "h1"]
    assert _spread([2, 1], 3) == ["h0", "h1", "h0"]
    assert _spread([1, 2], 3) == ["h1", "h0", "h1"]  # worker 0 gets the heaviest
    assert _spread([5], 3) == ["h0"] * 3
    picks = _spread([3, 2, 1], 12)  # twice round: exactly the weights, interleaved
    assert Counter(picks) == {"h0": 6, "h1": 4, "h2": 2}
    assert picks[:6] == picks[6:] and picks[:2] == ["h0", "h1"]
    assert Counter(_spread([3, 2, 1], 4)) == {"h0": 2, "h1": 1, "h2": 1}  # fewer workers: still spread


def test_assign_lists_the_other_hosts_for_fail_over():
    a, b, c = (HostConfig(f"qemu+tcp://{n}/system", w) for n, w in (("a", 1), ("b", 2), ("c", 1)))
    assert assign(0, [a, b, c]) == [b, a, c]
    assert assign(1, [a, b, c]) == [a, b, c]
    assert assign(2, [a, b, c]) == [c, a, b]
    assert assign(3, []) == []
    with pytest.raises(ValueError):
        assign(-1, [a])


def test_capacity_is_the_sum_of_weights():
    assert capacity([]) == 0
    assert capacity([HostConfig("qemu:///system", 2), HostConfig(CLOSED)]) == 3


# --- probing --------------------------------------------------------------------------------


def test_probe_leaves_out_an_unreachable_host_in_one_line():
    reachable, lines = probe([HostConfig(CLOSED, 4)], timeout_s=2)
    assert reachable == []
    assert lines == [
        f"kernel-hil: host {CLOSED} is unreachable (connection to 127.0.0.1:1 refused): left out of this run; "
        "start libvirtd there with --listen or fix hosts in hil.toml"
    ]


def test_probe_reaches_the_local_libvirtd():
    local = HostConfig("qemu:///system", 2)
    reachable, lines = probe([HostConfig(CLOSED), local])
    assert reachable == [local] and len(lines) == 1 and CLOSED in lines[0]


@pytest.mark.hil_linux
def test_probe_reaches_a_remote_host_and_finds_the_controller_address(second_libvirt_host):
    reachable, lines = probe([HostConfig(second_libvirt_host.uri, 2)])
    assert lines == []
    # the second host reaches this machine by the host end of its veth
    assert reachable == [HostConfig(second_libvirt_host.uri, 2, second_libvirt_host.host_addr)]


# --- the pytest side: an inner pytest session -----------------------------------------------

INNER = """
import json, os, pathlib

def test_hosts(hil_hosts, pytestconfig):
    worker = getattr(pytestconfig, "workerinput", {}).get("workerid", "master")
    out = pathlib.Path(os.environ["HIL_HOSTS_OUT"]) / f"{worker}.json"
    out.write_text(json.dumps([[h.uri, h.weight, h.controller_address] for h in hil_hosts]))
"""


def _inner(tmp_path, hosts_toml: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, list]]:
    (tmp_path / "hil.toml").write_text(hosts_toml)
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            f"--basetemp={tmp_path / 'bt'}",
            f"--hil-artifacts={tmp_path / 'artifacts'}",
            *args,
            "test_inner.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "HIL_HOSTS_OUT": str(out), "PYTEST_XDIST_AUTO_NUM_WORKERS": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_n_auto_runs_a_worker_per_weight_of_the_reachable_hosts(tmp_path):
    proc, seen = _inner(
        tmp_path,
        f'hosts = [{{uri = "qemu:///system", weight = 2}}, {{uri = "{CLOSED}", weight = 1}}]\n',
        "-n",
        "auto",
        "--dist",
        "each",  # every worker runs the test
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    unreachable = [line for line in proc.stderr.splitlines() if "is unreachable" in line]
    assert unreachable == [
        f"kernel-hil: host {CLOSED} is unreachable (connection to 127.0.0.1:1 refused): left out of this run; "
        "start libvirtd there with --listen or fix hosts in hil.toml"
    ], out
    assert "2 passed" in proc.stdout, out
    assert seen == {"gw0": [["qemu:///system", 2, ""]], "gw1": [["qemu:///system", 2, ""]]}, out


def test_no_reachable_host_is_a_usage_error_in_one_line(tmp_path):
    proc, seen = _inner(tmp_path, f'hosts = ["{CLOSED}"]\n')
    assert proc.returncode == 4 and seen == {}, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"kernel-hil: host {CLOSED} is unreachable (connection to 127.0.0.1:1 refused): left out of this run; "
        "start libvirtd there with --listen or fix hosts in hil.toml",
        f"ERROR: kernel-hil: no libvirt host of {tmp_path / 'hil.toml'} is reachable (1 probed, each named above): "
        "start libvirtd on one of them or fix hosts in hil.toml",
    ]


def test_without_xdist_the_process_takes_the_first_host(tmp_path):
    proc, seen = _inner(tmp_path, f'hosts = ["qemu:///system", "{CLOSED}"]\n', "-p", "no:xdist")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seen == {"master": [["qemu:///system", 1, ""]]}
    assert proc.stderr.count("is unreachable") == 1


@pytest.mark.hil_linux
def test_workers_prefer_their_own_host_then_fail_over(tmp_path, second_libvirt_host):
    remote = second_libvirt_host.uri
    proc, seen = _inner(
        tmp_path,
        f'hosts = ["qemu:///system", {{uri = "{remote}", weight = 2}}]\n',
        "-n",
        "auto",
        "--dist",
        "each",
    )
    assert proc.returncode == 0 and "is unreachable" not in proc.stderr, proc.stdout + proc.stderr
    local, far = ["qemu:///system", 1, ""], [remote, 2, second_libvirt_host.host_addr]
    assert seen == {"gw0": [far, local], "gw1": [local, far], "gw2": [far, local]}


def test_a_dead_workers_guests_are_swept_on_every_host(monkeypatch, tmp_path) -> None:
    """The controller sweeps each reachable host; one that fails is one line, the rest go on."""
    from types import SimpleNamespace

    import hil.paths
    import hil.provision.sweep
    from hil.hosts.pytest_hosts import HOSTS_KEY
    from hil.provision.sweep import SweepResult
    from hil.pytest_plugin import DeadWorkerSweeper

    calls: list[tuple] = []

    def fake_sweep(conn, runtime_root, include_kept=False, wine_run_dir=None):
        calls.append((conn.getURI() if conn is not None else None, runtime_root))
        return SweepResult(domains=["hil-dead-1"] if conn is not None else [], dirs=[] if conn else ["d"])

    monkeypatch.setattr(hil.provision.sweep, "sweep", fake_sweep)
    monkeypatch.setattr(hil.paths, "runtime_dir", lambda: tmp_path)
    lines: list[str] = []
    config = SimpleNamespace(
        stash=pytest.Stash(),
        pluginmanager=SimpleNamespace(get_plugin=lambda name: SimpleNamespace(write_line=lines.append)),
    )
    config.stash[HOSTS_KEY] = [HostConfig(CLOSED), HostConfig("qemu:///system")]
    node = SimpleNamespace(gateway=SimpleNamespace(id="gw1"))
    DeadWorkerSweeper(config).pytest_testnodedown(node, error="crashed")
    assert lines == [
        f"kernel-hil: worker gw1 died; its guests on {CLOSED} could not be swept: connection to 127.0.0.1:1 refused",
        "kernel-hil: worker gw1 died; removed its guests hil-dead-1 and 1 runtime folder(s)",
    ]
    assert calls[0][0] == "qemu:///system" and calls[-1] == (None, tmp_path)
