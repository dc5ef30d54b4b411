"""POST /v1/usage through the app: product tokens, per-record answers, nothing stored on a refusal."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import db, usage
from isvserver.models import UsageRecord, utcnow
from isvserver.parts.product_api import tokens
from isvserver.settings import load_settings

from support.harness import Marketplace


def wire(moment) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
def token(app: Flask) -> str:
    return tokens.add("billing")


@pytest.fixture
def instance_id(app: Flask, marketplace: Marketplace) -> str:
    instance_id = marketplace.new_instance("CSAPI", business_id="api-inst-1").json["instanceId"]
    usage.mark_on_demand(instance_id)
    return instance_id


END = utcnow().replace(microsecond=0) - timedelta(minutes=10)  # one moment: a resend is the same record


def record(instance_id: str, sn: str, value: object = 2) -> dict[str, object]:
    end = END
    return {
        "instanceId": instance_id,
        "meteringSn": sn,
        "beginTime": (end - timedelta(hours=1)).isoformat() + "Z",
        "endTime": wire(end),
        "value": value,
    }


def post(client: FlaskClient, body: object, token: str | None, **headers: str):
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post("/v1/usage", data=data, headers={"Content-Type": "application/json", **headers})


def stored() -> list[UsageRecord]:
    with db.connected():
        return list(UsageRecord.select().order_by(UsageRecord.id))


def test_records_are_answered_one_by_one_in_order(client: FlaskClient, token: str, instance_id: str) -> None:
    body = {
        "records": [
            record(instance_id, "a-1", 1.25),
            record(instance_id, "a-2", "0.0001"),
            record("nobody", "a-3"),
            record(instance_id, "a-1", 1.25),
            record(instance_id, "a-2", "7"),
            "not a record",
        ]
    }
    response = post(client, body, token)
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["accepted"], answer["duplicate"], answer["refused"]) == (2, 1, 3)
    assert [(r["meteringSn"], r["status"], r.get("code")) for r in answer["records"]] == [
        ("a-1", "accepted", None),
        ("a-2", "accepted", None),
        ("a-3", "refused", "unknown_instance"),
        ("a-1", "duplicate", None),
        ("a-2", "refused", "conflict"),
        (None, "refused", "invalid"),
    ]
    assert "value" in answer["records"][4]["reason"]
    rows = stored()
    assert [(r.metering_sn, str(r.usage_value), r.source, r.source_name) for r in rows] == [
        ("a-1", "1.25", "http", "billing"),
        ("a-2", "0.0001", "http", "billing"),
    ]
    again = post(client, {"records": [record(instance_id, "a-1", 1.25)]}, token).get_json()
    assert again["duplicate"] == 1 and len(stored()) == 2


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "no header"),
        ("Bearer", "no token"),
        ("Basic dXNlcjpwYXNz", "another scheme"),
        ("Bearer isvp_" + "A" * 43, "an unknown token"),
        ("Bearer isvp_é" + "A" * 42, "non-ASCII"),
    ],
)
def test_calls_without_a_valid_token_are_refused_and_store_nothing(
    client: FlaskClient, instance_id: str, token: str, header: str | None, why: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = post(client, {"records": [record(instance_id, "x-1")]}, None, **headers)
    assert response.status_code == 401, why
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "product token" in response.get_json()["error"]
    assert token not in response.get_data(as_text=True)
    assert stored() == []


def test_a_revoked_token_is_refused(client: FlaskClient, instance_id: str, token: str) -> None:
    assert post(client, {"records": [record(instance_id, "r-1")]}, token).status_code == 200
    assert tokens.revoke("billing") and not tokens.revoke("billing")
    assert post(client, {"records": [record(instance_id, "r-2")]}, token).status_code == 401
    assert [r.metering_sn for r in stored()] == ["r-1"]
    (row,) = tokens.listing()
    assert row.revoked_at is not None and row.last_used_at is not None and row.hint == token[:9]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"records": NaN}', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"records": {}}', "JSON object"),
        (b'{"records": []}', "1 to 1000"),
    ],
)
def test_a_body_that_is_no_record_list_is_a_400(
    client: FlaskClient, token: str, body: bytes, message: str
) -> None:
    response = post(client, body, token)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_more_than_1000_records_or_a_huge_body_store_nothing(
    client: FlaskClient, token: str, instance_id: str
) -> None:
    records = [record(instance_id, f"m-{n}") for n in range(1001)]
    response = post(client, {"records": records}, token)
    assert response.status_code == 400 and "1001" in response.get_json()["error"]
    huge = json.dumps({"records": [record(instance_id, "h-1")], "pad": "x" * (1 << 20)})
    response = post(client, huge.encode(), token)
    assert response.status_code == 413
    assert stored() == []
    full = post(client, {"records": records[:1000]}, token)  # 1000 records fit the limit
    assert full.status_code == 200 and full.get_json()["accepted"] == 1000


def test_only_post_is_answered(client: FlaskClient, token: str) -> None:
    response = client.get("/v1/usage", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405


def test_a_database_failure_answers_503_and_stores_nothing(
    client: FlaskClient, token: str, instance_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(usage, "record_many", broken)
    response = post(client, {"records": [record(instance_id, "f-1")]}, token)
    assert response.status_code == 503 and "nothing was stored" in response.get_json()["error"]
    monkeypatch.setattr(tokens.ProductToken, "get_or_none", broken)
    assert post(client, {"records": [record(instance_id, "f-1")]}, token).status_code == 503
    monkeypatch.undo()
    assert stored() == []


def test_token_names_are_checked_and_unique(app: Flask) -> None:
    tokens.add("one")
    with pytest.raises(tokens.TokenError, match="exists"):
        tokens.add("one")
    with pytest.raises(tokens.TokenError, match="letters"):
        tokens.add("no spaces")
    with pytest.raises(tokens.TokenError, match="no token"):
        tokens.revoke("two")


def test_isv_parts_enables_and_disables_the_part(env: dict[str, str]) -> None:
    assert load_settings(env).parts == ("product_api",)
    assert load_settings({**env, "ISV_PARTS": "none"}).parts == ()
    with pytest.raises(Exception, match="no part 'console2'"):
        load_settings({**env, "ISV_PARTS": "product_api,console2"})


def test_the_openapi_document_describes_post_usage(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert "post" in spec["paths"]["/v1/usage"]
    assert spec["components"]["schemas"]["UsageIn"]["properties"]["records"]["maxItems"] == 1000


def test_two_calls_racing_with_the_same_records_store_each_once(
    app: Flask, token: str, instance_id: str
) -> None:
    import threading

    batch = {"records": [record(instance_id, f"race-{n}") for n in range(300)]}
    start = threading.Barrier(2)
    answers: list[dict] = []

    def send() -> None:
        client = app.test_client()
        start.wait()
        response = post(client, batch, token)
        assert response.status_code == 200
        answers.append(response.get_json())

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 2
    assert sorted((a["accepted"], a["duplicate"]) for a in answers) == [(0, 300), (300, 0)]
    assert len(stored()) == 300
