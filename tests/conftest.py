"""Shared fixtures: settings, a migrated database (SQLite and PostgreSQL), the app and a marketplace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.keystore import AccessKey
from isvserver.migrations import migrate
from isvserver.settings import Settings, load_settings

from support.harness import FixedClock, Marketplace, base_env
from support.postgres import PostgresServer, require_postgres
from support.tables import ALL_MODELS

# A developer's ./isvserver.env (the settings file every command reads) must not change what the tests
# run with: no settings file unless a test names one.
os.environ.setdefault("ISV_SETTINGS_FILE", "")

# Properties judge what an example gives, not how fast: on a loaded 2-core machine one slow example
# must not fail a run (speed is measured by bench/, never by a test).
hypothesis.settings.register_profile("isvserver", deadline=None)
hypothesis.settings.load_profile("isvserver")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session (skip, or fail on CI, when unavailable)."""
    require_postgres()
    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """A migrated database on that cluster."""
    url = postgres_server.create_database("isvserver_test")
    _migrate(url)
    return url


def _migrate(url: str) -> None:
    database = db.make_database(url)
    migrate(database)
    db.close_all(database)


def _empty_tables(url: str) -> None:
    database = db.make_database(url)
    with database.connection_context():
        names = ", ".join(model._meta.table_name for model in (*ALL_MODELS, AccessKey))
        database.execute_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    db.close_all(database)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a fresh SQLite file, or the session's PostgreSQL database emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
        _migrate(url)
        return url
    url = request.getfixturevalue("postgres_url")
    _empty_tables(url)
    return url


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment the app under test is configured from; tests may change it before `app`."""
    return base_env(tmp_path, database_url)


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    """Settings loaded from `env`."""
    return load_settings(env)


@pytest.fixture
def clock() -> FixedClock:
    """The app's clock."""
    return FixedClock()


@pytest.fixture
def app(settings: Settings, clock: FixedClock) -> Iterator[Flask]:
    """The app on the test database, with the test clock."""
    application = create_app(settings, clock=clock)
    application.config["TESTING"] = True
    yield application
    db.close_all()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A Flask test client."""
    return app.test_client()


@pytest.fixture
def marketplace(client: FlaskClient, settings: Settings) -> Marketplace:
    """The marketplace, talking to the app through the test client."""
    return Marketplace(client, settings.of("koogallery").produce_path)


@pytest.fixture
def bare_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run from an empty folder with no ISV_* variable; os.environ restored whole afterwards (commands
    and the settings file write to it)."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("ISV_")]:
        del os.environ[name]
    monkeypatch.chdir(tmp_path)
    yield
    os.environ.clear()
    os.environ.update(saved)
