"""Reach libvirt; on a machine without systemd, start ``virtlogd`` and ``libvirtd`` ourselves."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from hil.errors import EnvironmentProblem

SYSTEM_SOCKETS = {
    "virtlogd": Path("/run/libvirt/virtlogd-sock"),
    "libvirtd": Path("/run/libvirt/libvirt-sock"),
}


def _daemon_binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.path.exists(p)), None)


def socket_answers(path: Path) -> bool:
    """True when a daemon listens on the Unix socket ``path``.

    The file alone proves nothing: a daemon that was killed (a session that ended, a reboot
    without tmpfs /run) leaves its socket behind, and connecting to it is refused.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(path))
        except OSError as exc:
            # no file, refused, not a socket: nobody. Anything else (EACCES for a non-root
            # user, a full backlog, a timeout) means somebody is there.
            return exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)
        return True


def ensure_daemons(uri: str, timeout: float = 15.0, sockets: dict[str, Path] | None = None) -> None:
    """Start the system daemons behind ``qemu:///system`` when nobody answers on their sockets.

    Only for the local system URI and only as root: anything else is the user's libvirt to run.
    A stale socket file of a dead daemon is removed first, so the new daemon can bind.  The
    daemons run under :mod:`hil.provision.subreaper`, so a destroyed guest's QEMU is reaped at
    once even where PID 1 reaps late (libvirt otherwise waits for the zombie: 1.6 s a destroy).
    """
    if uri != "qemu:///system":
        return
    sockets = SYSTEM_SOCKETS if sockets is None else sockets
    missing = [name for name, sock in sockets.items() if not socket_answers(sock)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            f"libvirt daemons not running ({', '.join(missing)}) and we are not root to start them",
            "start them as root: `virtlogd -d && libvirtd -d` (or `systemctl start libvirtd`)",
        )
    commands: list[str] = []
    for name in missing:  # virtlogd first: serial consoles to a file need it
        binary = _daemon_binary(name)
        if binary is None:
            raise EnvironmentProblem(
                f"{name} is not installed", "apt-get install libvirt-daemon-system qemu-system-x86"
            )
        sockets[name].unlink(missing_ok=True)  # stale: nobody answered on it
        commands += ["--", binary, "-d"] if commands else [binary, "-d"]
    # under a subreaper of ours, detached from this session: see hil.provision.subreaper
    subprocess.Popen(
        [sys.executable, "-m", "hil.provision.subreaper", *commands],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(socket_answers(sockets[n]) for n in missing):
            return
        time.sleep(0.05)
    raise EnvironmentProblem(
        f"started {', '.join(missing)} but nobody answered on "
        f"{', '.join(str(sockets[n]) for n in missing)} within {timeout:.0f}s",
        "look at /var/log/libvirt/ and run `libvirtd` in the foreground to see why",
    )


def ensure_kvm_node_permissions(dev: Path = Path("/dev/kvm")) -> None:
    """Give ``/dev/kvm`` the owner udev gives it on every Debian system (root:kvm 0660).

    Without udev nothing does, and then libvirt finds KVM "no longer usable" by the QEMU user
    on every domain start, throws its capability cache away and probes QEMU again: about 50 s
    per guest (measured).  We still choose the accelerator ourselves (see ``accel.py``).
    """
    import grp

    if os.geteuid() != 0 or not dev.exists():
        return
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return
    st = dev.stat()
    if st.st_gid != kvm_gid or (st.st_mode & 0o060) != 0o060:
        os.chown(dev, 0, kvm_gid)
        os.chmod(dev, 0o660)


def open_connection(uri: str):
    """Open a libvirt connection or say precisely why not."""
    try:
        import libvirt
    except ImportError:
        raise EnvironmentProblem(
            "the libvirt Python binding is not installed",
            "apt-get install libvirt-dev pkg-config && pip install libvirt-python",
        ) from None
    if uri == "qemu:///system":
        ensure_kvm_node_permissions()
    ensure_daemons(uri)
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors arrive as exceptions, not on stderr
    # crash events reach only connections opened after the event loop was registered
    from hil.crash.events import ensure_event_loop

    ensure_event_loop()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise EnvironmentProblem(
            f"cannot connect to libvirt at {uri}: {exc.get_error_message()}",
            "check `libvirt_uri` in hil.toml and that libvirtd runs (`hil doctor`)",
        ) from None
