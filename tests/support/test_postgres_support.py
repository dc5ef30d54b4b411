"""Self-test of the throwaway PostgreSQL helper: start, query, stop, restart on the same port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .postgres import PostgresServer, require_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PostgresServer]:
    """A running throwaway server (skips, or fails under ISV_TEST_REQUIRE_POSTGRES=1, if unavailable)."""
    require_postgres()
    with PostgresServer(tmp_path) as srv:
        yield srv
    assert not srv.is_running()
    assert not srv.dir.exists()


def _select_1(url: str) -> int:
    """Connect to url and return the result of `select 1`."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("select 1").fetchone()
    assert row is not None
    return row[0]


def test_start_stop_restart_same_port(server: PostgresServer) -> None:
    """A database can be created and queried, and the server stops and comes back on the same port."""
    assert server.is_running()
    assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    url = server.create_database("isv_selftest")
    assert url.endswith(f":{server.port}/isv_selftest")
    assert _select_1(url) == 1

    port = server.port
    server.stop()
    assert not server.is_running()
    with pytest.raises(psycopg.OperationalError):
        _select_1(url)

    server.start()
    assert server.is_running()
    assert server.port == port
    assert _select_1(url) == 1

    server.drop_database("isv_selftest")
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        _select_1(url)
