"""A second libvirt host reached by a remote URI (issue 16): its own daemon, state and network.

The second host is simulated on this machine (second_host.py): a network namespace with a
veth pair, a private mount namespace with libvirt's folders of its own, its own virtlogd and
libvirtd listening on the veth address.  These tests prove it is a separate host as libvirt
sees it, and that nothing of it survives its session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from hil.provision.domain_xml import domain_xml
from hil.provision.owner import DOMAIN_PREFIX, Owner
from hil.provision.spec import GuestSpec
from hosts.second_host import (
    HIDDEN_PATHS,
    IMAGES_DIR,
    STATE_MOUNTS,
    TCP_PORT,
    SecondHost,
    second_host,
    sweep_dead_hosts,
    upload_volume,
)

pytestmark = pytest.mark.hil_linux

HERE = Path(__file__).resolve().parent


def _inactive_domain_xml(name: str, disk: str) -> str:
    """A domain built by the framework's own builder, owned by this session (the leak sweep
    removes it if we die): defined only, never started, so no QEMU runs."""
    spec = GuestSpec(
        name=name,
        disk=Path(disk),
        console_log=Path("/var/log/libvirt/qemu") / f"{name}.console.log",
        owner=Owner.current().as_dict(),
        uuid=str(uuid.uuid4()),
    )
    return domain_xml(spec)


def _in_netns(host: SecondHost, *cmd: str) -> str:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.name}", "--", *cmd], capture_output=True, text=True, check=True
    ).stdout


def test_the_second_host_answers_on_its_remote_uri(second_libvirt_host, second_conn, main_conn, record_property):
    host = second_libvirt_host
    assert host.uri == f"qemu+tcp://{host.addr}/system"
    assert second_conn.getURI() == host.uri
    assert second_conn.getHostname() == host.hostname  # its own UTS namespace
    assert main_conn.getHostname() != host.hostname
    assert second_conn.getLibVersion() >= 9_000_000
    assert second_conn.getLibVersion() == main_conn.getLibVersion()  # the same binaries
    assert second_conn.getType() == "QEMU"
    assert second_conn.isAlive()
    record_property("second_host_setup_s", f"{host.timings['setup_s']:.2f}")


def test_a_second_connection_opens_and_the_host_starts_empty(second_libvirt_host):
    conn = libvirt.open(second_libvirt_host.uri)
    try:
        assert conn.listAllDomains() == []
        assert conn.numOfDomains() == 0 and conn.numOfDefinedDomains() == 0
        assert conn.listAllNetworks() == []  # no `default` NAT network there, ever
    finally:
        conn.close()


def test_it_listens_only_on_its_veth_address_and_routes_nowhere_else(second_libvirt_host):
    host = second_libvirt_host
    listening = {line.split()[3] for line in _in_netns(host, "ss", "-Hltn").splitlines()}
    assert listening == {f"{host.addr}:{TCP_PORT}"}
    routes = _in_netns(host, "ip", "-4", "route", "show", "table", "all").splitlines()
    assert not [r for r in routes if r.startswith("default")]  # no way out but the veth
    assert [r.split()[:3] for r in routes if not r.startswith(("local ", "broadcast "))] == [
        [host.subnet, "dev", host.veth_inside]
    ]
    assert _in_netns(host, "ip", "-6", "route", "show", "table", "all").strip() == ""  # no IPv6 at all
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"  # this host forwards nothing


def test_its_node_devices_are_its_own_interfaces(second_libvirt_host, second_conn):
    """Its own /sys: libvirt there lists lo and its veth end, none of this host's NICs."""
    names = [d.name() for d in second_conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_NET)]
    ifaces = sorted(
        ET.fromstring(second_conn.nodeDeviceLookupByName(n).XMLDesc(0)).findtext("capability/interface") or ""
        for n in names
    )
    assert ifaces == sorted(["lo", second_libvirt_host.veth_inside])


def test_the_two_hosts_share_no_domains(second_conn, main_conn):
    """A domain defined on one host is unknown to the other, in both directions; the main
    host's guests (running or not) do not appear on the second."""
    pid = os.getpid()
    on_main = main_conn.defineXML(
        _inactive_domain_xml(f"{DOMAIN_PREFIX}h2probe-main-{pid}", "/var/lib/libvirt/images/none.qcow2")
    )
    on_second = second_conn.defineXML(
        _inactive_domain_xml(f"{DOMAIN_PREFIX}h2probe-second-{pid}", "/var/lib/libvirt/images/none.qcow2")
    )
    try:
        main_uuids = {d.UUIDString() for d in main_conn.listAllDomains()}
        second_uuids = {d.UUIDString() for d in second_conn.listAllDomains()}
        assert second_uuids == {on_second.UUIDString()}
        assert on_main.UUIDString() in main_uuids
        assert not main_uuids & second_uuids
        for conn, other in ((main_conn, on_second), (second_conn, on_main)):
            with pytest.raises(libvirt.libvirtError) as exc:
                conn.lookupByName(other.name())
            assert exc.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
            with pytest.raises(libvirt.libvirtError):
                conn.lookupByUUIDString(other.UUIDString())
    finally:
        on_main.undefine()
        on_second.undefine()
    assert second_conn.listAllDomains() == []


def test_its_state_is_its_own_and_this_hosts_private_paths_are_hidden(second_libvirt_host):
    host = second_libvirt_host
    # its daemons' sockets and pid files are in the session's folder, not in this host's /run/libvirt
    run = host.host_path("/run/libvirt")
    assert (run / "libvirt-sock").is_socket() and (run / "virtlogd-sock").is_socket()
    assert (run / "libvirtd.pid").exists() and (run / "qemu").is_dir()
    assert host.host_path("/var/log/libvirt/libvirtd.log").exists()
    assert not (run / "libvirt-sock").samefile("/run/libvirt/libvirt-sock")
    # seen from inside: each libvirt folder is the session's, and this host's private paths are empty
    init = host.init_pid()
    assert init is not None
    mounts = Path(f"/proc/{init}/mountinfo").read_text().splitlines()
    mounted = {line.split()[4]: line for line in mounts}
    for key, inside in STATE_MOUNTS.items():
        assert inside in mounted, f"{inside} is not a mount inside the second host"
        seen, ours = os.stat(f"/proc/{init}/root{inside}"), (host.state_dir / key).stat()
        assert (seen.st_dev, seen.st_ino) == (ours.st_dev, ours.st_ino)
    assert " - sysfs " in mounted["/sys"] and "/sys/fs/cgroup/cpu" in mounted  # its /sys, this host's cgroups
    for path in HIDDEN_PATHS:
        if os.path.isdir(path):
            assert " - tmpfs " in mounted[path]
            assert os.listdir(f"/proc/{init}/root{path}") == []


def test_a_volume_uploaded_through_the_storage_api_lands_on_the_second_host(
    second_libvirt_host, second_conn, second_images, main_conn
):
    """How images reach a host that shares no file system with us: a pool there, a volume, a
    stream.  It lands in the second host's own /var/lib/libvirt/images."""
    host = second_libvirt_host
    payload = os.urandom(3 * 1024 * 1024 + 17)
    vol = upload_volume(second_conn, second_images, "upload.raw", payload)
    try:
        assert vol.path() == f"{IMAGES_DIR}/upload.raw"
        assert host.host_path(vol.path()).read_bytes() == payload
        assert second_images.name() not in [p.name() for p in main_conn.listAllStoragePools()]
    finally:
        vol.delete(0)


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_finished_host_leaves_nothing_behind(second_libvirt_host, record_property):
    """A second one beside the session's (the next free /30), then nothing of it remains."""
    with second_host() as host:
        assert host.addr != second_libvirt_host.addr
        conn = libvirt.open(host.uri)
        assert conn.getHostname() == host.hostname
        conn.close()
        pids = host.pids()
        assert len(pids) >= 4  # unshare, the init, virtlogd, libvirtd
    assert all(_gone(p) for p in pids)
    assert not Path(f"/run/netns/{host.name}").exists()
    assert not Path(f"/sys/class/net/{host.veth_host}").exists()
    assert not host.state_dir.exists()
    # no route to its /30 is left (never connect there to check: without that route a
    # connection would leave through this host's default route, to somebody else)
    assert subprocess.run(["ip", "-4", "route", "show", host.subnet], capture_output=True, text=True).stdout == ""
    record_property("second_host_teardown_s", f"{host.timings['teardown_s']:.2f}")


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from hosts.second_host import second_host
with second_host() as host:
    print(host.name, host.veth_host, host.state_dir, *host.pids(), flush=True)
    time.sleep(600)
"""


def test_a_killed_session_takes_its_daemons_along_and_the_next_sweeps_the_rest(second_libvirt_host):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(tests=str(HERE.parent))],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        name, veth, state_dir, *pids = child.stdout.readline().split()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(int(p)) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(int(p)) for p in pids), "the second host's daemons outlived their session"
    # what only the next session can remove: the netns (with the veth) and the state folder
    assert Path(f"/run/netns/{name}").exists() and Path(state_dir).is_dir()
    assert json.loads((Path(state_dir) / "owner.json").read_text())["pid"] == child.pid
    assert name in sweep_dead_hosts()
    assert not Path(f"/run/netns/{name}").exists()
    assert not Path(f"/sys/class/net/{veth}").exists()
    assert not Path(state_dir).exists()
    assert Path(f"/run/netns/{second_libvirt_host.name}").exists()  # a live session's host stays
    assert second_libvirt_host.state_dir.is_dir()


def _qemu_pids(host: SecondHost) -> list[int]:
    return [p for p in host.pids() if Path(f"/proc/{p}/comm").read_text().strip().startswith("qemu-system")]


def _cgroup_dirs(name: str) -> list[Path]:
    return list(Path("/sys/fs/cgroup").glob(f"*/machine/qemu-*-{name}.libvirt-qemu"))


def test_a_guest_boots_on_the_second_host_from_images_uploaded_there(
    second_libvirt_host, second_conn, second_images, record_property
):
    """The embedded guest, uploaded through the storage API (the second host sees none of this
    host's cache), booted by the framework's own domain XML, answers its agent over the remote
    connection, reaches a listener on this host's veth address, and is gone after destroy."""
    from hil.images.linux_image import ensure_linux_image
    from hil.transport.qga import QgaTransport

    host = second_libvirt_host
    img = ensure_linux_image()
    assert img.kernel is not None and img.initrd is not None
    t0 = time.monotonic()
    uploaded = {
        "base.qcow2": img.disk,
        "vmlinuz": img.kernel,
        "initrd.img": img.initrd,
    }
    vols = {
        n: second_images.storageVolLookupByName(n)
        if n in second_images.listVolumes()
        else upload_volume(second_conn, second_images, n, src)
        for n, src in uploaded.items()
    }
    record_property("second_host_upload_s", f"{time.monotonic() - t0:.1f}")
    base_size = json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", str(img.disk)], capture_output=True, check=True).stdout
    )["virtual-size"]
    name = f"{DOMAIN_PREFIX}h2boot-{os.getpid()}"
    overlay = second_images.createXML(
        f"<volume><name>{name}.qcow2</name><capacity unit='bytes'>{base_size}</capacity>"
        "<target><format type='qcow2'/></target>"
        f"<backingStore><path>{vols['base.qcow2'].path()}</path><format type='qcow2'/></backingStore></volume>",
        0,
    )
    console = f"/var/log/libvirt/qemu/{name}.console.log"
    spec = GuestSpec(
        name=name,
        disk=Path(overlay.path()),
        console_log=Path(console),
        kernel=Path(vols["vmlinuz"].path()),
        initrd=Path(vols["initrd.img"].path()),
        cmdline=img.cmdline,
        accel="tcg",
        owner=Owner.current().as_dict(),
    )
    with socket.create_server((host.host_addr, 0)) as listener:
        listener.settimeout(60)
        port = listener.getsockname()[1]
        t1 = time.monotonic()
        dom = second_conn.createXML(domain_xml(spec), 0)
        try:
            assert _qemu_pids(host), "no QEMU in the second host's namespace"
            assert not _cgroup_dirs(name), "the second host put its guest in this host's cgroup tree"
            agent = QgaTransport(dom, name)
            agent.wait_ready(timeout=240)
            record_property("second_host_boot_to_agent_s", f"{time.monotonic() - t1:.1f}")
            assert agent.run("uname -r").check().text.strip() == img.kernel_release
            # QEMU's user networking runs in the second host's netns: the guest's 10.0.2.2 is
            # *its* loopback; this host is the veth address
            sent = agent.run(f"bash -c 'echo hello-from-{name} > /dev/tcp/{host.host_addr}/{port}'", timeout=30)
            assert sent.exit_code == 0, sent.stderr
            conn, peer = listener.accept()
            with conn:
                assert conn.recv(100) == f"hello-from-{name}\n".encode()
            assert peer[0] == host.addr
        finally:
            dom.destroy()
    text = host.host_path(console).read_text(errors="replace")
    assert "Linux version" in text and img.kernel_release in text
    assert not _qemu_pids(host)
    assert not _cgroup_dirs(name)
    assert second_conn.listAllDomains() == []
    overlay.delete(0)
