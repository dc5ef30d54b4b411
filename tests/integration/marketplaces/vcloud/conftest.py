"""V Cloud fixtures: the local platform (state in a SQLite file) and the app configured for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from isvserver.marketplaces.vcloud import poller
from isvserver.runtime import Runtime

from support.vcloud_platform import VCloudPlatform, vcloud_env


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[VCloudPlatform]:
    """The V Cloud platform on a loopback port."""
    with VCloudPlatform(tmp_path / "platform.sqlite3") as running:
        yield running


@pytest.fixture
def env(tmp_path: Path, database_url: str, platform: VCloudPlatform) -> dict[str, str]:
    """base_env with the V Cloud adapter enabled on the local platform."""
    from support.harness import base_env

    return base_env(tmp_path, database_url, **vcloud_env(platform))


@pytest.fixture
def run_poll(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """One poll, as the job consumer runs it (in the app's context), at `now` (UNIX s) if given."""
    monkeypatch.setattr("isvserver.marketplaces.vcloud.client.BACKOFF_BASE_S", 0.01)
    jobs = app.extensions["isvserver"].jobs

    def run(now: float | None = None) -> int:
        with jobs.context() as rt:
            return poller.poll(rt, now)

    return run


@pytest.fixture
def rt(app: Flask) -> Iterator[Runtime]:
    """The app's Runtime inside its context, with a connection."""
    with app.extensions["isvserver"].jobs.context() as runtime:
        yield runtime
