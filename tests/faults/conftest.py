"""Fault-suite fixtures: a PostgreSQL database of its own that a test may take down with its cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from support.postgres import PostgresServer


@pytest.fixture
def outage_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL cluster (isvserver serve migrates it).

    The cluster is shared with every other PostgreSQL test of the session: whatever the test did to
    it, it is running again afterwards (the test restarts it in its own `finally` too), and the
    database is dropped.
    """
    name = f"faults_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        try:
            if not postgres_server.is_running():
                postgres_server.start()
        finally:
            postgres_server.drop_database(name)
