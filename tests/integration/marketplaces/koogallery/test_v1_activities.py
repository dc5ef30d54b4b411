"""Every V1 basic and License activity through the HTTP surface (spec §9, §3, §4), on SQLite and PostgreSQL,
with V2 answered on the same URL."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from isvserver import db, licenses
from isvserver.marketplaces.koogallery.credentials import decrypt_credential, encrypt_credential
from isvserver.marketplaces.koogallery.v1.marketplace import signed_query
from isvserver.marketplaces.koogallery.v1.models import License, V1Buyer
from isvserver.marketplaces.koogallery.v1.schemas import encode_extend_params
from isvserver.models import CallLog, Instance, InstanceEvent, Nonce
from isvserver.sealing import unseal

from support.harness import ACCESS_KEY, DATA_KEY, SECOND_ACCESS_KEY, FixedClock, Marketplace, instance_row

OK, AUTH, INVALID, NOT_FOUND, INTERNAL = "000000", "000001", "000002", "000003", "000005"
SEED, PUBLIC = licenses.keygen()


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    env["ISV_LICENSE_SIGNING_KEY"] = SEED
    return env


def send(client: FlaskClient, key: str = ACCESS_KEY, raw: str | None = None, **params: str) -> dict[str, Any]:
    """A signed V1 GET; asserts HTTP 200, JSON and a Body-Sign by `key` (spec §3)."""
    from isvserver.body_sign import body_sign_valid

    response = client.get("/saasproduce?" + (raw if raw is not None else signed_query(key, params)))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert body_sign_valid(key, response.data, response.headers.get("Body-Sign")), response.data
    return json.loads(response.data)


def purchase(order_id: str = "V1O1", business_id: str = "v1-biz-1", **extra: str) -> dict[str, str]:
    return {
        "activity": "newInstance",
        "customerId": "cust-1",
        "customerName": "张三",
        "businessId": business_id,
        "orderId": order_id,
        "skuCode": "sku-basic",
        "productId": "prod-1",
        **extra,
    }


def rows(model: Any) -> list[dict[str, Any]]:
    with db.connected():
        return list(model.select().order_by(model.id).dicts())


def events(instance_id: str) -> list[InstanceEvent]:
    with db.connected():
        query = InstanceEvent.select().join(Instance).where(Instance.instance_id == instance_id)
        return list(query.order_by(InstanceEvent.id))


def test_new_instance_creates_once_per_order_answers_encrypted_app_info_and_seals_the_buyer(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    extend = encode_extend_params({"domain": "shop.example", "seats": "10"})
    mobile = encrypt_credential(ACCESS_KEY, "13800000000")
    email = encrypt_credential(ACCESS_KEY, "buyer@example.com")
    first = send(
        client,
        **purchase(mobilePhone=mobile, email=email, saasExtendParams=extend, expireTime="20300101000000"),
        trialFlag="1",
        chargingMode="1",
    )
    assert first["resultCode"] == OK and first["instanceId"] == "v1-biz-1" and first["encryptType"] == "1"
    info = first["appInfo"]
    assert info["frontEndUrl"] == "https://app.example.com/t/v1-biz-1"
    user = decrypt_credential(ACCESS_KEY, info["userName"], 1)
    password = decrypt_credential(ACCESS_KEY, info["password"], 1)
    again = send(client, **purchase(business_id="v1-biz-2"))
    assert again["instanceId"] == "v1-biz-1"
    assert decrypt_credential(ACCESS_KEY, again["appInfo"]["userName"], 1) == user
    assert decrypt_credential(ACCESS_KEY, again["appInfo"]["password"], 1) == password
    row = instance_row("v1-biz-1")
    assert (row.product_id, row.is_trial, row.expire_at) == ("prod-1", True, datetime(2030, 1, 1))
    created = json.loads(events("v1-biz-1")[0].detail)
    assert created["extend_params"] == {"domain": "shop.example", "seats": "10"}
    assert created["sku_code"] == "sku-basic" and created["protocol"] == "v1"
    [buyer] = rows(V1Buyer)
    assert unseal(DATA_KEY.encode(), buyer["mobile_phone_sealed"]) == "13800000000"
    assert unseal(DATA_KEY.encode(), buyer["email_sealed"]) == "buyer@example.com"
    assert unseal(DATA_KEY.encode(), buyer["customer_name_sealed"]) == "张三"
    stored = json.dumps([rows(Instance), rows(InstanceEvent), rows(CallLog)], default=str)
    for secret in ("13800000000", "buyer@example.com", "张三", mobile, email):
        assert secret not in caplog.text and secret not in stored


def test_on_demand_orders_are_one_instance_per_order_and_product(client: FlaskClient) -> None:
    a = send(client, **purchase(chargingMode="0"))
    b = send(client, **purchase(business_id="v1-biz-b", chargingMode="0", productId="prod-2"))
    c = send(client, **purchase(business_id="v1-biz-c", chargingMode="0"))
    assert a["instanceId"] == c["instanceId"] != b["instanceId"]


def test_a_buyer_field_that_does_not_decrypt_is_000002_and_nothing_is_stored(client: FlaskClient) -> None:
    other = encrypt_credential("another-key", "13800000000")
    answer = send(client, **purchase(mobilePhone=other))
    assert answer["resultCode"] == INVALID and "mobilePhone does not decrypt" in answer["resultMsg"]
    assert "13800000000" not in answer["resultMsg"]
    assert rows(Instance) == [] and rows(V1Buyer) == []


def test_aes_128_when_configured(env: dict[str, str]) -> None:
    from isvserver import create_app
    from isvserver.settings import load_settings

    env["ISV_V1_ENCRYPT_TYPE"] = "2"
    client = create_app(load_settings(env)).test_client()
    answer = send(client, **purchase(mobilePhone=encrypt_credential(ACCESS_KEY, "13900000000", 2)))
    assert answer["resultCode"] == OK and answer["encryptType"] == "2"
    assert decrypt_credential(ACCESS_KEY, answer["appInfo"]["userName"], 2).startswith("admin_")
    query = send(client, activity="queryInstance", instanceId=answer["instanceId"])
    assert query["encryptType"] == "2"
    assert decrypt_credential(ACCESS_KEY, query["info"][0]["appInfo"]["password"], 2)
    db.close_all()


def test_every_activity_on_the_lifecycle_with_late_and_out_of_order_rules(client: FlaskClient) -> None:
    iid = send(client, **purchase(trialFlag="1"))["instanceId"]
    order = {"instanceId": iid, "orderId": "V1O1"}
    query = send(client, activity="queryInstance", instanceId=f"{iid},unknown-id")
    assert query["resultCode"] == OK and [i["instanceId"] for i in query["info"]] == [iid]
    renew = {
        "activity": "refreshInstance",
        "instanceId": iid,
        "orderId": "V1R1",
        "expireTime": "20310101000000",
    }
    assert send(client, **renew, trialToFormal="1")["resultCode"] == OK
    assert send(client, **renew, trialToFormal="1")["resultCode"] == OK  # a resend changes nothing
    row = instance_row(iid)
    assert (row.is_trial, row.expire_at) == (False, datetime(2031, 1, 1))
    assert send(client, activity="expireInstance", **order)["resultCode"] == OK
    assert instance_row(iid).state == "frozen"
    assert send(client, activity="expireInstance", **order)["resultCode"] == OK
    extend = encode_extend_params({"seats": "20"})
    up = {"activity": "upgrade", "instanceId": iid, "orderId": "V1U1", "skuCode": "sku-pro", "productId": "p"}
    assert send(client, **up, saasExtendParams=extend)["resultCode"] == OK
    assert send(client, **up)["resultCode"] == OK
    assert send(client, activity="releaseInstance", **order)["resultCode"] == OK
    assert send(client, activity="releaseInstance", **order)["resultCode"] == OK
    kinds = [e.kind for e in events(iid)]
    assert kinds == ["created", "provisioned", "trial_converted", "frozen", "upgraded", "released"]
    upgraded = json.loads(events(iid)[4].detail)
    assert upgraded["sku_code"] == "sku-pro" and upgraded["extend_params"] == {"seats": "20"}
    assert send(client, **{**renew, "orderId": "V1R2"})["resultCode"] == NOT_FOUND  # released
    assert send(client, activity="queryInstance", instanceId=iid)["resultCode"] == NOT_FOUND
    unknown = {"instanceId": "nobody", "orderId": "X"}
    assert send(client, activity="expireInstance", **unknown)["resultCode"] == NOT_FOUND
    assert send(client, activity="releaseInstance", **unknown)["resultCode"] == NOT_FOUND


def test_authentication_replay_window_and_failures_are_all_body_signed(
    client: FlaskClient, clock: FixedClock
) -> None:
    params = {"activity": "queryInstance", "instanceId": "x"}
    raw = signed_query(ACCESS_KEY, params)
    assert send(client, raw=raw)["resultCode"] == NOT_FOUND
    replayed = send(client, raw=raw)
    assert replayed["resultCode"] == AUTH and "already used" in replayed["resultMsg"]
    assert send(client, SECOND_ACCESS_KEY, **params)["resultCode"] == NOT_FOUND  # rotation
    assert send(client, raw=raw.replace("instanceId=x", "instanceId=y"))["resultCode"] == AUTH
    assert send(client, raw="activity=queryInstance")["resultCode"] == INVALID
    stale = signed_query(ACCESS_KEY, params, "20200101000000000")
    assert send(client, raw=stale)["resultMsg"].startswith("timeStamp is outside")
    assert send(client, activity="nothing")["resultCode"] == INVALID
    assert send(client, activity="newInstance", orderId="O")["resultCode"] == INVALID
    with db.connected():
        kept = [n.seen_at for n in Nonce.select()]
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert kept and all(now_ms + 100_000 < k < now_ms + 130_000 for k in kept)  # 2 x 60 s V1 window


def test_errors_on_the_path_answer_in_the_generation_of_the_method(client: FlaskClient) -> None:
    from isvserver.body_sign import body_sign_valid

    for method in ("put", "delete", "patch"):
        response = getattr(client, method)("/saasproduce")
        assert response.status_code == 405
        assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
        assert json.loads(response.data)["resultCode"] == INVALID


def test_v1_and_v2_on_one_url(client: FlaskClient, marketplace: Marketplace) -> None:
    v2 = marketplace.new_instance("V2O1", business_id="v2-biz")
    v1 = send(client, **purchase())
    assert v2.code == OK and v1["resultCode"] == OK
    assert marketplace.query("v2-biz", "v1-biz-1").code == OK  # V2 reads V1's instance, password plain
    query = send(client, activity="queryInstance", instanceId="v2-biz,v1-biz-1")
    assert len(query["info"]) == 2
    with db.connected():
        interfaces = [c.interface for c in CallLog.select().order_by(CallLog.id)]
    assert interfaces == ["koogallery.v2", "koogallery.v1", "koogallery.v2", "koogallery.v1"]


def test_test_flag_touches_nothing(client: FlaskClient) -> None:
    answer = send(client, **purchase(), testFlag="1")
    assert answer["resultCode"] == OK and answer["instanceId"].startswith("test-")
    assert answer["appInfo"]["frontEndUrl"].endswith(answer["instanceId"])
    assert (
        send(client, activity="queryInstance", instanceId="abc", testFlag="1")["info"][0]["instanceId"]
        == "abc"
    )
    assert (
        send(client, activity="releaseInstance", instanceId="abc", orderId="o", testFlag="1")["resultCode"]
        == OK
    )
    assert send(client, **{**purchase(), "activity": "getLicense"}, testFlag="1")["license"].startswith(
        "TEST-"
    )
    assert rows(Instance) == []


def test_license_activities(client: FlaskClient) -> None:
    buy = {**purchase("LIC1", "lic-biz-1"), "activity": "getLicense", "expireTime": "20300101000000"}
    first = send(client, **buy)
    assert first["resultCode"] == OK and first["instanceId"] == "lic-biz-1"
    payload = licenses.verify(first["license"], PUBLIC)
    assert payload["iid"] == "lic-biz-1" and payload["sku"] == "sku-basic" and payload["ver"] == 1
    assert payload["exp"] == int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    assert send(client, **{**buy, "businessId": "other"})["license"] == first["license"]
    order = {"instanceId": "lic-biz-1", "orderId": "LIC1"}
    assert send(client, activity="expireLicense", **order)["resultCode"] == OK
    assert rows(License)[0]["state"] == "expired" and instance_row("lic-biz-1").state == "frozen"
    renew = {
        "activity": "refreshLicense",
        "instanceId": "lic-biz-1",
        "orderId": "LIC2",
        "expireTime": "20310101000000",
    }
    assert send(client, **renew)["resultCode"] == OK
    assert send(client, **renew)["resultCode"] == OK
    [row] = rows(License)
    assert (row["state"], row["version"]) == ("active", 2) and instance_row("lic-biz-1").state == "active"
    current = send(client, **buy)["license"]
    assert licenses.verify(current, PUBLIC)["exp"] == int(datetime(2031, 1, 1, tzinfo=UTC).timestamp())
    assert send(client, activity="releaseLicense", **order)["resultCode"] == OK
    assert send(client, activity="releaseLicense", **order)["resultCode"] == OK
    assert rows(License)[0]["state"] == "released" and instance_row("lic-biz-1").state == "released"
    assert send(client, activity="expireLicense", instanceId="nobody", orderId="x")["resultCode"] == NOT_FOUND
    kinds = [e.kind for e in events("lic-biz-1")]
    assert kinds == ["created", "provisioned", "frozen", "renewed", "unfrozen", "released"]


def test_get_license_without_an_issuer_is_refused_before_anything_is_created(env: dict[str, str]) -> None:
    from isvserver import create_app
    from isvserver.settings import load_settings

    env.pop("ISV_LICENSE_SIGNING_KEY")
    client = create_app(load_settings(env)).test_client()
    answer = send(client, **{**purchase(), "activity": "getLicense"})
    assert answer["resultCode"] == INTERNAL and "ISV_LICENSE_SIGNING_KEY" in answer["resultMsg"]
    assert rows(Instance) == []
    db.close_all()


def test_a_provisioner_issue_license_capability_is_used(env: dict[str, str]) -> None:
    from isvserver import create_app
    from isvserver.provisioning.template import TemplateProvisioner
    from isvserver.settings import load_settings

    class Licensing(TemplateProvisioner):
        def issue_license(self, instance: Any, grant: licenses.Grant) -> str:
            return f"PRODUCT-{instance.instance_id}-{grant.version}"

    provisioner = Licensing("https://app.example.com/t/{instance_id}")
    client = create_app(load_settings(env), provisioner=provisioner).test_client()
    assert send(client, **{**purchase(), "activity": "getLicense"})["license"] == "PRODUCT-v1-biz-1-1"
    db.close_all()


def test_credentials_too_long_for_v1_are_refused_at_provisioning(env: dict[str, str]) -> None:
    from isvserver import create_app
    from isvserver.provisioning import AppInfo
    from isvserver.provisioning.template import TemplateProvisioner
    from isvserver.settings import load_settings

    class LongPassword(TemplateProvisioner):
        def provision(self, event: Any) -> AppInfo:
            return AppInfo("https://app.example.com/x", user_name="admin", password="p" * 100)

    client = create_app(load_settings(env), provisioner=LongPassword("x")).test_client()
    answer = send(client, **purchase())
    assert answer["resultCode"] == INTERNAL
    assert "password is 100 UTF-8 bytes; KooGallery V1 carries at most 79" in answer["resultMsg"]
    assert "p" * 100 not in answer["resultMsg"]
    assert rows(Instance) == []
    db.close_all()


def test_extend_params_that_do_not_decode_are_000002(client: FlaskClient) -> None:
    bad = base64.b64encode(b"not json").decode()
    answer = send(client, **purchase(saasExtendParams=bad))
    assert answer["resultCode"] == INVALID and "saasExtendParams" in answer["resultMsg"]
    assert rows(Instance) == []


def test_openapi_documents_v1_beside_v2_on_the_produce_path(client: FlaskClient) -> None:
    from isvserver.marketplaces.koogallery.v1.schemas import ACTIVITIES

    item = client.get("/openapi.json").get_json()["paths"]["/saasproduce"]
    assert set(item) >= {"get", "post"}
    parameters = {p["name"]: p for p in item["get"]["parameters"]}
    assert parameters["activity"]["schema"]["enum"] == list(ACTIVITIES)
    assert parameters["authToken"]["required"] and parameters["timeStamp"]["required"]
    assert {"mobilePhone", "saasExtendParams", "trialToFormal", "skuCode"} <= set(parameters)


def test_asynchronous_provisioning_answers_in_progress_then_the_encrypted_app_info(
    env: dict[str, str],
) -> None:
    from isvserver import create_app, lifecycle
    from isvserver.provisioning import AppInfo, BaseProvisioner, ProvisioningError
    from isvserver.settings import load_settings

    class Queued(BaseProvisioner):
        inline = False

    env["ISV_PROVISION_BUDGET_MS"] = "0"
    settings = load_settings(env)
    client = create_app(settings, provisioner=Queued()).test_client()
    first = send(client, **purchase())
    assert (first["resultCode"], first["instanceId"]) == ("000004", "v1-biz-1") and "appInfo" not in first
    waiting = send(client, activity="queryInstance", instanceId="v1-biz-1")
    assert waiting["resultCode"] == "000004" and waiting["info"] == [{"instanceId": "v1-biz-1"}]
    with db.connected():
        with pytest.raises(ProvisioningError, match="password is 90 UTF-8 bytes"):
            lifecycle.complete_provisioning(
                "v1-biz-1", AppInfo("https://x", password="p" * 90), settings.data_key
            )
        assert lifecycle.complete_provisioning(
            "v1-biz-1", AppInfo("https://x", "https://a", "u", "pw"), settings.data_key
        )
    done = send(client, **purchase(business_id="again"))
    assert done["resultCode"] == OK and decrypt_credential(ACCESS_KEY, done["appInfo"]["password"], 1) == "pw"
    query = send(client, activity="queryInstance", instanceId="v1-biz-1")
    assert decrypt_credential(ACCESS_KEY, query["info"][0]["appInfo"]["userName"], 1) == "u"
    db.close_all()


def test_reseal_moves_the_v1_buyer_and_license_to_the_new_data_key(
    client: FlaskClient, env: dict[str, str]
) -> None:
    from isvserver import rotation
    from isvserver.settings import load_settings

    send(client, **purchase(mobilePhone=encrypt_credential(ACCESS_KEY, "13811112222")))
    send(client, **{**purchase("LICR", "lic-r"), "activity": "getLicense"})
    new_key = "0dkqMcI6nHuWJ6nEvS3h8GZ4a4nJm1C9tLz0Q2pX7yE="
    settings = load_settings({**env, "ISV_DATA_KEY": f"{new_key},{DATA_KEY}"})
    with db.connected():
        report = rotation.reseal_all(settings)
    counts = {f"{c.table}.{c.column}": c.resealed for c in report.columns}
    assert counts["koogallery_v1_buyer.mobile_phone_sealed"] == 1
    assert counts["koogallery_v1_buyer.customer_name_sealed"] == 2
    assert counts["koogallery_license.license_sealed"] == 1
    [buyer, _] = rows(V1Buyer)
    assert unseal(new_key.encode(), buyer["mobile_phone_sealed"]) == "13811112222"
    assert (
        licenses.verify(unseal(new_key.encode(), rows(License)[0]["license_sealed"]), PUBLIC)["iid"]
        == "lic-r"
    )


def test_instances_show_tells_the_v1_buyer_masked_and_the_license_never_its_token(
    client: FlaskClient, env: dict[str, str]
) -> None:
    import os

    from click.testing import CliRunner

    from isvserver.cli import main

    send(client, **purchase(mobilePhone=encrypt_credential(ACCESS_KEY, "13855556666")))
    token = send(client, **{**purchase("LICS", "lic-s"), "activity": "getLicense"})["license"]

    def run(*args: str) -> str:
        isolated: dict[str, str | None] = {name: None for name in os.environ if name.startswith("ISV_")}
        previous = db.database.obj
        try:
            result = CliRunner().invoke(main, list(args), env={**isolated, **env}, catch_exceptions=False)
        finally:
            db.close_all()  # the command's own binding
            db.database.initialize(previous)
        assert result.exit_code == 0, result.output
        return result.output

    shown = run("instances", "show", "v1-biz-1")
    assert "V1 buyer (masked)" in shown and "cust-1" in shown
    assert "13855556666" not in shown and "张三" not in shown
    as_json = run("instances", "show", "lic-s", "--json")
    document = json.loads(as_json)
    assert document["license"][0]["state"] == "active" and document["license"][0]["version"] == 1
    assert token not in as_json


def test_each_interface_keeps_its_nonces_for_its_own_window(client: FlaskClient) -> None:
    from isvserver import replay

    with db.connected(), db.database.atomic():
        assert replay.first_use("koogallery.v1", "token-1", 1_000_000, 7_200_000)  # kept 2 h
        assert replay.first_use("koogallery.v2", "nonce-1", 1_000_000, 120_000)  # kept 2 min
        replay.prune(1_000_000 + 600_000)  # a V2 call's prune, 10 min later
        assert not replay.first_use("koogallery.v1", "token-1", 1_600_000, 7_200_000)  # still refused
        assert replay.first_use("koogallery.v2", "nonce-1", 1_600_000, 120_000)  # forgotten: past its window
