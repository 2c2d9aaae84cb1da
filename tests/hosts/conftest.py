"""Fixtures of the several-hosts tests: a simulated second libvirt host (see second_host.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from hosts.second_host import SecondHost, images_pool, second_host


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "a second libvirt host needs root (network namespaces, mounts, its own libvirtd)"
    for tool in ("ip", "setpriv", "nsenter", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux, iproute2)"
    for daemon in ("/usr/sbin/libvirtd", "/usr/sbin/virtlogd"):
        if not os.access(daemon, os.X_OK):
            return f"{daemon} is not installed: apt-get install libvirt-daemon-system"
    return None


@pytest.fixture(scope="session")
def second_libvirt_host() -> Iterator[SecondHost]:
    """A second libvirt host in its own namespaces, reached at ``host.uri`` (qemu+tcp)."""
    if reason := _missing():
        pytest.skip(reason)
    with second_host() as host:
        yield host


@pytest.fixture(scope="session")
def second_conn(second_libvirt_host: SecondHost):
    """A libvirt connection to the second host, over TCP from this host."""
    import libvirt

    conn = libvirt.open(second_libvirt_host.uri)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def main_conn():
    """The main libvirtd of this machine (qemu:///system), as the framework reaches it."""
    from hil.provision.daemons import open_connection

    conn = open_connection("qemu:///system")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def second_images(second_conn):
    """The second host's images pool (``/var/lib/libvirt/images`` there), for uploads."""
    pool = images_pool(second_conn, "hil-images")
    yield pool
    for vol in pool.listAllVolumes():
        vol.delete(0)
    pool.destroy()
