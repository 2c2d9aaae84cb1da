"""Run the libvirt daemons under a process that reaps their orphans at once.

libvirtd starts each QEMU as a daemon (a double fork), so a guest's QEMU is the child of the
nearest *subreaper* ancestor, or of PID 1.  On a machine without a real init (a container, a
micro-VM's agent as PID 1, this CI) PID 1 may reap late: a destroyed guest's QEMU then stays a
zombie, and libvirt, which polls ``kill(pid, 0)`` until the process is gone, takes 1.6-2.0 s to
finish every destroy (measured here: QEMU was a zombie 2 ms after SIGKILL, libvirt reported the
domain gone 1.6 s later).  When kernel-hil starts the daemons itself
(:func:`hil.provision.daemons.ensure_daemons`), it starts them under this process instead::

    python -m hil.provision.subreaper /usr/sbin/virtlogd -d -- /usr/sbin/libvirtd -d

It marks itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), runs each command in
turn (a ``-d`` daemon's first process exits once the daemon is up), then reaps every child
that ends (the daemons' orphans, QEMU included) until none is left, and exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def split_commands(argv: list[str]) -> list[list[str]]:
    """``a -x -- b -y`` -> ``[["a", "-x"], ["b", "-y"]]``."""
    commands: list[list[str]] = [[]]
    for arg in argv:
        if arg == "--":
            commands.append([])
        else:
            commands[-1].append(arg)
    return [c for c in commands if c]


def reap_forever() -> None:
    """Reap every child that ends; return when there is no child left."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    commands = split_commands(argv)
    if not commands:
        print("usage: python -m hil.provision.subreaper CMD [ARG...] [-- CMD [ARG...]]...", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # only the daemons decide when they end
    become_subreaper()
    for cmd in commands:
        # a `-d` daemon forks and its first process exits once the daemon is up
        subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL)
    reap_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
