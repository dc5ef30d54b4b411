"""Shared fixtures: settings, a migrated database (SQLite and PostgreSQL), the app and a marketplace."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.marketplaces.koogallery.client import encode_body, signed_query
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.migrations import migrate
from isvserver.models import ALL_MODELS
from isvserver.settings import Settings, load_settings

from support.postgres import PostgresServer, require_postgres

ACCESS_KEY = "test-access-key"
SECOND_ACCESS_KEY = "rotated-access-key-2"
NOTIFY_KEY = "test-notify-key"
DATA_KEY = "8cGqqt0gCL2bU5R0k3m3Jx3a0Jm2bqv0d9yq8B0o9Uw="
FRONTEND_TEMPLATE = "https://app.example.com/t/{instance_id}"
ADMIN_TEMPLATE = "https://app.example.com/t/{instance_id}/admin"


def base_env(tmp_path: Path, database_url: str, **overrides: str) -> dict[str, str]:
    """A complete production environment for isvserver (no inherited ISV_* variables)."""
    env = {
        "ISV_ENV": "production",
        "ISV_ACCESS_KEYS": f"{ACCESS_KEY},{SECOND_ACCESS_KEY}",
        "ISV_NOTIFY_KEYS": NOTIFY_KEY,
        "ISV_DATABASE_URL": database_url,
        "ISV_DATA_KEY": DATA_KEY,
        "ISV_INSTANCE_DIR": str(tmp_path / "instance"),
        "ISV_FRONTEND_URL_TEMPLATE": FRONTEND_TEMPLATE,
        "ISV_ADMIN_URL_TEMPLATE": ADMIN_TEMPLATE,
    }
    env.update(overrides)
    return env


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
        names = ", ".join(model._meta.table_name for model in ALL_MODELS)
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


class FixedClock:
    """A clock the tests set (UNIX ms); None means the real time."""

    def __init__(self) -> None:
        self.now_ms: float | None = None

    def __call__(self) -> float:
        return time.time() * 1000 if self.now_ms is None else self.now_ms


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


@dataclass
class Answer:
    """A reply: HTTP status, exact bytes, parsed JSON, headers."""

    status: int
    raw: bytes
    json: dict[str, Any]
    headers: Any

    @property
    def code(self) -> str:
        return self.json["resultCode"]


class Marketplace:
    """Plays KooGallery against the test client: signs calls and checks every reply's Body-Sign."""

    def __init__(self, client: FlaskClient, path: str = "/saasproduce") -> None:
        self.client = client
        self.path = path

    def send(
        self,
        body: dict[str, Any] | bytes,
        key: str = ACCESS_KEY,
        *,
        timestamp: str | None = None,
        nonce: str | None = None,
        query: str | None = None,
        reply_key: str | None = None,
    ) -> Answer:
        """POST a signed call; assert the reply is JSON with a valid Body-Sign (by `reply_key` or `key`)."""
        raw = body if isinstance(body, bytes) else encode_body(body)
        query = query if query is not None else signed_query(key, raw, timestamp, nonce)
        response = self.client.post(
            f"{self.path}?{query}", data=raw, headers={"Content-Type": "application/json;charset=utf8"}
        )
        assert response.headers["Content-Type"] == "application/json"
        assert body_sign_valid(reply_key or key, response.data, response.headers.get("Body-Sign")), (
            "reply not signed with the expected key"
        )
        return Answer(response.status_code, response.data, json.loads(response.data), response.headers)

    def new_instance(
        self, order_id: str = "CS001", line: str | None = None, business_id: str = "biz-1", **extra: str
    ) -> Answer:
        """newInstance for an order line."""
        return self.send(
            {
                "activity": "newInstance",
                "orderId": order_id,
                "orderLineId": line or f"{order_id}-000001",
                "businessId": business_id,
                **extra,
            }
        )

    def query(self, *instance_ids: str, **extra: str) -> Answer:
        """queryInstance for these ids."""
        return self.send({"activity": "queryInstance", "instanceId": ",".join(instance_ids), **extra})


@pytest.fixture
def marketplace(client: FlaskClient, settings: Settings) -> Marketplace:
    """The marketplace, talking to the app through the test client."""
    return Marketplace(client, settings.produce_path)
