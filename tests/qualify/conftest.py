"""Fixtures of the qualification tests: a real PostgreSQL (see postgres.py)."""

from __future__ import annotations

import pytest
from postgres import PostgresServer


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer()
    yield server
    server.drop_all()


@pytest.fixture
def postgres_url(pg_server) -> str:
    """A fresh, empty PostgreSQL database of its own for this test."""
    return pg_server.create_database()
