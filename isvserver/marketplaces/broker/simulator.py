"""`isvserver simulate broker URL --client-id ID --client-secret SECRET`: play the platform against a
broker (this one or any OSB broker with an AppCube token endpoint) and check every answer."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import click

from isvserver.adapters import Simulation
from isvserver.marketplaces.broker.config import TOKEN_PATH

POLL_S = 60.0  # how long an asynchronous operation may take before the check fails


@dataclass
class Reply:
    """One HTTP answer: status, headers, parsed JSON (None when the body is not JSON)."""

    status: int
    headers: dict[str, str]
    json: Any


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    """One HTTP call; an HTTP error status is an answer, not an exception."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=20) as response:  # noqa: S310 (http/https checked)
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return Reply(status, got, parsed)


@dataclass
class Check:
    """The platform's side: the broker URL, its token, and what went wrong so far."""

    url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    token: str = field(default="", repr=False)
    wrong: list[str] = field(default_factory=list)

    def step(self, label: str, reply: Reply, expected: tuple[int, ...], extra_ok: bool = True) -> Reply:
        """Print the step; note it when the status is not one expected."""
        ok = reply.status in expected and extra_ok
        shown = (
            {k: v for k, v in (reply.json or {}).items() if k != "access_token"}
            if isinstance(reply.json, dict)
            else reply.json
        )
        verdict = "ok" if ok else f"WRONG (expected {'/'.join(map(str, expected))})"
        click.echo(f"{label}: HTTP {reply.status} {verdict} {json.dumps(shown, ensure_ascii=False)[:300]}")
        if not ok:
            self.wrong.append(label)
        return reply

    def get_token(self, secret: str) -> Reply:
        form = urlencode(
            {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": secret}
        )
        return request(
            "POST", self.token_url, form.encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        )

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = None, **headers: str
    ) -> Reply:
        raw = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", "X-Broker-API-Version": "2.17", **headers}
        given = self.token if token is None else token
        if given:
            sent["access-token"] = given
        return request(method, f"{self.url}{path}", raw, sent)

    def wait(
        self, label: str, instance_id: str, operation: str | None, done: tuple[int, ...] = (200,)
    ) -> None:
        """Poll last_operation until the operation is no longer in progress."""
        query = f"?{urlencode({'operation': operation})}" if operation else ""
        deadline = time.monotonic() + POLL_S
        while True:
            reply = self.call("GET", f"/service_instances/{instance_id}/last_operation{query}")
            state = reply.json.get("state") if isinstance(reply.json, dict) else None
            if state != "in progress" or time.monotonic() > deadline:
                break
            time.sleep(min(float(reply.headers.get("Retry-After", "1") or 1), 5.0))
        self.step(label, reply, done, state in ("succeeded", None) or reply.status == 410)


def _parameters(plan: dict[str, Any]) -> dict[str, Any]:
    """Values for the plan's required create parameters (a random secret for `password` ones)."""
    schema = (((plan.get("schemas") or {}).get("service_instance") or {}).get("create") or {}).get(
        "parameters"
    ) or {}
    values: dict[str, Any] = {}
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if name not in (schema.get("required") or []):
            continue
        values[name] = {
            "password": "sim-" + secrets.token_urlsafe(12),
            "integer": 1,
            "number": 1,
            "boolean": True,
        }.get(kind, f"sim-{name}")
    return values


def run(check: Check) -> bool:
    """token → catalog → create → poll → read → update → delete → delete again, and the negative cases."""
    reply = check.step("token", check.get_token(check.client_secret), (200,))
    check.token = reply.json.get("access_token", "") if isinstance(reply.json, dict) else ""
    check.step(
        "token with a wrong secret (invalid_client)", check.get_token("wrong-" + secrets.token_hex(8)), (401,)
    )
    check.step("catalog without a token", check.call("GET", "/catalog", token=""), (401,))
    check.step(
        "catalog with an unknown or expired token",
        check.call("GET", "/catalog", token="expired-" + secrets.token_hex(16)),
        (401,),
    )
    check.step(
        "catalog with X-Broker-API-Version 2.12",
        check.call("GET", "/catalog", **{"X-Broker-API-Version": "2.12"}),
        (412,),
    )
    catalog = check.step("catalog", check.call("GET", "/catalog"), (200,))
    try:
        service = catalog.json["services"][0]
        plan = service["plans"][0]
    except (TypeError, KeyError, IndexError):
        check.wrong.append("catalog holds no service with a plan")
        return False
    instance_id = f"sim-{secrets.token_hex(8)}"
    ids = urlencode({"service_id": service["id"], "plan_id": plan["id"]})
    body = {
        "service_id": service["id"],
        "plan_id": plan["id"],
        "parameters": _parameters(plan),
        "context": {"platform": "isvserver-simulate"},
    }
    path = f"/service_instances/{instance_id}"
    created = check.step("create", check.call("PUT", f"{path}?accepts_incomplete=true", body), (201, 202))
    if created.status == 202:
        check.wait("poll the creation", instance_id, (created.json or {}).get("operation"))
    check.step("create again, identical", check.call("PUT", f"{path}?accepts_incomplete=true", body), (200,))
    other = {**body, "parameters": {**body["parameters"], "isvserver_simulate": "other"}}
    check.step(
        "create again, other parameters (conflict)",
        check.call("PUT", f"{path}?accepts_incomplete=true", other),
        (409, 400),
    )
    stale = {**body, "maintenance_info": {"version": "0.0.0-stale"}}
    check.step(
        "create with a stale maintenance_info (MaintenanceInfoConflict)",
        check.call("PUT", f"/service_instances/{instance_id}-m?accepts_incomplete=true", stale),
        (422,),
    )
    check.step(
        "read",
        check.call("GET", f"{path}?{urlencode({'service_id': service['id'], 'plan_id': plan['id']})}"),
        (200,),
    )
    updated = check.step(
        "update (same plan)",
        check.call(
            "PATCH", f"{path}?accepts_incomplete=true", {"service_id": service["id"], "plan_id": plan["id"]}
        ),
        (200, 202),
    )
    if updated.status == 202:
        check.wait("poll the update", instance_id, (updated.json or {}).get("operation"))
    deleted = check.step(
        "delete",
        check.call(
            "DELETE",
            f"{path}?accepts_incomplete=true&{ids}",
        ),
        (200, 202),
    )
    if deleted.status == 202:
        check.wait("poll the deletion", instance_id, (deleted.json or {}).get("operation"), (200, 410))
    check.step("delete again (gone)", check.call("DELETE", f"{path}?accepts_incomplete=true"), (410,))
    check.step("read after delete", check.call("GET", path), (404, 410))
    return not check.wrong


def token_url_for(url: str, given: str | None) -> str:
    """The token URL: the one given, or the seed's token path on the broker's host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter("the URL must be http:// or https://", param_hint="URL")
    return given or f"{parts.scheme}://{parts.netloc}{TOKEN_PATH}"


@click.command()
@click.argument("url")
@click.option("--client-id", required=True, help="A broker client's id (`isvserver broker client add`).")
@click.option(
    "--client-secret",
    envvar="ISV_BROKER_CLIENT_SECRET",
    show_envvar=True,
    required=True,
    help="Its secret (best from the environment variable).",
)
@click.option("--token-url", default=None, help=f"The token endpoint (default: {TOKEN_PATH} on URL's host).")
def simulate_broker(url: str, client_id: str, client_secret: str, token_url: str | None) -> None:
    """Play an OSB platform against the broker at URL (http://host/broker); exit 1 on any wrong answer."""
    check = Check(url.rstrip("/"), token_url_for(url, token_url), client_id, client_secret)
    try:
        ok = run(check)
    except OSError as exc:
        raise click.ClickException(
            f"cannot reach {url}: {getattr(exc, 'reason', None) or type(exc).__name__}"
        ) from None
    click.echo(
        "broker: all answers right"
        if ok
        else f"broker: {len(check.wrong)} wrong answer(s): {', '.join(check.wrong)}",
        err=True,
    )
    raise SystemExit(0 if ok else 1)


SIMULATION = Simulation(name="broker", command=simulate_broker)
