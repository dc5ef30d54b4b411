"""Kit sync changes reach the product through the outbox: one delivery per change, none for a repeat,
parked until newInstance for an unknown instance, PII only in the signed delivery, never stored."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.marketplaces.koogallery_kit.client_secret import encrypt_client_secret, generate_key_pair
from isvserver.marketplaces.koogallery_kit.signing import kit_signature
from isvserver.marketplaces.koogallery_kit.views import body_sign
from isvserver.models import Delivery, Instance, InstanceEvent, ParkedChange
from isvserver.provisioning import AppInfo, BaseProvisioner, LifecycleEvent
from isvserver.provisioning.webhook import WebhookProvisioner
from isvserver.settings import Settings, load_settings

from support.harness import FixedClock, Marketplace, base_env
from support.receiver import WebhookReceiver
from support.sample_provisioner import SampleProvisioner

KIT_KEY = "kit-key-5d1e77c2"
PATH = "/saasproduce/produceAPI/v2"
PRIVATE_PEM, PUBLIC_PEM = generate_key_pair()
PUBLIC_KEY = serialization.load_pem_public_key(PUBLIC_PEM)
CLIENT_SECRET = "client-secret-9Qx7"
USERS = [
    {
        "userName": "zhangsan",
        "name": "张三丰",
        "orgCode": "dept-1",
        "employeeCode": "EMP-77311",
        "role": "admin",
        "enable": "true",
        "mobile": "13912345678",
        "email": "zhangsan@example.com",
    },
    {"userName": "lisi", "name": "李四光", "orgCode": "dept-1", "role": "user", "enable": "true"},
]
TENANT_NAME = "某某科技有限公司"
PII = [TENANT_NAME, "张三丰", "李四光", "EMP-77311", "13912345678", "zhangsan@example.com"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """The product's webhook endpoint on loopback."""
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def send_secrets() -> str:
    """ISV_WEBHOOK_SEND_SECRETS (parametrize to change)."""
    return "0"


@pytest.fixture
def settings(tmp_path, database_url: str, send_secrets: str) -> Settings:
    """Both KooGallery adapters, a Kit key and the seller's private key; no wait for provisioning."""
    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS=KIT_KEY,
        ISV_KIT_PRIVATE_KEY=PRIVATE_PEM.decode("ascii"),
        ISV_WEBHOOK_SEND_SECRETS=send_secrets,
    )
    return dataclasses.replace(load_settings(env), provision_budget_ms=0)


@pytest.fixture
def provisioner(receiver: WebhookReceiver) -> Any:
    """The webhook provisioner (parametrize to use another)."""
    return WebhookProvisioner(receiver.url, receiver.secret, timeout_s=5.0)


@pytest.fixture
def app(settings: Settings, clock: FixedClock, provisioner: Any) -> Iterator[Flask]:
    """The app; no consumer runs: the tests run the deliveries themselves."""
    application = create_app(settings, provisioner=provisioner, clock=clock)
    application.config["TESTING"] = True
    yield application
    db.close_all()


def kit(client: FlaskClient, activity: str, body: dict[str, Any]) -> str:
    """POST a signed Kit call (fresh nonce); its resultCode, the reply's Body-Sign checked."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp, nonce = str(int(time.time() * 1000)), secrets.token_hex(16)
    headers = {"x-sign": kit_signature(KIT_KEY, nonce, timestamp, raw), "x-timestamp": timestamp}
    headers["x-nonce"] = nonce
    response = client.post(f"{PATH}/{activity}", data=raw, headers=headers, content_type="application/json")
    assert response.status_code == 200
    assert response.headers["Body-Sign"] == body_sign(KIT_KEY, response.data)
    return response.get_json()["resultCode"]


def common(instance_id: str, **more: Any) -> dict[str, Any]:
    return {
        "instanceId": instance_id,
        "tenantId": "t-1",
        "testFlag": 0,
        "timeStamp": "20220420114117642",
        **more,
    }


def tenant_sync(instance_id: str, flag: int = 1) -> dict[str, Any]:
    return common(
        instance_id, orderId="CS1", tenantCode="acme", name=TENANT_NAME, domainName="acme.example", flag=flag
    )


def application_sync(instance_id: str, flag: int = 1) -> dict[str, Any]:
    secret = encrypt_client_secret(PUBLIC_KEY, CLIENT_SECRET)
    return common(instance_id, appId="app-1", clientId="client-1", clientSecret=secret, flag=flag)


def auth_sync(instance_id: str, flag: int = 1) -> dict[str, Any]:
    return common(instance_id, appId="app-1", userList=USERS, flag=flag)


def org_sync(instance_id: str) -> dict[str, Any]:
    return common(instance_id, orgCode="dept-1", orgName="研发部", parentCode="root", flag=1)


def all_orgs(instance_id: str) -> dict[str, Any]:
    tree = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "dept-1", "orgName": "研发部", "parentCode": "root"},
    ]
    return common(instance_id, orgInfoList=tree)


def deliveries(instance_id: str) -> list[tuple[str, str]]:
    """(event type, status) of the instance's deliveries, in order."""
    with db.connected():
        query = (
            Delivery.select(Delivery.event_type, Delivery.status)
            .join(Instance)
            .where(Instance.instance_id == instance_id)
            .order_by(Delivery.id)
        )
        return [(d.event_type, d.status) for d in query]


def kinds(instance_id: str) -> list[str]:
    with db.connected():
        query = InstanceEvent.select().join(Instance).where(Instance.instance_id == instance_id)
        return [e.kind for e in query.order_by(InstanceEvent.id)]


def run_deliveries(app: Flask, instance_id: str) -> None:
    """What the job consumer does for the instance."""
    with db.connected():
        Delivery.update(next_attempt_at=datetime(2000, 1, 1)).where(Delivery.status == "pending").execute()
    app.extensions["isvserver"].jobs.run_deliveries(instance_id)


def sync_all(client: FlaskClient, instance_id: str) -> None:
    """tenantSync, applicationSync, authSync of two users, singleOrgSync, allOrgSync: each accepted."""
    for activity, body in (
        ("tenantSync", tenant_sync(instance_id)),
        ("applicationSync", application_sync(instance_id)),
        ("authSync", auth_sync(instance_id)),
        ("singleOrgSync", org_sync(instance_id)),
        ("allOrgSync", all_orgs(instance_id)),
    ):
        assert kit(client, activity, body) == "000000", activity


SYNCED = ["tenant.synced", "application.synced", "users.synced", "orgs.synced", "orgs.synced"]


def test_each_sync_change_is_one_delivery_a_repeat_none_and_the_product_hears_them_in_order(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    instance_id = marketplace.new_instance("CS-KIT", business_id="kit-inst-1").json["instanceId"]
    sync_all(client, instance_id)
    for activity, body in (
        ("tenantSync", tenant_sync(instance_id)),
        ("applicationSync", application_sync(instance_id)),
        ("authSync", auth_sync(instance_id)),
        ("allOrgSync", all_orgs(instance_id)),
    ):
        assert kit(client, activity, body) == "000000", f"repeated {activity}"

    assert deliveries(instance_id) == [("instance.created", "pending")] + [(t, "pending") for t in SYNCED]
    run_deliveries(app, instance_id)

    assert receiver.rejected == []
    assert receiver.event_types(instance_id) == ["instance.created", *SYNCED]
    assert [status for _, status in deliveries(instance_id)] == ["delivered"] * 6
    ids = [e["webhook_id"] for e in receiver.events]
    assert len(set(ids)) == 6
    tenant, application, users, org, orgs = (e["payload"]["data"] for e in receiver.events[1:])
    assert tenant["change"] == {"kind": "kit_tenant", "activity": "tenantSync", "flag": 1, "tenant_id": "t-1"}
    assert tenant["sync"]["name"] == TENANT_NAME
    assert tenant["sync"]["tenantCode"] == "acme"
    assert tenant["instance"]["instanceId"] == instance_id
    assert tenant["order"] is None
    assert application["sync"]["clientId"] == "client-1"
    assert "clientSecret" not in application["sync"]
    assert users["change"]["user_names"] == ["lisi", "zhangsan"]
    assert users["change"]["count"] == 2
    [zhang] = [u for u in users["sync"]["users"] if u["userName"] == "zhangsan"]
    assert (zhang["name"], zhang["mobile"], zhang["email"]) == (
        "张三丰",
        "13912345678",
        "zhangsan@example.com",
    )
    assert org["change"]["activity"] == "singleOrgSync"
    assert [o["orgCode"] for o in org["sync"]["orgs"]] == ["dept-1"]
    assert orgs["change"]["activity"] == "allOrgSync"
    assert [o["orgCode"] for o in orgs["sync"]["orgs"]] == ["dept-1", "root"]


def test_a_delete_is_one_more_event_and_a_repeated_delete_none(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    instance_id = marketplace.new_instance("CS-DEL", business_id="kit-del-1").json["instanceId"]
    assert kit(client, "tenantSync", tenant_sync(instance_id)) == "000000"
    assert kit(client, "tenantSync", tenant_sync(instance_id, flag=0)) == "000000"
    assert kit(client, "tenantSync", tenant_sync(instance_id, flag=0)) == "000000"
    run_deliveries(app, instance_id)
    assert receiver.event_types(instance_id) == ["instance.created", "tenant.synced", "tenant.synced"]
    deleted = receiver.events[-1]["payload"]["data"]
    assert (deleted["change"]["flag"], deleted["sync"]["deleted"]) == (0, True)


def test_changes_for_an_unknown_instance_are_parked_then_adopted_in_order_at_new_instance(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    sync_all(client, "early-1")
    assert kit(client, "tenantSync", tenant_sync("early-1")) == "000000"  # a repeat: not parked again
    with db.connected():
        parked = [(p.kind, p.adopted_at) for p in ParkedChange.select().order_by(ParkedChange.id)]
        assert Instance.select().count() == 0
    assert parked == [
        (k, None) for k in ("kit_tenant", "kit_application", "kit_users", "kit_orgs", "kit_orgs")
    ]

    answer = marketplace.new_instance("CS-EARLY", business_id="early-1")
    assert answer.json["instanceId"] == "early-1"
    assert kinds("early-1") == [
        "created",
        "kit_tenant",
        "kit_application",
        "kit_users",
        "kit_orgs",
        "kit_orgs",
    ]
    assert [t for t, _ in deliveries("early-1")] == ["instance.created", *SYNCED]
    with db.connected():
        adopted = list(ParkedChange.select().order_by(ParkedChange.id))
        events = [e.id for e in InstanceEvent.select().order_by(InstanceEvent.id)][1:]
    assert all(p.adopted_at is not None for p in adopted)
    assert [p.event_id for p in adopted] == events
    marketplace.new_instance("CS-EARLY", business_id="another")  # a resend adopts nothing twice
    assert len(kinds("early-1")) == 6

    run_deliveries(app, "early-1")
    assert receiver.event_types("early-1") == ["instance.created", *SYNCED]
    assert receiver.events[1]["payload"]["data"]["sync"]["tenantCode"] == "acme"


def test_stored_events_and_parked_changes_hold_no_pii_and_no_secret(
    client: FlaskClient, marketplace: Marketplace
) -> None:
    sync_all(client, "early-2")
    instance_id = marketplace.new_instance("CS-PII", business_id="kit-pii-1").json["instanceId"]
    sync_all(client, instance_id)
    assert kit(client, "authSync", auth_sync(instance_id, flag=3)) == "000000"
    with db.connected():
        stored = [e.detail or "" for e in InstanceEvent.select()] + [
            p.detail or "" for p in ParkedChange.select()
        ]
    assert len(stored) == 12
    text = "\n".join(stored)
    for value in [*PII, CLIENT_SECRET]:
        assert value not in text
    assert json.dumps("张三丰")[1:-1] not in text  # not even as \\u escapes
    assert '"user_names": ["lisi", "zhangsan"]' in text


@pytest.mark.parametrize(("send_secrets", "expected"), [("0", None), ("1", CLIENT_SECRET)])
def test_the_application_event_carries_the_secret_only_with_send_secrets(
    app: Flask,
    client: FlaskClient,
    marketplace: Marketplace,
    receiver: WebhookReceiver,
    expected: str | None,
) -> None:
    instance_id = marketplace.new_instance("CS-SEC", business_id="kit-sec-1").json["instanceId"]
    assert kit(client, "applicationSync", application_sync(instance_id)) == "000000"
    run_deliveries(app, instance_id)
    [event] = [e for e in receiver.events if e["type"] == "application.synced"]
    assert event["payload"]["data"]["sync"].get("clientSecret") == expected
    assert event["payload"]["data"]["sync"]["clientId"] == "client-1"


def test_debug_calls_record_nothing(client: FlaskClient, marketplace: Marketplace) -> None:
    instance_id = marketplace.new_instance("CS-DBG", business_id="kit-dbg-1").json["instanceId"]
    assert kit(client, "tenantSync", {**tenant_sync(instance_id), "testFlag": 1}) == "000000"
    assert kit(client, "tenantSync", {**tenant_sync("early-dbg"), "testFlag": 1}) == "000000"
    assert kinds(instance_id) == ["created"]
    with db.connected():
        assert ParkedChange.select().count() == 0


class OldProduct(SampleProvisioner):
    """A seller's provisioner from before the adapters' events: provision, apply, check_change only."""

    inline = False


class Product(BaseProvisioner):
    """A seller's provisioner that opted in to the adapters' events."""

    def __init__(self) -> None:
        self.heard: list[LifecycleEvent] = []

    def provision(self, event: LifecycleEvent) -> AppInfo:
        self.heard.append(event)
        return AppInfo(front_end_url=f"https://product.example/{event.instance.instance_id}")

    def sync(self, event: LifecycleEvent) -> None:
        self.heard.append(event)


@pytest.mark.parametrize("provisioner", [pytest.param(Product(), id="base-provisioner")])
def test_a_base_provisioner_hears_the_sync_events_with_what_the_adapter_added(
    app: Flask, client: FlaskClient, marketplace: Marketplace, provisioner: Product
) -> None:
    provisioner.heard.clear()
    instance_id = marketplace.new_instance("CS-BASE", business_id="kit-base-1").json["instanceId"]
    assert kit(client, "authSync", auth_sync(instance_id)) == "000000"
    run_deliveries(app, instance_id)
    assert [e.type for e in provisioner.heard] == ["instance.created", "users.synced"]
    users = provisioner.heard[1].extra["sync"]["users"]
    assert sorted(u["name"] for u in users) == ["张三丰", "李四光"]


@pytest.mark.parametrize("provisioner", [pytest.param(OldProduct(), id="no-sync")])
def test_a_provisioner_without_sync_never_hears_an_event_type_it_does_not_know(
    app: Flask, client: FlaskClient, marketplace: Marketplace, provisioner: SampleProvisioner
) -> None:
    provisioner.applied.clear()
    instance_id = marketplace.new_instance("CS-OLD", business_id="kit-old-1").json["instanceId"]
    sync_all(client, instance_id)
    freeze = {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "FREEZE"}
    assert marketplace.send(freeze).code == "000000"
    assert deliveries(instance_id) == [("instance.created", "pending"), ("instance.frozen", "pending")]
    run_deliveries(app, instance_id)
    assert provisioner.applied == ["instance.frozen"]
    assert kinds(instance_id)[1:] == [
        "kit_tenant",
        "kit_application",
        "kit_users",
        "kit_orgs",
        "kit_orgs",
        "frozen",
        "provisioned",
    ]


@pytest.mark.parametrize("provisioner", [None], ids=["template"])
def test_the_inline_template_provisioner_has_no_outbox(client: FlaskClient, marketplace: Marketplace) -> None:
    sync_all(client, "early-tpl")
    instance_id = marketplace.new_instance("CS-TPL", business_id="early-tpl").json["instanceId"]
    sync_all(client, instance_id)
    assert kit(client, "authSync", auth_sync(instance_id, flag=0)) == "000000"
    assert deliveries(instance_id) == []
    assert kinds(instance_id)[:2] == ["created", "provisioned"]
    assert len(kinds(instance_id)) == 2 + 5 + 1  # adopted, then recorded: a history, nothing to deliver


def event_details(instance_id: str) -> list[dict[str, Any]]:
    """The stored detail of each of the instance's events after its creation, oldest first."""
    with db.connected():
        query = InstanceEvent.select().join(Instance).where(Instance.instance_id == instance_id)
        return [json.loads(e.detail) for e in query.order_by(InstanceEvent.id) if e.kind != "created"]


def test_an_auth_sync_listing_one_user_twice_is_one_user_in_the_event(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    instance_id = marketplace.new_instance("CS-TWICE", business_id="kit-twice-1").json["instanceId"]
    twice = [USERS[0], {**USERS[0], "role": "user"}, USERS[1]]
    assert kit(client, "authSync", common(instance_id, appId="app-1", userList=twice, flag=1)) == "000000"
    (detail,) = event_details(instance_id)
    assert detail == {
        "activity": "authSync",
        "app_id": "app-1",
        "count": 2,
        "flag": 1,
        "tenant_id": "t-1",
        "user_names": ["lisi", "zhangsan"],
    }
    run_deliveries(app, instance_id)
    users = receiver.events[-1]["payload"]["data"]["sync"]["users"]
    assert sorted((u["userName"], u["role"]) for u in users) == [("lisi", "user"), ("zhangsan", "user")]


def test_each_sync_event_holds_its_ids_and_count(client: FlaskClient, marketplace: Marketplace) -> None:
    instance_id = marketplace.new_instance("CS-DETAIL", business_id="kit-detail-1").json["instanceId"]
    tree = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "dept-1", "orgName": "研发部", "parentCode": "root"},
        {"orgCode": "dept-1", "orgName": "研发一部", "parentCode": "root"},
    ]
    for activity, body in (
        ("tenantSync", tenant_sync(instance_id)),
        ("applicationSync", application_sync(instance_id, flag=2)),
        ("singleOrgSync", org_sync(instance_id)),
        ("allOrgSync", common(instance_id, orgInfoList=tree)),
    ):
        assert kit(client, activity, body) == "000000", activity
    assert event_details(instance_id) == [
        {"activity": "tenantSync", "flag": 1, "tenant_id": "t-1"},
        {"activity": "applicationSync", "app_id": "app-1", "flag": 2, "tenant_id": "t-1"},
        {"activity": "singleOrgSync", "count": 1, "flag": 1, "org_codes": ["dept-1"], "tenant_id": "t-1"},
        {"activity": "allOrgSync", "count": 2, "tenant_id": "t-1"},
    ]


@pytest.mark.parametrize("provisioner", [pytest.param(OldProduct(), id="no-sync")])
def test_parked_changes_adopted_for_a_provisioner_without_sync_are_recorded_but_never_queued(
    app: Flask, client: FlaskClient, marketplace: Marketplace, provisioner: SampleProvisioner
) -> None:
    provisioner.applied.clear()
    sync_all(client, "early-old")
    instance_id = marketplace.new_instance("CS-OLD-EARLY", business_id="early-old").json["instanceId"]
    assert instance_id == "early-old"
    assert kinds(instance_id) == [
        "created",
        "kit_tenant",
        "kit_application",
        "kit_users",
        "kit_orgs",
        "kit_orgs",
    ]
    with db.connected():
        adopted = list(ParkedChange.select().order_by(ParkedChange.id))
    assert len(adopted) == 5 and all(p.adopted_at is not None for p in adopted)
    assert deliveries(instance_id) == [("instance.created", "pending")]
    run_deliveries(app, instance_id)
    assert provisioner.applied == []
    assert deliveries(instance_id) == [("instance.created", "delivered")]
    assert kinds(instance_id)[-1] == "provisioned"


def test_a_users_event_tells_only_the_users_that_call_named(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    instance_id = marketplace.new_instance("CS-NAMED", business_id="kit-named-1").json["instanceId"]
    assert kit(client, "authSync", auth_sync(instance_id)) == "000000"
    only_lisi = common(instance_id, appId="app-1", userList=[{**USERS[1], "role": "admin"}], flag=2)
    assert kit(client, "authSync", only_lisi) == "000000"
    run_deliveries(app, instance_id)
    first, second = (e["payload"]["data"] for e in receiver.events if e["type"] == "users.synced")
    assert sorted(u["userName"] for u in first["sync"]["users"]) == ["lisi", "zhangsan"]
    assert [(u["userName"], u["role"]) for u in second["sync"]["users"]] == [("lisi", "admin")]


def test_a_record_gone_before_delivery_is_told_as_null(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    """An operator removed the Kit row by hand before the event went out: the product hears sync null."""
    from isvserver.marketplaces.koogallery_kit.models import KitTenant

    instance_id = marketplace.new_instance("CS-GONE", business_id="kit-gone-1").json["instanceId"]
    assert kit(client, "tenantSync", tenant_sync(instance_id)) == "000000"
    with db.connected():
        KitTenant.delete().where(KitTenant.instance_id == instance_id).execute()
    run_deliveries(app, instance_id)
    [tenant] = [e["payload"]["data"] for e in receiver.events if e["type"] == "tenant.synced"]
    assert "sync" in tenant and tenant["sync"] is None
    assert tenant["change"]["activity"] == "tenantSync"


def test_only_the_kit_events_are_enriched(
    app: Flask, client: FlaskClient, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    instance_id = marketplace.new_instance("CS-ONLY", business_id="kit-only-1").json["instanceId"]
    sync_all(client, instance_id)
    freeze = {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "FREEZE"}
    assert marketplace.send(freeze).code == "000000"
    run_deliveries(app, instance_id)
    data = {e["type"]: e["payload"]["data"] for e in receiver.events}
    assert set(data) == {"instance.created", "instance.frozen", *SYNCED}
    assert "sync" not in data["instance.created"] and "sync" not in data["instance.frozen"]
    assert all(data[t]["sync"] is not None for t in SYNCED)
