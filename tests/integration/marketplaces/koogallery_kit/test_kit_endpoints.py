"""The Kit sync endpoints through the real pipeline: x-sign, replay, validation, storage, signed replies."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.db import connected
from isvserver.marketplaces.koogallery_kit.client_secret import encrypt_client_secret, generate_key_pair
from isvserver.marketplaces.koogallery_kit.models import KitApplication, KitOrg, KitTenant, KitUser
from isvserver.marketplaces.koogallery_kit.signing import kit_signature
from isvserver.marketplaces.koogallery_kit.views import body_sign
from isvserver.models import CallLog
from isvserver.sealing import unseal
from isvserver.settings import load_settings

from support.harness import ACCESS_KEY, DATA_KEY, base_env

KIT_KEY = "kit-key-0f3b2a91"
PATH = "/saasproduce/produceAPI/v2"
PRIVATE_PEM, PUBLIC_PEM = generate_key_pair()
PUBLIC_KEY = serialization.load_pem_public_key(PUBLIC_PEM)


@pytest.fixture
def kit(tmp_path, database_url) -> FlaskClient:
    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS=KIT_KEY,
        ISV_KIT_PRIVATE_KEY=PRIVATE_PEM.decode("ascii"),
    )
    app = create_app(load_settings(env))
    yield app.test_client()
    db.close_all()


def send(client: FlaskClient, activity: str, body: dict[str, Any], key: str = KIT_KEY, nonce: str = ""):
    """POST a signed Kit call; the reply's JSON and whether its Body-Sign is the Kit key's."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp, nonce = str(int(time.time() * 1000)), nonce or secrets.token_hex(16)
    headers = {
        "x-sign": kit_signature(key, nonce, timestamp, raw),
        "x-timestamp": timestamp,
        "x-nonce": nonce,
    }
    response = client.post(f"{PATH}/{activity}", data=raw, headers=headers, content_type="application/json")
    assert response.status_code == 200
    assert response.headers["Body-Sign"] == body_sign(KIT_KEY, response.data)
    return response.get_json()


def tenant(flag: int = 1, test_flag: int = 0, **changes: Any) -> dict[str, Any]:
    return {
        "instanceId": "inst-1",
        "orderId": "CS1",
        "tenantId": "t-1",
        "tenantCode": "acme",
        "name": "某某科技有限公司",
        "domainName": "acme.example.com",
        "flag": flag,
        "testFlag": test_flag,
        "timeStamp": "20220420114117642",
        **changes,
    }


def application(secret: str) -> dict[str, Any]:
    return {
        "instanceId": "inst-1",
        "tenantId": "t-1",
        "appId": "app-1",
        "clientId": "client-1",
        "clientSecret": secret,
        "flag": 1,
        "testFlag": 0,
        "timeStamp": "20220420114117642",
    }


def test_tenant_sync_is_stored_once_and_answered_signed(kit: FlaskClient) -> None:
    assert send(kit, "tenantSync", tenant()) == {"resultCode": "000000", "resultMsg": "success"}
    assert send(kit, "tenantSync", tenant())["resultCode"] == "000000"
    with connected():
        rows = list(KitTenant.select())
        logged = [(c.interface, c.activity, c.result_code) for c in CallLog.select()]
    assert [(r.instance_id, r.tenant_code) for r in rows] == [("inst-1", "acme")]
    assert "某某" not in (rows[0].name_sealed or "")
    assert logged == [("koogallery.kit", "tenantSync", "000000")] * 2


def test_debug_calls_store_nothing(kit: FlaskClient) -> None:
    assert send(kit, "tenantSync", tenant(test_flag=1))["resultCode"] == "000000"
    with connected():
        assert KitTenant.select().count() == 0
        assert CallLog.get().test_flag is True


def test_a_basic_key_never_verifies_a_kit_call_and_a_replay_is_refused(kit: FlaskClient) -> None:
    assert send(kit, "tenantSync", tenant(), key=ACCESS_KEY)["resultCode"] == "000001"
    first = send(kit, "tenantSync", tenant(), nonce="n-1")
    again = send(kit, "tenantSync", tenant(tenantCode="other"), nonce="n-1")
    assert (first["resultCode"], again["resultCode"]) == ("000000", "000001")
    with connected():
        assert [r.tenant_code for r in KitTenant.select()] == ["acme"]


def test_invalid_input_is_000002_and_changes_nothing(kit: FlaskClient) -> None:
    for bad in (tenant(flag=True), tenant(flag=7), tenant(tenantCode=""), tenant(testFlag="0")):
        assert send(kit, "tenantSync", bad)["resultCode"] == "000002"
    with connected():
        assert KitTenant.select().count() == 0


@pytest.mark.parametrize("mode", ["sha256", "garbage"])
def test_application_secret_decrypts_or_is_000101(kit: FlaskClient, mode: str) -> None:
    secret = encrypt_client_secret(PUBLIC_KEY, "s3cr3t-value") if mode == "sha256" else "bm90IGEgY2lwaGVy"
    answer = send(kit, "applicationSync", application(secret))
    with connected():
        apps = list(KitApplication.select())
    if mode == "garbage":
        assert answer["resultCode"] == "000101"
        assert apps == []
        return
    assert answer["resultCode"] == "000000"
    assert [a.client_id for a in apps] == ["client-1"]
    assert "s3cr3t-value" not in apps[0].client_secret_sealed


def test_auth_sync_of_500_users_is_one_change(kit: FlaskClient) -> None:
    users = [
        {"userName": f"u{i}", "name": f"用户{i}", "orgCode": "root", "role": "user", "enable": "true"}
        for i in range(500)
    ]
    body = {
        "instanceId": "inst-1",
        "tenantId": "t-1",
        "appId": "app-1",
        "userList": users,
        "flag": 1,
        "testFlag": 0,
        "timeStamp": "20220420114117642",
    }
    assert send(kit, "authSync", body)["resultCode"] == "000000"
    with connected():
        assert KitUser.select().count() == 500
        sealed = KitUser.get(KitUser.user_name == "u1").name_sealed
    assert "用户1" not in sealed
    assert unseal((DATA_KEY.encode(),), sealed) == "用户1"


def test_unknown_activity_is_a_signed_404(kit: FlaskClient) -> None:
    response = kit.post(f"{PATH}/noSuchSync", data=b"{}", content_type="application/json")
    assert response.status_code == 404
    assert response.headers["Body-Sign"] == body_sign(KIT_KEY, response.data)


def auth_sync(employee_type: Any) -> dict[str, Any]:
    user = {"userName": "u1", "name": "用户", "orgCode": "root", "role": "user", "enable": "true"}
    return {
        "instanceId": "inst-1",
        "tenantId": "t-1",
        "appId": "app-1",
        "userList": [{**user, "employeeType": employee_type}],
        "flag": 1,
        "testFlag": 0,
        "timeStamp": "20220420114117642",
    }


@pytest.mark.parametrize("employee_type", [2**63, 10**20, -(2**63) - 1, 2**31, -(2**31) - 1])
def test_an_employee_type_no_integer_column_holds_is_000002_and_nothing_is_stored(
    kit: FlaskClient, employee_type: int
) -> None:
    answer = send(kit, "authSync", auth_sync(employee_type))
    assert answer["resultCode"] == "000002", answer
    assert "userList[0].employeeType" in answer["resultMsg"]
    with connected():
        assert KitUser.select().count() == 0
        assert CallLog.select().order_by(CallLog.id.desc()).get().result_code == "000002"


@pytest.mark.parametrize("employee_type", [2**31 - 1, -(2**31), 0])
def test_an_employee_type_within_the_columns_range_is_stored(kit: FlaskClient, employee_type: int) -> None:
    assert send(kit, "authSync", auth_sync(employee_type))["resultCode"] == "000000"
    with connected():
        assert KitUser.get(KitUser.user_name == "u1").employee_type == employee_type


@pytest.mark.parametrize("bad", ["\ud800", "\udfff", "a\x00b"])
def test_an_org_info_list_string_holding_unstorable_text_is_000002_and_nothing_is_stored(
    kit: FlaskClient, bad: str
) -> None:
    orgs = json.dumps([{"orgCode": "root", "orgName": f"总部{bad}"}])  # escaped: the body itself is valid
    body = {"instanceId": "inst-1", "tenantId": "t-1", "orgInfoList": orgs, "testFlag": 0,
            "timeStamp": "20220420114117642"}  # fmt: skip
    answer = send(kit, "allOrgSync", body)
    assert answer["resultCode"] == "000002", answer
    assert "orgInfoList" in answer["resultMsg"] or "not valid text" in answer["resultMsg"], answer
    with connected():
        assert KitOrg.select().count() == 0


@pytest.mark.parametrize("method", ["OPTIONS", "GET", "PUT"])
def test_other_methods_on_a_kit_path_are_a_signed_405(kit: FlaskClient, method: str) -> None:
    response = kit.open(f"{PATH}/tenantSync", method=method)
    assert response.status_code == 405
    assert response.get_json()["resultCode"] == "000002"
    assert response.headers["Body-Sign"] == body_sign(KIT_KEY, response.data)
    assert "POST" in response.headers["Allow"]
