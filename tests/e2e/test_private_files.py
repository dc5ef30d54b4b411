"""Files isvserver creates are its user's alone, even when it starts with umask 000.

The instance folder and the metrics folder are 0700; the SQLite database and its -wal/-shm, the huey
queue file and its companions, the development keys file and the metrics files are 0600.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harness import base_env
from support.server import http_request, post_signed, run_cli, running_server, subprocess_env, wait_until

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask (inherited by what it starts) set to `mask` for the block."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    """The permission bits of `root` and everything below it, by path relative to `root`'s parent."""
    found = {root.name: oct(stat.S_IMODE(root.stat().st_mode))}
    for path in sorted(root.rglob("*")):
        with contextlib.suppress(FileNotFoundError):  # a -journal may come and go
            found[str(path.relative_to(root.parent))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def not_private(found: dict[str, str], root: Path) -> list[str]:
    """Folders other than 0700 and files other than 0600."""
    wrong = []
    for name, mode in found.items():
        path = root.parent / name
        want = "0o700" if path.is_dir() else "0o600"
        if mode != want:
            wrong.append(f"{name} is {mode}, not {want}")
    return wrong


def test_serve_under_umask_000_creates_only_private_files(tmp_path: Path) -> None:
    """`isvserver serve` started with umask 000, one signed call and a /metrics scrape: the instance
    folder, its databases, queue, metrics and their -wal/-shm are 0700/0600."""
    instance = tmp_path / "instance"
    url = f"sqlite:///{instance / 'isvserver.sqlite3'}"
    env = subprocess_env(base_env(tmp_path, url))
    with umask(0), running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=2) as server:
        order_id = f"PRV{uuid.uuid4().hex[:10].upper()}"
        body = {
            "activity": "newInstance",
            "orderId": order_id,
            "orderLineId": f"{order_id}-000001",
            "businessId": str(uuid.uuid4()),
        }
        reply, _ = post_signed(server, body)
        assert reply.status == 200 and reply.json["resultCode"] in ("000000", "000004"), reply.raw
        assert http_request(server.base, "GET", "/metrics").status == 200
        assert wait_until(lambda: any((instance / "metrics").glob("*.db")), 10), modes(instance)
        found = modes(instance)

    for name in (
        "instance/isvserver.sqlite3",
        "instance/isvserver.sqlite3-wal",
        "instance/isvserver.sqlite3-shm",
        "instance/isvserver.sqlite3-gate",
        "instance/queue.sqlite3",
        "instance/metrics",
    ):
        assert name in found, f"{name} was not created: {found}"
    assert not not_private(found, instance), not_private(found, instance)


def test_development_keys_and_database_are_private_under_umask_000(tmp_path: Path) -> None:
    """`isvserver migrate` in development mode with umask 000 generates its keys file and the default
    SQLite database: 0600, in a 0700 instance folder."""
    env = subprocess_env({"ISV_ENV": "development"})
    with umask(0):
        result = run_cli("migrate", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    instance = tmp_path / "instance"
    found = modes(instance)
    assert "instance/development-keys.json" in found, found
    assert any(name.endswith(".sqlite3") for name in found), found
    assert not not_private(found, instance), not_private(found, instance)
