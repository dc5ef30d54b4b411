"""End-to-end fixtures: a real gunicorn serving isvserver (helpers in support/server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harness import base_env
from support.server import Server, running_server, subprocess_env


@pytest.fixture
def server_overrides() -> dict[str, str]:
    """ISV_* variables set on top of base_env for `server` (parametrize this name to change them)."""
    return {}


@pytest.fixture
def server(tmp_path: Path, database_url: str, server_overrides: dict[str, str]) -> Iterator[Server]:
    """isvserver under gunicorn with 3 workers, configured by base_env on the test database."""
    env = subprocess_env(base_env(tmp_path, database_url, **server_overrides))
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=3) as running:
        yield running


# --- the marketplace's side of the wire (spec §2.1 and §3, implemented independently) ------------
