"""A worked example of the product's side of isvserver's webhook provisioner.

It verifies every event's Standard Webhooks signature, creates each tenant once (keyed by instanceId,
so a retried instance.created gets the same appInfo back), and follows the later changes. Run it with

    ISV_WEBHOOK_SECRET=whsec_… gunicorn --chdir examples webhook_receiver:app --bind 127.0.0.1:9000

and point isvserver at it: ISV_PROVISIONER=webhook ISV_WEBHOOK_URL=http://127.0.0.1:9000/isvserver/events
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

app = Flask(__name__)
webhook = Webhook(os.environ["ISV_WEBHOOK_SECRET"])
# The repository's instance/ folder (git-ignored), whichever folder gunicorn runs in.
TENANTS_DB = os.environ.get("TENANTS_DB") or str(
    Path(__file__).resolve().parents[1] / "instance" / "tenants.sqlite3"
)
STATES = {"instance.frozen": "frozen", "instance.unfrozen": "active", "instance.released": "released"}


def tenants() -> sqlite3.Connection:
    """The product's own tenant table (here a SQLite file)."""
    Path(TENANTS_DB).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(TENANTS_DB, timeout=10)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tenant (instance_id TEXT PRIMARY KEY, app_info TEXT NOT NULL, "
        "state TEXT NOT NULL, expire_at TEXT, sku TEXT)"
    )
    return conn


def create_tenant(instance: dict[str, Any], order: dict[str, Any] | None) -> dict[str, str]:
    """The product's real work: create the tenant and say how the buyer logs in."""
    base = f"https://app.example.com/t/{instance['instanceId']}"
    return {
        "frontEndUrl": base,
        "adminUrl": base + "/admin",
        "userName": "admin",
        "password": secrets.token_urlsafe(15),
        "memo": "Welcome aboard",
    }


@app.post("/isvserver/events")
def events() -> tuple[Response, int] | Response:
    """One lifecycle event from isvserver."""
    try:
        event = webhook.verify(request.get_data(), dict(request.headers))
    except WebhookVerificationError:
        return jsonify(error="bad signature"), 401
    instance = event["data"]["instance"]
    order = event["data"]["order"]  # null unless isvserver has ISV_MARKET_AK/SK
    sku = order["orderLine"][0]["productInfo"][0]["skuCode"] if order else None
    with tenants() as conn:
        conn.execute("BEGIN IMMEDIATE")  # one creation per instance, even for concurrent retries
        row = conn.execute(
            "SELECT app_info FROM tenant WHERE instance_id = ?", (instance["instanceId"],)
        ).fetchone()
        if event["type"] == "instance.created":
            if row is None:
                app_info = create_tenant(instance, order)
                conn.execute(
                    "INSERT INTO tenant VALUES (?, ?, 'active', ?, ?)",
                    (instance["instanceId"], json.dumps(app_info), instance["expireAt"], sku),
                )
            else:
                app_info = json.loads(row[0])
            return jsonify(appInfo=app_info)
        if row is not None:  # events of an instance this product never created need no action
            conn.execute(
                "UPDATE tenant SET state = COALESCE(?, state), expire_at = ?, sku = COALESCE(?, sku) "
                "WHERE instance_id = ?",
                (STATES.get(event["type"]), instance["expireAt"], sku, instance["instanceId"]),
            )
    return jsonify()
