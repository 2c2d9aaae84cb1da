"""A real PostgreSQL for the history tests: throwaway roles and databases on the local server.

``scripts/setup.sh`` installs Debian's ``postgresql`` and starts it.  Databases are made through
the local socket as the ``postgres`` user, each owned by its own role with a random password;
tests connect over TCP to 127.0.0.1 with it (the socket only does peer authentication, and root
is no role), and everything is dropped at the end.  A server that does not answer fails the
tests with the command that starts it: CI must not skip the backend a team shares.
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

PG_SOCKET = "/var/run/postgresql"


def _pg_version() -> str:
    versions = (
        sorted(Path("/etc/postgresql").iterdir(), key=lambda p: [int(x) for x in p.name.split(".")])
        if Path("/etc/postgresql").is_dir()
        else []
    )
    return versions[-1].name if versions else "15"


def _cluster_port() -> str:
    """The port of the newest ``main`` cluster (Debian gives a cluster the next free port when
    5432 is taken, e.g. by another PostgreSQL on the machine): ``pg_lsclusters``, else 5432."""
    if shutil.which("pg_lsclusters"):
        listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30)
        for line in listed.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == _pg_version() and fields[1] == "main":
                return fields[2]
    return "5432"


def _psql(*statements: str, socket: str = PG_SOCKET) -> str:
    """Run SQL as the ``postgres`` superuser through the local socket."""
    cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", _cluster_port()]
    cmd += ["-d", "postgres"]
    for sql in statements:
        cmd += ["-c", sql]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    elif getpass.getuser() != "postgres":
        cmd = ["sudo", "-n", "-u", "postgres", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    if done.returncode:
        pytest.fail(f"psql as postgres failed: {done.stderr.strip()}", pytrace=False)
    return done.stdout


class PostgresServer:
    """Creates databases, each owned by its own throwaway role, and drops them all at the end.

    The tests connect over TCP to localhost with that role's password: the socket only does
    peer authentication (OS user = role), and root is no role; this way nothing stays behind.
    """

    def __init__(self, socket: str = PG_SOCKET):
        if not shutil.which("pg_isready") or not shutil.which("psql"):
            pytest.fail(
                "PostgreSQL is not installed: run `bash scripts/setup.sh` (it installs postgresql)", pytrace=False
            )
        ready = subprocess.run(["pg_isready", "-h", socket, "-p", _cluster_port()], capture_output=True, text=True)
        if ready.returncode != 0:
            pytest.fail(
                f"PostgreSQL does not answer on {socket} ({ready.stdout.strip()}): start it with "
                f"`pg_ctlcluster {_pg_version()} main start` (scripts/setup.sh does it)",
                pytrace=False,
            )
        self.port = int(_psql("SHOW port").strip())
        self.names: list[str] = []

    def create_database(self) -> str:
        name = f"hil_test_{secrets.token_hex(4)}"
        password = secrets.token_hex(16)
        _psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {name} OWNER {name}")
        self.names.append(name)
        return f"postgresql://{name}:{password}@127.0.0.1:{self.port}/{name}"

    def drop_all(self) -> None:
        for name in self.names:
            _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}")
