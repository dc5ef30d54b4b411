"""The broker under test: its catalog, a client, and a platform that talks to it through the test client."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.db import connected
from isvserver.marketplaces.broker import clients
from isvserver.marketplaces.broker.catalog import EXAMPLE
from isvserver.settings import Settings, load_settings

from support.harness import FixedClock

SEED_SERVICE = "$CP_DS__AppCubeBrokerDemo_b"
SEED_PLAN = "003M000000ppqFT7kFRQ"
PREFIX = "/service/CP_DS__AppCubeBrokerDemo/1.0.0"
TOKEN_PATH = "/baas/auth/v1.0/oauth2/token"

# A second service whose plans may be changed, with a maintenance version (besides the seed's).
GOLD = {
    "id": "svc-gold",
    "name": "gold-service",
    "description": "a plan-updateable service",
    "bindable": False,
    "plan_updateable": True,
    "plans": [
        {
            "id": "plan-small",
            "name": "small",
            "description": "small",
            "maintenance_info": {"version": "1.0.0"},
            "schemas": {
                "service_instance": {
                    "create": {
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "seats": {"type": "integer", "minimum": 1},
                                "admin_password": {"type": "password"},
                            },
                        }
                    }
                }
            },
        },
        {
            "id": "plan-large",
            "name": "large",
            "description": "large",
            "maintenance_info": {"version": "1.0.0"},
        },
    ],
}


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    """The seed's catalog plus the gold service, as JSON."""
    import yaml

    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    document["services"].append(GOLD)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def settings(env: dict[str, str], catalog_file: Path) -> Settings:
    env["ISV_MARKETPLACES"] = "koogallery,broker"
    env["ISV_BROKER_PATH"] = PREFIX
    env["ISV_BROKER_CATALOG"] = str(catalog_file)
    env["ISV_BROKER_TOKEN_FAILURES_PER_MINUTE"] = "5"
    return load_settings(env)


@pytest.fixture
def provisioner() -> Any:
    """The app's provisioner (None: the settings' inline template)."""
    return None


@pytest.fixture
def app(settings: Settings, clock: FixedClock, provisioner: Any) -> Iterator[Flask]:
    application = create_app(settings, provisioner=provisioner, clock=clock)
    yield application
    db.close_all()


@pytest.fixture
def credentials(app: Flask) -> clients.Credentials:
    """A broker client."""
    with app.app_context(), connected():
        return clients.add("appcube")


@dataclass
class Platform:
    """An OSB platform (AppCube by default) calling the broker through the test client."""

    client: FlaskClient
    credentials: clients.Credentials
    headers: dict[str, str] = field(default_factory=dict)

    def token(self) -> str:
        response = self.client.post(
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": self.credentials.client_id,
                "client_secret": self.credentials.client_secret,
            },
        )
        assert response.status_code == 200, response.data
        return response.get_json()["access_token"]

    def login(self) -> Platform:
        self.headers = {"access-token": self.token()}
        return self

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        return self.client.open(
            f"{PREFIX}{path}",
            method=method,
            data=None if body is None else json.dumps(body),
            content_type="application/json",
            headers={**self.headers, **headers},
        )

    def basic(self) -> dict[str, str]:
        pair = f"{self.credentials.client_id}:{self.credentials.client_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


@pytest.fixture
def platform(client: FlaskClient, credentials: clients.Credentials) -> Platform:
    """A logged-in AppCube."""
    return Platform(client, credentials).login()
