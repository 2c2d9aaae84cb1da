"""A lab whose guests run on a remote libvirt host (the simulated second host): crashes are
seen through the mirrored console and the remote connection's events, forwards and the
collector cross between the hosts, and nothing of a session is left there afterwards."""

from __future__ import annotations

import socket
import statistics
import time

import pytest

from hil.config import HostConfig, load_config
from hil.hosts.host import GuestHost
from hil.hosts.sweep import sweep_host_files
from hil.lab import Lab
from hil.paths import runtime_dir
from hil.provision.domain_xml import read_owner
from hil.provision.owner import Owner

pytestmark = pytest.mark.hil_linux


@pytest.fixture(scope="module")
def remote_lab(second_libvirt_host):
    with Lab(load_config(), hosts=[HostConfig(second_libvirt_host.uri)]) as lab:
        yield lab


def _guest_files(conn) -> list[str]:
    pool = conn.storagePoolLookupByName("hil")
    pool.refresh(0)
    return sorted(v.name() for v in pool.listAllVolumes() if v.name().startswith("hil-"))


def test_a_remote_guest_is_a_guest_like_any_other(remote_lab, second_libvirt_host, record_property):
    g = remote_lab.linux_guest()
    try:
        assert g.host_uri == second_libvirt_host.uri
        assert g.controller_address == second_libvirt_host.host_addr  # this machine, as the host routes to it
        assert g.forward_host == second_libvirt_host.addr
        assert g.run("echo hello > /dev/kmsg && echo ok").check().text.strip() == "ok"
        g.console_barrier()
        assert "hello" in g.console_text()  # the console written there, read here
        # a server of this machine, reached from the guest at the guest's controller address
        with socket.create_server((g.listen_address, 0)) as srv:
            srv.settimeout(30)
            port = srv.getsockname()[1]
            g.run(f"bash -c 'echo hi > /dev/tcp/{g.controller_address}/{port}'", timeout=30).check()
            conn, peer = srv.accept()
            with conn:
                assert conn.recv(10) == b"hi\n"
    finally:
        remote_lab.discard(g)
    # per-test reset on the remote host: restores of ready copies, medians of a few
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        g = remote_lab.linux_guest(upcoming=0)
        times.append(time.monotonic() - t0)
        remote_lab.discard(g)
    record_property("remote_linux_guest_s", f"{statistics.median(times):.2f}")


def test_a_panic_on_the_remote_host_is_detected_and_named(remote_lab):
    g = remote_lab.linux_guest()
    try:
        with g.expect_crash(kind="PANIC", timeout=15) as crash:
            g.run("echo c > /proc/sysrq-trigger", timeout=30)
        assert crash.report.title == "kernel panic: sysrq triggered crash"
        assert g.state.value == "crashed"
        assert "sysrq triggered crash" in g.console_text()
    finally:
        remote_lab.discard(g)


def test_a_closed_lab_leaves_no_domain_and_no_guest_file_there(second_libvirt_host, second_conn):
    with Lab(load_config(), hosts=[HostConfig(second_libvirt_host.uri)]) as lab:
        g = lab.linux_guest(upcoming=0)
        assert g.name in [d.name() for d in second_conn.listAllDomains()]
        assert _guest_files(second_conn)
    owners = [read_owner(d.XMLDesc(0)) or {} for d in second_conn.listAllDomains()]
    assert [o for o in owners if o.get("session") == lab.owner.session] == []
    assert [f for f in _guest_files(second_conn) if f.startswith(lab.owner.prefix())] == []


def test_the_sweep_removes_a_dead_sessions_files_there_and_nothing_else(second_libvirt_host, second_conn):
    host = GuestHost(HostConfig(second_libvirt_host.uri))
    try:
        dead = Owner(session="0badc0de", worker="gw9", pid=1 << 22, start="1", host=socket.gethostname())
        leftover = f"{dead.prefix()}3.console.log"
        host.store.put_bytes(leftover, b"a dead session's console\n")
        host.store.put_bytes("snap-feedfacefeedface.json", b"{}")  # a cache entry: never swept here
        removed = sweep_host_files(host, runtime_dir())
        assert leftover in removed
        assert not host.store.exists(leftover)
        assert host.store.exists("snap-feedfacefeedface.json")
        host.store.delete("snap-feedfacefeedface.json")
    finally:
        host.close()
