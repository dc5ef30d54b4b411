"""V1 Kit sync (spec §2.4) through the real pipeline: the authToken header over the body's fields, V1's
string forms, the same store, events and idempotency as V2 Kit, replies signed with the Kit key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.body_sign import body_sign_valid
from isvserver.db import connected
from isvserver.marketplaces.koogallery_kit.client_secret import encrypt_client_secret, generate_key_pair
from isvserver.marketplaces.koogallery_kit.models import KitApplication, KitOrg, KitTenant, KitUser
from isvserver.models import CallLog, Nonce, ParkedChange
from isvserver.settings import load_settings

from support.harness import ACCESS_KEY, base_env

KIT_KEY = "kit-key-v1-5e7d21"
BASE = "/saasproduce/produceAPI"
PRIVATE_PEM, PUBLIC_PEM = generate_key_pair()
PUBLIC_KEY = serialization.load_pem_public_key(PUBLIC_PEM)


@pytest.fixture
def kit(tmp_path, database_url) -> Iterator[FlaskClient]:
    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS=KIT_KEY,
        ISV_KIT_PRIVATE_KEY=PRIVATE_PEM.decode("ascii"),
    )
    yield create_app(load_settings(env)).test_client()
    db.close_all()


def now_stamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"


def token(key: str, body: dict[str, Any]) -> str:
    """Spec §2.4 written out here: top-level fields sorted, k=v&…, key + timeStamp, Base64."""
    text = {k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for k, v in body.items()}
    joined = "&".join(f"{k}={text[k]}" for k in sorted(text))
    digest = hmac.new((key + body["timeStamp"]).encode(), joined.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def send(
    client: FlaskClient, activity: str, body: dict[str, Any], key: str = KIT_KEY, auth: str | None = None
):
    raw = json.dumps(body, ensure_ascii=False).encode()
    headers = {"authToken": auth if auth is not None else token(key, body)}
    response = client.post(f"{BASE}/{activity}", data=raw, headers=headers, content_type="application/json")
    assert response.status_code == 200
    assert body_sign_valid(KIT_KEY, response.data, response.headers.get("Body-Sign"))
    return response.get_json()


def common(**more: Any) -> dict[str, Any]:
    base = {"instanceId": "inst-v1", "tenantId": "t-v1", "testFlag": "0", "timeStamp": now_stamp()}
    return {**base, **more}


def tenant(**more: Any) -> dict[str, Any]:
    fields = {
        "orderId": "CSV1",
        "tenantCode": "acme",
        "name": "某公司",
        "domainName": "acme.example",
        "flag": "1",
    }
    return common(**{**fields, **more})


def test_every_v1_sync_lands_in_the_kit_store_once(kit: FlaskClient) -> None:
    users = json.dumps(
        [
            {
                "userName": "li",
                "name": "李四",
                "orgCode": "d1",
                "role": "admin",
                "enable": "true",
                "employeeType": "1",
                "mobile": "13800000002",
            }
        ]
    )
    tree = json.dumps(
        [{"orgCode": "root", "orgName": "总部"}, {"orgCode": "d1", "orgName": "一部", "parentCode": "root"}]
    )
    secret = encrypt_client_secret(PUBLIC_KEY, "v1-secret")
    calls = [
        ("tenantSync", tenant()),
        ("applicationSync", common(appId="a1", clientId="c1", clientSecret=secret, flag="1")),
        ("authSync", common(appId="a1", userList=users, flag="1")),
        ("singleOrgSync", common(orgCode="d2", orgName="二部", parentCode="root", flag="1")),
        ("allOrgSync", common(orgInfoList=tree)),
    ]
    for activity, body in calls:  # each resent at once (new timeStamp, new token): nothing new
        assert send(kit, activity, body) == {"resultCode": "000000", "resultMsg": "success"}, activity
        assert send(kit, activity, {**body, "timeStamp": now_stamp()})["resultCode"] == "000000"
    with connected():
        assert [(t.tenant_code, t.order_id) for t in KitTenant.select()] == [("acme", "CSV1")]
        assert [a.client_id for a in KitApplication.select()] == ["c1"]
        assert [(u.user_name, u.employee_type) for u in KitUser.select()] == [("li", 1)]
        orgs = {o.org_code: o.deleted_at is None for o in KitOrg.select()}
        parked = ParkedChange.select().count()
        logged = {(c.interface, c.result_code) for c in CallLog.select()}
    assert orgs == {"root": True, "d1": True, "d2": False}  # allOrgSync replaced the tree
    assert parked == 5  # one event per change, parked until the instance exists (as V2 Kit)
    assert logged == {("koogallery.kit.v1", "000000")}


def test_v1_and_v2_kit_share_one_store(kit: FlaskClient) -> None:
    from isvserver.marketplaces.koogallery_kit.signing import kit_signature

    assert send(kit, "tenantSync", tenant())["resultCode"] == "000000"
    body = {**tenant(), "flag": 1, "testFlag": 0}
    raw = json.dumps(body).encode()
    stamp = str(int(datetime.now(UTC).timestamp() * 1000))
    headers = {
        "x-sign": kit_signature(KIT_KEY, "nonce-v2", stamp, raw),
        "x-timestamp": stamp,
        "x-nonce": "nonce-v2",
    }
    v2 = kit.post(f"{BASE}/v2/tenantSync", data=raw, headers=headers, content_type="application/json")
    assert v2.get_json()["resultCode"] == "000000"
    with connected():
        assert KitTenant.select().count() == 1
        assert ParkedChange.select().count() == 1  # the V2 resend of the same tenant changed nothing


def test_v1_kit_authentication(kit: FlaskClient) -> None:
    body = tenant()
    good = token(KIT_KEY, body)
    assert send(kit, "tenantSync", body, auth=good)["resultCode"] == "000000"
    replayed = send(kit, "tenantSync", body, auth=good)
    assert replayed["resultCode"] == "000001" and "already used" in replayed["resultMsg"]
    assert send(kit, "tenantSync", tenant(), key=ACCESS_KEY)["resultCode"] == "000001"  # basic key: no
    assert send(kit, "tenantSync", {**body, "name": "changed"}, auth=good)["resultCode"] == "000001"
    assert send(kit, "tenantSync", tenant(), auth="")["resultCode"] == "000001"
    stale = tenant(timeStamp="20200101000000000")
    assert send(kit, "tenantSync", stale)["resultMsg"].startswith("timeStamp is outside")
    assert send(kit, "tenantSync", tenant(timeStamp="yesterday"))["resultCode"] == "000002"
    assert send(kit, "tenantSync", tenant(flag="7"))["resultCode"] == "000002"
    assert send(kit, "authSync", common(appId="a", userList="[not json", flag="1"))["resultCode"] == "000002"
    unknown = kit.post(
        f"{BASE}/nothing", data=b"{}", headers={"authToken": "x"}, content_type="application/json"
    )
    assert unknown.status_code == 404 and body_sign_valid(KIT_KEY, unknown.data, unknown.headers["Body-Sign"])
    response = kit.post(
        f"{BASE}/tenantSync", data=b"[]", headers={"authToken": "x"}, content_type="application/json"
    )
    assert response.get_json()["resultCode"] == "000002"
    with connected():
        kept = [n.seen_at for n in Nonce.select()]
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert len(kept) == 3  # the authentic calls' tokens (the good one, flag 7, the bad userList)
    assert all(now_ms + 100_000 < k < now_ms + 130_000 for k in kept)  # kept for 2 x the V1 window


def test_v1_kit_debug_calls_store_nothing(kit: FlaskClient) -> None:
    assert send(kit, "tenantSync", tenant(testFlag="1"))["resultMsg"] == "success (debug request)"
    with connected():
        assert KitTenant.select().count() == 0
        assert CallLog.get().test_flag is True
