"""The broker's calls through the app: the seed's AppCube sequence, OSB status codes, secrets never shown."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from flask.testing import FlaskClient

from isvserver.db import connected
from isvserver.marketplaces.broker import clients
from isvserver.marketplaces.broker.catalog import EXAMPLE
from isvserver.marketplaces.broker.models import BrokerInstance, BrokerToken
from isvserver.models import CallLog, Instance, InstanceEvent, Nonce, utcnow

from .conftest import PREFIX, SEED_PLAN, SEED_SERVICE, TOKEN_PATH, Platform

SEED_CREATE = {
    "context": "string",
    "maintenance_info": {},
    "parameters": {"client_id": "buyer-app", "client_secret": "buyer-Secret-42"},
    "plan_id": SEED_PLAN,
    "service_id": SEED_SERVICE,
}
GOLD_CREATE = {"service_id": "svc-gold", "plan_id": "plan-small", "parameters": {"seats": 3}}


def stored_text() -> str:
    """Everything the broker and the lifecycle stored, as text (to look for secrets in)."""
    with connected():
        rows = [
            *[
                json.dumps(row, default=str)
                for model in (BrokerInstance, Instance, InstanceEvent, CallLog, BrokerToken)
                for row in model.select().dicts()
            ]
        ]
    return "\n".join(rows)


def test_the_seeds_appcube_sequence(platform: Platform) -> None:
    catalog = platform.call("GET", "/catalog")
    assert catalog.status_code == 200
    seed_catalog = __import__("yaml").safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert catalog.get_json()["services"][0] == seed_catalog["services"][0]

    created = platform.call("PUT", "/service_instances/inst-appcube-1", SEED_CREATE)
    assert created.status_code == 201
    body = created.get_json()
    assert body["parameters"] == {"client_id": "buyer-app", "client_secret": "******"}
    assert body["metadata"]["display"][0] == {
        "description": "login URL",
        "type": "string",
        "value": "https://app.example.com/t/inst-appcube-1",
    }

    read = platform.call("GET", f"/service_instances/inst-appcube-1?plan_id={SEED_PLAN}&service_id=x")
    assert read.status_code == 200
    assert {k: read.get_json()[k] for k in ("instance_usable", "state", "update_repeatable")} == {
        "instance_usable": True,
        "state": "succeeded",
        "update_repeatable": True,
    }
    assert read.get_json()["parameters"]["client_secret"] == "******"

    last = platform.call("GET", "/service_instances/inst-appcube-1/last_operation")
    assert last.status_code == 200
    assert last.get_json() == {
        "description": "provisioned",
        "instance_usable": True,
        "state": "succeeded",
        "update_repeatable": True,
    }
    again = platform.call("PUT", "/service_instances/inst-appcube-1", SEED_CREATE)
    assert again.status_code == 200  # identical, secret included
    other_secret = {**SEED_CREATE, "parameters": {**SEED_CREATE["parameters"], "client_secret": "another-1"}}
    assert platform.call("PUT", "/service_instances/inst-appcube-1", other_secret).status_code == 409
    assert "buyer-Secret-42" not in stored_text()
    with connected():
        assert Nonce.select().count() == 0  # a token call has no nonce: nothing in the replay store
        assert {c.interface for c in CallLog.select()} == {"broker"}


def test_a_token_from_a_json_body_and_the_oauth_errors(
    client: FlaskClient, credentials: clients.Credentials
) -> None:
    good = {
        "grant_type": "client_credentials",
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
    }
    issued = client.post(TOKEN_PATH, json=good)
    assert issued.status_code == 200
    assert issued.get_json()["token_type"] == "Bearer" and issued.get_json()["expires_in"] == 3600
    assert issued.headers["Cache-Control"] == "no-store"

    wrong = client.post(TOKEN_PATH, data={**good, "client_secret": "nope"})
    assert (wrong.status_code, wrong.get_json()["error"]) == (401, "invalid_client")
    grant = client.post(TOKEN_PATH, data={**good, "grant_type": "password"})
    assert (grant.status_code, grant.get_json()["error"]) == (400, "unsupported_grant_type")
    missing = client.post(
        TOKEN_PATH, data={"client_id": good["client_id"], "client_secret": good["client_secret"]}
    )
    assert (missing.status_code, missing.get_json()["error"]) == (400, "invalid_request")
    assert credentials.client_secret not in stored_text()
    assert issued.get_json()["access_token"] not in stored_text()  # only its digest is kept


def test_failed_token_requests_are_limited_per_source(
    client: FlaskClient, credentials: clients.Credentials
) -> None:
    bad = {"grant_type": "client_credentials", "client_id": credentials.client_id, "client_secret": "x"}
    statuses = [client.post(TOKEN_PATH, data=bad).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    good = {**bad, "client_secret": credentials.client_secret}
    assert client.post(TOKEN_PATH, data=good).status_code == 429  # even the right secret, this minute


def test_no_expired_or_revoked_credentials_get_in(platform: Platform) -> None:
    assert platform.call("GET", "/catalog", **{"access-token": ""}).status_code == 401
    assert platform.client.get(f"{PREFIX}/catalog").status_code == 401  # no credentials at all
    with connected():
        BrokerToken.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
    expired = platform.call("GET", "/catalog")
    assert (expired.status_code, expired.get_json()["error"]) == (401, "Unauthorized")
    platform.login()
    assert platform.call("GET", "/catalog").status_code == 200
    with connected():
        clients.remove(platform.credentials.client_id)
    assert platform.call("GET", "/catalog").status_code == 401


def test_http_basic_and_bearer_work_as_the_token_header_does(platform: Platform) -> None:
    token = platform.headers["access-token"]
    platform.headers = {}
    assert platform.call("GET", "/v2/catalog", **platform.basic()).status_code == 200
    assert platform.call("GET", "/v2/catalog", Authorization=f"Bearer {token}").status_code == 200
    wrong = {"Authorization": "Basic " + "bm9wZTpub3Bl"}  # nope:nope
    assert platform.call("GET", "/v2/catalog", **wrong).status_code == 401


def test_the_api_version_when_sent_must_be_2_13_or_later(platform: Platform) -> None:
    old = platform.call("GET", "/catalog", **{"X-Broker-API-Version": "2.12"})
    assert old.status_code == 412
    assert platform.call("GET", "/catalog", **{"X-Broker-API-Version": "2.17"}).status_code == 200
    echoed = platform.call("GET", "/catalog", **{"X-Broker-API-Request-Identity": "req-77"})
    assert echoed.headers["X-Broker-API-Request-Identity"] == "req-77"


def test_identical_conflicting_and_invalid_creations(platform: Platform) -> None:
    path = "/service_instances/inst-2"
    assert platform.call("PUT", path, GOLD_CREATE).status_code == 201
    again = platform.call("PUT", path, GOLD_CREATE)
    assert again.status_code == 200
    conflict = platform.call("PUT", path, {**GOLD_CREATE, "parameters": {"seats": 4}})
    assert conflict.status_code == 409
    invalid = platform.call("PUT", "/service_instances/inst-3", {**GOLD_CREATE, "parameters": {"seats": 0}})
    assert invalid.status_code == 400
    assert "seats" in invalid.get_json()["description"]
    unknown = platform.call("PUT", "/service_instances/inst-3", {**GOLD_CREATE, "plan_id": "nope"})
    assert unknown.status_code == 400
    not_json = platform.client.put(
        f"{PREFIX}/service_instances/inst-3",
        data=b"{",
        content_type="application/json",
        headers=platform.headers,
    )
    assert not_json.status_code == 400
    stale = platform.call(
        "PUT", "/service_instances/inst-3", {**GOLD_CREATE, "maintenance_info": {"version": "0.9.0"}}
    )
    assert (stale.status_code, stale.get_json()["error"]) == (422, "MaintenanceInfoConflict")
    with connected():
        assert [i.instance_id for i in Instance.select()] == ["inst-2"]


def test_an_id_of_another_marketplace_is_a_conflict_and_never_released(platform: Platform, app) -> None:
    from isvserver.runtime import runtime

    with app.app_context(), connected():
        runtime().lifecycle.create("koogallery", "order:x", "kg-1")
    assert platform.call("PUT", "/service_instances/kg-1", GOLD_CREATE).status_code == 409
    assert platform.call("DELETE", "/service_instances/kg-1").status_code == 410
    assert platform.call("GET", "/service_instances/kg-1").status_code == 404
    with connected():
        assert Instance.get(Instance.instance_id == "kg-1").state == "active"


def test_update_and_deprovision(platform: Platform) -> None:
    path = "/service_instances/inst-4"
    assert (
        platform.call(
            "PUT", path, {**GOLD_CREATE, "parameters": {"seats": 2, "admin_password": "pw-Secret-9"}}
        ).status_code
        == 201
    )
    changed = platform.call("PATCH", path, {"service_id": "svc-gold", "plan_id": "plan-large"})
    assert changed.status_code == 200
    assert (
        platform.call("PATCH", path, {"service_id": "svc-gold", "plan_id": "plan-large"}).status_code == 200
    )
    read = platform.call("GET", path).get_json()
    assert (read["plan_id"], read["parameters"]) == ("plan-large", {"seats": 2, "admin_password": "******"})
    with connected():
        kinds = [e.kind for e in InstanceEvent.select().order_by(InstanceEvent.id)]
        upgrade = InstanceEvent.get(InstanceEvent.kind == "upgraded")
    assert kinds == ["created", "provisioned", "upgraded"]
    assert json.loads(upgrade.detail)["plan_id"] == "plan-large"

    seed = "/service_instances/inst-5"
    assert platform.call("PUT", seed, SEED_CREATE).status_code == 201
    refused = platform.call("PATCH", seed, {"service_id": SEED_SERVICE, "plan_id": "other"})
    assert refused.status_code == 400

    assert platform.call("DELETE", f"{path}?service_id=svc-gold&plan_id=plan-large").status_code == 200
    assert platform.call("DELETE", path).status_code == 410
    assert platform.call("DELETE", "/service_instances/never-was").status_code == 410
    assert platform.call("GET", path).status_code == 404
    assert platform.call("GET", f"{path}/last_operation").status_code == 410
    assert (
        platform.call(
            "PUT", path, {**GOLD_CREATE, "parameters": {"seats": 2, "admin_password": "pw-Secret-9"}}
        ).status_code
        == 409
    )
    assert "pw-Secret-9" not in stored_text()


def test_the_openapi_document_lists_the_broker(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert TOKEN_PATH in paths
    assert set(paths["/service/CP_DS__AppCubeBrokerDemo/1.0.0/service_instances/{instance_id}"]) == {
        "put",
        "get",
        "patch",
        "delete",
    }


def test_errors_on_broker_paths_are_the_brokers_and_never_a_5xx_on_delete(platform: Platform) -> None:
    missing = platform.call("GET", "/nothing")
    assert (missing.status_code, missing.get_json()) == (404, {"description": "not found"})
    method = platform.call("POST", "/catalog")
    assert method.status_code == 405


def test_a_delete_that_breaks_is_never_answered_with_a_5xx(platform: Platform, monkeypatch: Any) -> None:
    from isvserver.marketplaces.broker import views

    assert platform.call("PUT", "/service_instances/inst-9", GOLD_CREATE).status_code == 201

    def broken(rt: Any, data: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(views.ENDPOINTS["deprovision"], "handler", broken)
    inside = platform.call("DELETE", "/service_instances/inst-9")
    assert (inside.status_code, inside.get_json()["error"]) == (422, "ConcurrencyError")
    monkeypatch.setattr(views.ENDPOINTS["fetch"], "handler", broken)
    assert platform.call("GET", "/service_instances/inst-9").status_code == 500  # any other call: its 500

    def outside(endpoint: Any) -> Any:
        raise RuntimeError("before the pipeline")

    monkeypatch.setattr(views.calls, "handle", outside)
    before = platform.call("DELETE", "/service_instances/inst-9")
    assert (before.status_code, before.get_json()["error"]) == (422, "ConcurrencyError")
    assert platform.call("GET", "/service_instances/inst-9").status_code == 500
    with connected():
        assert Instance.get(Instance.instance_id == "inst-9").state == "active"


def test_bad_bodies_and_credentials_get_the_interfaces_own_answers(platform: Platform) -> None:
    client = platform.client
    listed = client.post(TOKEN_PATH, data=b"[1]", content_type="application/json")
    assert (listed.status_code, listed.get_json()["error"]) == (400, "invalid_request")
    garbled = client.post(TOKEN_PATH, data=b"\xff\xfe", content_type="application/x-www-form-urlencoded")
    assert garbled.status_code == 400
    for authorization in ("Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Basic eDo="):
        assert (
            platform.call(
                "GET", "/catalog", **{"access-token": "", "Authorization": authorization}
            ).status_code
            == 401
        )

    path = "/service_instances/bad-1"
    assert platform.call("PUT", path, {**GOLD_CREATE, "parameters": [1]}).status_code == 400
    assert platform.call("PUT", path, {**GOLD_CREATE, "service_id": 5}).status_code == 400
    assert platform.call("PUT", path, {**GOLD_CREATE, "parameters": {"seats": "\u0000"}}).status_code == 400
    assert platform.call("PUT", path, {**GOLD_CREATE, "parameters": None}).status_code == 201
    assert platform.call("PATCH", path, {"service_id": "svc-gold", "parameters": [1]}).status_code == 400
    assert platform.call("PATCH", path, {"service_id": "nope"}).status_code == 400
    assert platform.call("PATCH", path, {"service_id": SEED_SERVICE, "plan_id": SEED_PLAN}).status_code == 400
    assert platform.call("PATCH", path, {"plan_id": "plan-large"}).status_code == 400  # service_id missing
    invalid = platform.call("PATCH", path, {"service_id": "svc-gold", "parameters": {"seats": 0}})
    assert (invalid.status_code, "seats" in invalid.get_json()["description"]) == (400, True)
    assert platform.call("PATCH", "/service_instances/nobody", {"service_id": "svc-gold"}).status_code == 404
    assert platform.call("GET", "/service_instances/nobody/last_operation").status_code == 404
    assert platform.call("DELETE", path).status_code == 200
    assert platform.call("PATCH", path, {"service_id": "svc-gold"}).status_code == 404


def test_metrics_count_the_brokers_calls_under_its_interface(platform: Platform) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = platform.client.get("/metrics").get_data(as_text=True)
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    ok = ("isv_requests_total", (("activity", "catalog"), ("interface", "broker"), ("result_code", "200")))
    refused = ("isv_rejected_calls_total", (("interface", "broker"), ("reason", "bad_token")))
    before = counted()
    platform.call("GET", "/catalog")
    platform.call("GET", "/catalog", **{"access-token": "nope"})
    after = counted()
    assert after[ok] == before.get(ok, 0) + 1
    assert after[refused] == before.get(refused, 0) + 1
