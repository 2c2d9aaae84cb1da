"""A simulated second libvirt host on this machine, reached by a remote URI (issue 16).

Test infrastructure, not product code: it stands in for a lab's second machine.  What it builds::

    host netns                               netns hilh2-<pid>-<n> (+ private mount, UTS, PID ns)
    h2h<pid>-<n> 10.254.0.N+1/30 <-- veth --> h2g<pid>-<n> 10.254.0.N+2/30, lo
                                              PID 1: this file's ``init`` (a reaper)
                                                virtlogd   (its own /run/libvirt/virtlogd-sock)
                                                libvirtd --listen  tcp 10.254.0.N+2:16509, no auth

Inside its mount namespace the daemons see the session's state folder
``/tmp/hil-second-host/<name>/{run,lib,cache,log,etc}`` bind-mounted over ``/run/libvirt``,
``/var/lib/libvirt``, ``/var/cache/libvirt``, ``/var/log/libvirt`` and ``/etc/libvirt``, so
the two daemons share no state; ``/tmp``, ``/work``, ``/root`` and the kernel-hil cache are
hidden under empty tmpfs, so a path that exists only on *this* host fails there as it would
on a real second machine.  The netns has no default route and this host does not forward
(``ip_forward`` is 0): the second host can reach only its own loopback and the host end of
the veth.  Its own sysfs makes libvirt there list its own interfaces (the cgroup mounts stay
this host's), and its qemu.conf sets ``cgroup_controllers = [ ]`` so its guests never enter
this host's cgroup tree (shared with the main libvirtd, and left behind by a killed host).
The state folders get the skeleton Debian's packages install (``/var/log/libvirt/qemu``,
``/var/lib/libvirt/qemu/channel/target``...: libvirt does not create them all) and a copy of
QEMU's capabilities cache (no second probe).  Images reach it as they would reach a real
remote host: through the storage API (:func:`images_pool`, :func:`upload_volume`).

Lifetime: the session's ``setpriv --pdeathsig KILL`` makes ``unshare`` die with the test
process, ``unshare --kill-child`` kills PID 1 of the new PID namespace, and the kernel then
kills every process in it (libvirtd, virtlogd, QEMU).  What a killed session leaves behind
(the netns with its veth, the state folder) is removed by the next one
(:func:`sweep_dead_hosts`), found by the ``owner.json`` that names a process no longer alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hil.provision.owner import process_start_time

BASE_DIR = Path("/tmp/hil-second-host")
SUBNET_POOL = ipaddress.IPv4Network("10.254.0.0/24")  # carved into /30s, the first free one wins
TCP_PORT = 16509
# libvirt's per-host state, each replaced by a folder of the session's own inside the namespace
STATE_MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
}
# paths of this host that a real second machine would not have: empty there
HIDDEN_PATHS = ("/tmp", "/work", "/root", "/var/cache/kernel-hil")

LIBVIRTD_CONF = """\
# the second host of kernel-hil's tests (tests/hosts/second_host.py)
listen_tls = 0
listen_tcp = 1
listen_addr = "{addr}"
tcp_port = "{port}"
auth_tcp = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""
# This host's cgroup tree (/sys/fs/cgroup/*/machine) is shared with the main libvirtd, and a
# guest's cgroups outlive a killed second host (empty, but left behind); a real second machine
# has its own tree, so this one uses none
QEMU_CONF_EXTRA = """
# the second host of kernel-hil's tests (tests/hosts/second_host.py)
cgroup_controllers = [ ]
"""


class SecondHostError(RuntimeError):
    pass


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SecondHostError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _alive(owner: dict[str, object]) -> bool:
    """Is the session that started this host still running? A pid plus its start time names
    one process even after the pid is reused (the leak sweep's own test)."""
    pid = owner.get("pid")
    return isinstance(pid, int) and process_start_time(pid) == owner.get("start_time")


@dataclass
class SecondHost:
    """A running second libvirt host: its URI, addresses, and where its state is on this host."""

    name: str
    host_addr: str  # this host's end of the veth
    addr: str  # the second host's address, where libvirtd listens
    state_dir: Path
    hostname: str
    veth_host: str
    veth_inside: str
    subnet: str  # the veth pair's /30
    process: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.addr}/system"

    def host_path(self, inside: str) -> Path:
        """Where a path under one of the second host's state folders (``/var/lib/libvirt/...``)
        is on this host, for a test to put files there or read its logs."""
        for key, mount in STATE_MOUNTS.items():
            if inside == mount or inside.startswith(mount + "/"):
                return self.state_dir / key / os.path.relpath(inside, mount)
        raise ValueError(f"{inside} is not under one of the second host's own folders {list(STATE_MOUNTS.values())}")

    def init_pid(self) -> int | None:
        """The host pid of the namespace's PID 1 (the child of ``unshare``)."""
        if self.process is None:
            return None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def pids(self) -> list[int]:
        """Every process in the second host's network namespace (as this host numbers them)."""
        out = _run("ip", "netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for rel in ("init.log", "log/libvirtd.log"):
            path = self.state_dir / rel
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {rel}\n" + "\n".join(text))
        return "\n".join(parts)


def free_subnet(pool: ipaddress.IPv4Network = SUBNET_POOL) -> ipaddress.IPv4Network:
    """The first /30 of ``pool`` that no address or route of this host touches (the default
    route aside): another session's second host holds its /30 as a host address."""
    addrs = json.loads(_run("ip", "-j", "-4", "addr").stdout)
    used = [
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in addrs
        for a in link.get("addr_info", [])
    ]
    routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout)
    for r in routes:
        dst = r.get("dst", "default")
        if dst != "default" and r.get("type", "unicast") == "unicast":
            used.append(ipaddress.ip_network(dst, strict=False))
    for net in pool.subnets(new_prefix=30):
        if not any(net.overlaps(u) for u in used):
            return net
    raise SecondHostError(f"no free /30 left in {pool}")


def sweep_dead_hosts(base: Path = BASE_DIR) -> list[str]:
    """Remove what sessions that died left: their netns (with the veth) and state folders."""
    removed: list[str] = []
    if not base.is_dir():
        return removed
    for d in sorted(base.iterdir()):
        try:
            owner = json.loads((d / "owner.json").read_text())
        except (OSError, ValueError):
            owner = {}
        if not d.is_dir() or _alive(owner):
            continue
        name = d.name
        if Path(f"/run/netns/{name}").exists():
            for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            veth = owner.get("veth_host")
            if isinstance(veth, str):
                _run("ip", "link", "del", veth, check=False)
            _run("ip", "netns", "del", name, check=False)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(name)
    return removed


PACKAGES = ("libvirt-daemon", "libvirt-daemon-system", "libvirt-daemon-driver-qemu")


def _package_dirs() -> list[Path]:
    """The folders Debian's libvirt packages install under libvirt's state folders (a fresh
    host has them: libvirt creates some, not all, e.g. not /var/log/libvirt/qemu, and QEMU's
    agent socket goes to /var/lib/libvirt/qemu/channel/target, owned by libvirt-qemu)."""
    out = _run("dpkg", "-L", *PACKAGES, check=False).stdout.splitlines()
    roots = tuple(m for k, m in STATE_MOUNTS.items() if k != "etc")
    return sorted({Path(p) for p in out if p.startswith(roots) and os.path.isdir(p)})


def _prepare_state(host: SecondHost) -> None:
    sd = host.state_dir
    for key in STATE_MOUNTS:
        (sd / key).mkdir(parents=True, exist_ok=True)
        (sd / key).chmod(0o755)  # QEMU (libvirt-qemu) traverses /var/lib/libvirt/..., /run/libvirt/...
    for d in _package_dirs():  # the package's skeleton, with its modes and owners
        st = d.stat()
        target = host.host_path(str(d))
        target.mkdir(parents=True, exist_ok=True)
        os.chown(target, st.st_uid, st.st_gid)
        target.chmod(st.st_mode & 0o7777)
    etc = sd / "etc"
    # the host's libvirt configuration as it comes from Debian, without its networks (the
    # `default` NAT network must never exist there) and without its secrets
    for item in Path("/etc/libvirt").iterdir():
        if item.is_file():
            shutil.copy2(item, etc / item.name)
    (etc / "qemu").mkdir(exist_ok=True)
    (etc / "secrets").mkdir(mode=0o700, exist_ok=True)
    (etc / "libvirtd.conf").write_text(LIBVIRTD_CONF.format(addr=host.addr, port=TCP_PORT))
    with open(etc / "qemu.conf", "a") as qemu_conf:
        qemu_conf.write(QEMU_CONF_EXTRA)
    # QEMU's capabilities, probed by the first daemon: valid here too (same binaries), saves
    # the second daemon its own probe
    caps = Path("/var/cache/libvirt/qemu/capabilities")
    if caps.is_dir():
        shutil.copytree(caps, sd / "cache" / "qemu" / "capabilities")


def _network(host: SecondHost, net: ipaddress.IPv4Network) -> None:
    plen = net.prefixlen
    _run("ip", "netns", "add", host.name)
    _run("ip", "link", "add", host.veth_host, "type", "veth", "peer", "name", host.veth_inside, "netns", host.name)
    _run("ip", "addr", "add", f"{host.host_addr}/{plen}", "dev", host.veth_host)
    _run("ip", "link", "set", host.veth_host, "up")
    _run("ip", "-n", host.name, "addr", "add", f"{host.addr}/{plen}", "dev", host.veth_inside)
    _run("ip", "-n", host.name, "link", "set", host.veth_inside, "up")
    _run("ip", "-n", host.name, "link", "set", "lo", "up")
    # IPv4 only: no IPv6 link-local chatter (router solicitations, DAD) even on the veth
    _run("sysctl", "-qw", f"net.ipv6.conf.{host.veth_host}.disable_ipv6=1", check=False)
    _run(
        "nsenter",
        f"--net=/run/netns/{host.name}",
        "--",
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        check=False,
    )


def _wait_listening(host: SecondHost, timeout: float) -> None:
    _check_routed_to_veth(host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert host.process is not None
        if host.process.poll() is not None:
            raise SecondHostError(
                f"the second host's daemons ended (exit {host.process.returncode})\n{host.log_tail()}"
            )
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect((host.addr, TCP_PORT))
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise SecondHostError(f"libvirtd did not listen on {host.addr}:{TCP_PORT} within {timeout:.0f}s\n{host.log_tail()}")


def _stop(host: SecondHost, timeout: float = 15.0) -> None:
    """SIGTERM to the namespace's PID 1 (it stops libvirtd, then virtlogd); SIGKILL after
    ``timeout``.  Once ``unshare`` is reaped, no process of the PID namespace is left."""
    proc = host.process
    if proc is None:
        return
    init = host.init_pid()
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        init = host.init_pid()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        proc.kill()
        proc.wait(10)


def _remove(host: SecondHost, keep_state: bool) -> None:
    _run("ip", "link", "del", host.veth_host, check=False)  # both ends, at once
    _run("ip", "netns", "del", host.name, check=False)
    if not keep_state:
        shutil.rmtree(host.state_dir, ignore_errors=True)


def _check_routed_to_veth(host: SecondHost) -> None:
    """Never connect to the second host's address unless this host routes it to our veth: any
    other route (the default one) would take the connection to somebody else."""
    route = json.loads(_run("ip", "-j", "route", "get", host.addr).stdout)
    if not route or route[0].get("dev") != host.veth_host:
        raise SecondHostError(f"{host.addr} is not routed to {host.veth_host} but {route}: not connecting there")


_counter = itertools.count()


@contextlib.contextmanager
def second_host(base: Path = BASE_DIR, timeout: float = 60.0, keep_state: bool = False) -> Iterator[SecondHost]:
    """Start a second libvirt host; stop it and remove every trace of it on exit."""
    if os.geteuid() != 0:
        raise SecondHostError("a second host needs root (network namespaces, mounts, libvirtd)")
    t0 = time.monotonic()
    base.mkdir(mode=0o755, exist_ok=True)
    base.chmod(0o755)
    # one session at a time picks its /30 and claims it (xdist workers start together)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sweep_dead_hosts(base)
        pid = os.getpid()
        n = next(_counter)
        net = free_subnet()
        host_ip, inside_ip = list(net.hosts())
        host = SecondHost(
            name=f"hilh2-{pid}-{n}",
            host_addr=str(host_ip),
            addr=str(inside_ip),
            state_dir=base / f"hilh2-{pid}-{n}",
            hostname=f"second-host-{pid}-{n}.hil.test",
            veth_host=f"h2h{pid}-{n}",  # interface names: 15 characters at most
            veth_inside=f"h2g{pid}-{n}",
            subnet=str(net),
        )
        host.state_dir.mkdir(mode=0o755)
        (host.state_dir / "owner.json").write_text(
            json.dumps(
                {"pid": pid, "start_time": process_start_time(pid), "veth_host": host.veth_host, "subnet": str(net)}
            )
        )
        try:
            _network(host, net)
        except BaseException:
            _remove(host, keep_state=False)
            raise
    try:
        _prepare_state(host)
        cmd = [
            "setpriv", "--pdeathsig", "KILL", "--",
            "nsenter", f"--net=/run/netns/{host.name}", "--",
            "unshare", "--mount", "--propagation", "private", "--uts", "--pid", "--fork",
            "--kill-child=KILL", "--mount-proc", "--",
            sys.executable, str(Path(__file__).resolve()), "init", str(host.state_dir), host.hostname,
        ]  # fmt: skip
        with open(host.state_dir / "init.log", "ab") as log:
            host.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _wait_listening(host, timeout)
        host.timings["setup_s"] = time.monotonic() - t0
        yield host
    finally:
        t1 = time.monotonic()
        _stop(host)
        _remove(host, keep_state)
        host.timings["teardown_s"] = time.monotonic() - t1


IMAGES_DIR = "/var/lib/libvirt/images"


def images_pool(conn, name: str):
    """A transient ``dir`` pool over the second host's ``/var/lib/libvirt/images`` (built if
    missing); it goes with the connection's host, its volumes stay until deleted."""
    import libvirt

    xml = f"<pool type='dir'><name>{name}</name><target><path>{IMAGES_DIR}</path></target></pool>"
    return conn.storagePoolCreateXML(xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)


def upload_volume(conn, pool, name: str, source: Path | bytes, chunk: int = 1 << 20):
    """Copy ``source`` (a file of this host, or bytes) into a new volume ``name`` of ``pool``
    through a libvirt stream: how a file reaches a host that shares no file system with us.
    The volume is created ``raw`` (libvirt stores the bytes as they are: a qcow2 file stays one)."""
    import io

    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    vol = pool.createXML(
        f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
        "<target><format type='raw'/><permissions><mode>0644</mode></permissions></target></volume>",
        0,
    )
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as src:
        stream.sendAll(lambda _st, nbytes, f: f.read(min(nbytes, chunk)), src)
    stream.finish()
    return vol


# ---------------------------------------------------------------------------------------------
# Inside: PID 1 of the second host's PID namespace, in its netns and private mount namespace.


def _signal_child(child: subprocess.Popen[bytes] | None, sig: int) -> None:
    # os.kill, not Popen.terminate: that polls, and may reap a child the loop below waits for
    if child is not None and child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, sig)


def _init(state_dir: Path, hostname: str) -> int:
    """Mount the host's own state over libvirt's folders, hide this host's private paths,
    then run virtlogd and libvirtd in the foreground and reap everything until they end."""
    os.chdir("/")
    for key, mount in STATE_MOUNTS.items():
        subprocess.run(["mount", "--bind", str(state_dir / key), mount], check=True)
    for path in HIDDEN_PATHS:
        if os.path.isdir(path):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755,size=64m", "hil-hidden", path], check=True)
    # its own /sys, so that /sys/class/net lists its own interfaces (lo and its veth end), not
    # this host's (libvirt's node devices come from there); the cgroup mounts stay this host's
    os.mkdir("/tmp/.cgroup")  # /tmp is its private tmpfs by now
    subprocess.run(["mount", "--rbind", "/sys/fs/cgroup", "/tmp/.cgroup"], check=True)
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    subprocess.run(["mount", "--move", "/tmp/.cgroup", "/sys/fs/cgroup"], check=True)
    os.rmdir("/tmp/.cgroup")
    socket.sethostname(hostname)

    stopping = False
    children: dict[str, subprocess.Popen[bytes]] = {}

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        _signal_child(children.get("libvirtd"), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    children["virtlogd"] = subprocess.Popen(["/usr/sbin/virtlogd", "-p", "/run/libvirt/virtlogd.pid"])
    deadline = time.monotonic() + 10
    while not os.path.exists("/run/libvirt/virtlogd-sock") and time.monotonic() < deadline:
        time.sleep(0.02)
    children["libvirtd"] = subprocess.Popen(["/usr/sbin/libvirtd", "--listen", "-p", "/run/libvirt/libvirtd.pid"])
    print(
        f"second host {hostname}: virtlogd {children['virtlogd'].pid}, libvirtd {children['libvirtd'].pid}", flush=True
    )
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        for name, child in children.items():
            if child.pid == pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                print(f"{name} ended: {child.returncode}", flush=True)
        if children["libvirtd"].returncode is not None and children["virtlogd"].returncode is None:
            if not stopping:
                print("libvirtd ended on its own", flush=True)
            _signal_child(children["virtlogd"], signal.SIGTERM)
        if all(c.returncode is not None for c in children.values()):
            return 0 if stopping else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "init":
        sys.exit(_init(Path(sys.argv[2]), sys.argv[3]))
    print(
        "usage: second_host.py init STATE_DIR HOSTNAME (run by second_host(), inside its namespaces)", file=sys.stderr
    )
    sys.exit(2)
