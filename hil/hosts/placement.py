"""Which libvirt hosts a run uses and which worker runs where (issue 16).

- :func:`probe`: the hosts of ``hosts`` that answer now, and one line for each that does not
  (it is left out of the run).  A remote host is first reached by a plain TCP connect bounded by
  the timeout (``libvirt.open`` may hang far longer on an address that drops packets), then by
  libvirt itself; all hosts at once, one thread each.
- :func:`assign`: a worker's hosts in its order of preference: its own host first, chosen by
  smooth weighted round robin over the reachable hosts (so the workers spread by weight), then
  the others, in the order ``hosts`` lists them, for fail-over when its host is lost mid-run.
- :func:`capacity`: how many workers the hosts run together (``-n auto``).
- :func:`host_address`, :func:`controller_address`: the host named by a URI, and the address
  of this machine as that host reaches it (for guests that call back, e.g. the collector).
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hil.config import HostConfig
from hil.errors import EnvironmentProblem

TCP_PORT = 16509  # libvirtd --listen, qemu+tcp
TLS_PORT = 16514  # qemu+tls, and qemu://HOST
SSH_PORT = 22
LOCAL_OPEN_S = 15.0  # a local qemu:///system may have to start its daemons first (daemons.py)


def host_address(uri: str) -> str:
    """The host name or IP address in ``uri``; "" for this machine (``qemu:///system``)."""
    return urlsplit(uri).hostname or ""


def _port(uri: str) -> int:
    parts = urlsplit(uri)
    if parts.port:
        return parts.port
    scheme = parts.scheme.lower()
    if scheme == "qemu+ssh":
        return SSH_PORT
    return TCP_PORT if scheme == "qemu+tcp" else TLS_PORT


def _fix(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "qemu+ssh":
        return f"check that `ssh {urlsplit(uri).netloc}` logs in without a prompt and libvirtd runs there, or fix hosts in hil.toml"
    if scheme == "qemu+tcp":
        return "start libvirtd there with --listen or fix hosts in hil.toml"
    return "start libvirtd there with --listen and its TLS certificates, or fix hosts in hil.toml"


def open_host(uri: str, timeout_s: float = 5.0):
    """A libvirt connection to ``uri``, or :class:`EnvironmentProblem` naming why not.

    Local URIs go through :func:`hil.provision.daemons.open_connection` (which starts the
    system daemons where nobody runs them); a remote one is reached by TCP first, within
    ``timeout_s``, then opened with ``libvirt.open``.  The caller closes the connection.
    """
    from hil.provision.daemons import open_connection

    address = host_address(uri)
    if not address:
        return open_connection(uri)
    port = _port(uri)
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise EnvironmentProblem(f"connect to {address}:{port} timed out after {timeout_s:g} s", _fix(uri)) from None
    except ConnectionRefusedError:
        raise EnvironmentProblem(f"connection to {address}:{port} refused", _fix(uri)) from None
    except socket.gaierror as exc:
        raise EnvironmentProblem(f"cannot resolve {address}: {exc.strerror}", "fix hosts in hil.toml") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot connect to {address}:{port}: {exc.strerror or exc}", _fix(uri)) from None
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors arrive as exceptions, not on stderr
    try:
        return libvirt.open(_no_prompt(uri))
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(f"libvirt: {exc.get_error_message()}", _fix(uri)) from None


def _no_prompt(uri: str) -> str:
    """qemu+ssh: never ask for a password on the terminal (``no_tty=1``); workers have none."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "qemu+ssh":
        return uri
    query = dict(parse_qsl(parts.query))
    query.setdefault("no_tty", "1")
    return urlunsplit(parts._replace(query=urlencode(query)))


def unreachable_line(uri: str, problem: str, fix: str | None) -> str:
    return f"kernel-hil: host {uri} is unreachable ({problem}): left out of this run; {fix or 'fix hosts in hil.toml'}"


def probe(hosts: list[HostConfig], timeout_s: float = 5.0) -> tuple[list[HostConfig], list[str]]:
    """The hosts that answer (in the given order, each with its ``controller_address`` found
    where the configuration gives none) and one line per host that does not.

    All hosts are probed at once.  A remote host gets ``timeout_s`` for the TCP connect and as
    long again for libvirt's handshake; a local one as long as starting its daemons may take.
    A probe still running then is abandoned (its thread closes what it opens).
    """
    outcome: dict[int, HostConfig | str] = {}
    lock = threading.Lock()

    def one(i: int, host: HostConfig) -> None:
        result: HostConfig | str
        try:
            conn = open_host(host.uri, timeout_s)
            with contextlib.suppress(Exception):  # a close that fails changes nothing
                conn.close()
            result = dataclasses.replace(host, controller_address=controller_address(host))
        except EnvironmentProblem as exc:
            result = unreachable_line(host.uri, exc.problem, exc.fix)
        except Exception as exc:  # any other surprise is this host's problem, not the run's
            result = unreachable_line(host.uri, f"{type(exc).__name__}: {exc}", None)
        with lock:
            outcome.setdefault(i, result)

    start = time.monotonic()
    threads = []
    for i, host in enumerate(hosts):
        t = threading.Thread(target=one, args=(i, host), name=f"hil-probe-{i}", daemon=True)
        t.start()
        threads.append((i, host, t))
    for i, host, t in threads:
        limit = 2 * timeout_s + (0.0 if host_address(host.uri) else LOCAL_OPEN_S)
        t.join(max(0.0, start + limit - time.monotonic()))
        with lock:
            outcome.setdefault(
                i, unreachable_line(host.uri, f"libvirt did not answer within {limit:g} s", _fix(host.uri))
            )
    reachable = [r for _, r in sorted(outcome.items()) if isinstance(r, HostConfig)]
    lines = [r for _, r in sorted(outcome.items()) if isinstance(r, str)]
    return reachable, lines


def capacity(hosts: list[HostConfig]) -> int:
    """How many workers the hosts run together: the sum of their weights."""
    return sum(h.weight for h in hosts)


def assign(worker_index: int, hosts: list[HostConfig]) -> list[HostConfig]:
    """Worker ``worker_index``'s hosts, its own first, then the others for fail-over.

    Its own host is the ``worker_index``-th pick (from 0) of smooth weighted round robin over
    ``hosts``: each pick adds every host's weight to its score, takes the highest score (the
    first listed on a tie) and takes the total weight off the winner.  Worker 0 gets the
    heaviest host; weights 2 and 1 give workers 0, 1, 2 the hosts A, B, A; the picks repeat
    every ``capacity(hosts)`` workers.
    """
    if worker_index < 0:
        raise ValueError(f"worker_index must be >= 0, not {worker_index}")
    if not hosts:
        return []
    total = capacity(hosts)
    score = [0] * len(hosts)
    chosen = 0
    for _ in range(worker_index % total + 1):
        for i, h in enumerate(hosts):
            score[i] += h.weight
        chosen = max(range(len(hosts)), key=score.__getitem__)  # max keeps the first on a tie
        score[chosen] -= total
    return [hosts[chosen], *(h for i, h in enumerate(hosts) if i != chosen)]


def controller_address(host: HostConfig | str) -> str:
    """The address of this machine that the host reaches it by: "" for a local URI; the
    configured ``controller_address`` where ``host`` is a :class:`HostConfig` that gives one;
    else the source address this machine uses towards the host (a UDP socket ``connect()``ed
    to it picks the route; no packet is sent)."""
    if isinstance(host, HostConfig):
        if host.controller_address:
            return host.controller_address
        uri = host.uri
    else:
        uri = host
    address = host_address(uri)
    if not address:
        return ""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(address, _port(uri), type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(sockaddr)
            return str(s.getsockname()[0])
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot find the address by which {uri} reaches this machine: {exc.strerror or exc}",
            "set controller_address for that host in hosts of hil.toml",
        ) from None
