"""What the tests share besides fixtures: keys and settings, a fixed clock, the marketplace player."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from isvserver import db
from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.models import Instance, InstanceEvent

ACCESS_KEY = "test-access-key-1"
SECOND_ACCESS_KEY = "rotated-access-key-2"
NOTIFY_KEY = "test-notify-key-1"
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


class FixedClock:
    """A clock the tests set (UNIX ms); None means the real time."""

    def __init__(self) -> None:
        self.now_ms: float | None = None

    def __call__(self) -> float:
        return time.time() * 1000 if self.now_ms is None else self.now_ms


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


def instance_row(instance_id: str) -> Instance:
    """The instance's row as stored now."""
    with db.connected():
        return Instance.get(Instance.instance_id == instance_id)


def instance_events(instance_id: str) -> list[InstanceEvent]:
    """The instance's events, oldest first."""
    with db.connected():
        query = (
            InstanceEvent.select()
            .join(Instance)
            .where(Instance.instance_id == instance_id)
            .order_by(InstanceEvent.id)
        )
        return list(query)
