"""The V1 basic activities (spec §9): each calls the one lifecycle and builds its reply, credentials
AES-encrypted with the key that verified the call (spec §4)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import g

from isvserver import lifecycle
from isvserver.calls import counted, wait_after_commit
from isvserver.lifecycle import Action
from isvserver.marketplaces.koogallery.credentials import encrypt_credential
from isvserver.marketplaces.koogallery.results import (
    IN_PROGRESS,
    INSTANCE_NOT_FOUND,
    INTERNAL_ERROR,
    SUCCESS,
)
from isvserver.marketplaces.koogallery.schemas import split_ids
from isvserver.marketplaces.koogallery.v1 import buyers
from isvserver.marketplaces.koogallery.v1.schemas import ON_DEMAND
from isvserver.models import Instance
from isvserver.provisioning import AppInfo, InstanceView
from isvserver.provisioning.template import render_url
from isvserver.runtime import Runtime

MARKETPLACE = "koogallery"
CREATION_PREFIX = "v1:"  # the creation keys of V1 instances (the AppInfo check knows them by it)
MAX_PLAIN_BYTES = 79  # the longest credential whose encrypted form fits the 128 characters (spec §4)
ENCRYPTED = ("userName", "password")
Reply = dict[str, Any]
Handler = Callable[[Runtime, dict[str, Any]], Reply]
# What newInstance tells the provisioner besides the ids (snake_case; never buyer data).
PURCHASE_DETAIL = {
    "skuCode": "sku_code",
    "productId": "product_id",
    "customerId": "customer_id",
    "userId": "user_id",
    "trialFlag": "trial_flag",
    "chargingMode": "charging_mode",
    "periodType": "period_type",
    "periodNumber": "period_number",
    "orderAmount": "order_amount",
    "amount": "amount",
    "diskSize": "disk_size",
    "bandWidth": "band_width",
    "provisionType": "provision_type",
    "saasExtendParams": "extend_params",
}


def reply(code: str, message: str, **fields: Any) -> Reply:
    """A V1 reply body: resultCode, resultMsg, then the activity's own fields."""
    return {"resultCode": code, "resultMsg": message, **fields}


def creation_key(kind: str, order_id: str, product_id: str | None = None) -> str:
    """The idempotency key of a V1 purchase: its order, with the product for on-demand orders."""
    key = f"{CREATION_PREFIX}{kind}:{len(order_id)}:{order_id}"
    return f"{key}:{product_id}" if product_id is not None else key


def order_change_key(order_id: str) -> str:
    """The idempotency key of a change asked for by a V1 order."""
    return f"{CREATION_PREFIX}order:{len(order_id)}:{order_id}"


def app_info_check(instance: Instance, info: AppInfo) -> str | None:
    """Refuse, at provisioning time, credentials V1 cannot carry encrypted in its 128 characters."""
    if not (instance.creation_key or "").startswith(CREATION_PREFIX):
        return None
    for name, value in (("user_name", info.user_name), ("password", info.password)):
        if value is not None and len(value.encode("utf-8")) > MAX_PLAIN_BYTES:
            return (
                f"the product's {name} is {len(value.encode('utf-8'))} UTF-8 bytes; KooGallery V1 carries at "
                f"most {MAX_PLAIN_BYTES} (128 characters once AES-encrypted)"
            )
    return None


def encrypted_app_info(info: dict[str, str], key: str, encrypt_type: int) -> dict[str, str]:
    """`appInfo` with userName and password AES-encrypted (spec §4)."""
    return {
        name: encrypt_credential(key, value, encrypt_type) if name in ENCRYPTED else value
        for name, value in info.items()
        if value is not None
    }


def _app_info_out(info: AppInfo) -> dict[str, str]:
    fields = {
        "frontEndUrl": info.front_end_url,
        "adminUrl": info.admin_url,
        "userName": info.user_name,
        "password": info.password,
        "memo": info.memo,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _own(rt: Runtime) -> Any:
    return rt.settings.of(MARKETPLACE)


def _verified_key() -> str:
    return g.v1_verified.key


def _with_app_info(rt: Runtime, body: Reply, info: AppInfo | None) -> Reply:
    if info is None:
        return body
    encrypt_type = _own(rt).v1_encrypt_type
    app_info = encrypted_app_info(_app_info_out(info), _verified_key(), encrypt_type)
    return {**body, "encryptType": str(encrypt_type), "appInfo": app_info}


def purchase(rt: Runtime, data: dict[str, Any], kind: str) -> tuple[Instance, bool]:
    """The instance of a V1 purchase (newInstance, getLicense), created once per order (and product,
    on demand), with its buyer stored sealed; whether this call created it."""
    product = data["productId"] if data.get("chargingMode") == ON_DEMAND else None
    detail = {name: data[field] for field, name in PURCHASE_DETAIL.items() if field in data}
    detail["protocol"] = "v1"
    detail["purchase"] = kind
    if data.get("expireTime") is not None:
        detail["expire_at"] = data["expireTime"]
    creation = rt.lifecycle.create(
        MARKETPLACE,
        creation_key(kind, data["orderId"], product),
        data["businessId"],
        reference=(data["orderId"], None),
        business_id=data["businessId"],
        attributes={
            "product_id": data["productId"],
            "expire_at": data.get("expireTime"),
            "is_trial": data.get("trialFlag") == "1",
        },
        detail=detail,
    )
    instance, created = creation.instance, creation.changed
    if created:
        buyers.store(instance.instance_id, data, rt.settings.data_key)
    counted(created)
    return instance, created


def new_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Create (once per order) and provision the instance, waiting for it within the budget (and the
    call's answer deadline); answer its appInfo, encrypted."""
    instance, _ = purchase(rt, data, "instance")
    instance_id = instance.instance_id
    if instance.state not in lifecycle.NOT_PROVISIONED:
        return _provisioned(rt, instance_id)

    def provisioned(until: float) -> Reply:
        state = lifecycle.await_provisioning(instance_id, until)
        if state == lifecycle.State.PROVISIONING:
            return reply(IN_PROGRESS, "instance is being provisioned", instanceId=instance_id)
        if state == lifecycle.State.FAILED:
            return reply(
                INTERNAL_ERROR, "provisioning failed; a resend starts it again", instanceId=instance_id
            )
        return _provisioned(rt, instance_id)

    wait_after_commit(rt.settings.provision_budget_ms, provisioned)
    return reply(IN_PROGRESS, "instance is being provisioned", instanceId=instance_id)


def _provisioned(rt: Runtime, instance_id: str) -> Reply:
    row = lifecycle.find_instances([instance_id])[instance_id]
    info = lifecycle.app_info(row, rt.settings.data_keys)
    return _with_app_info(rt, reply(SUCCESS, "success", instanceId=instance_id), info)


def query_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """AppInfo (credentials encrypted) of up to 100 instances, read in one query."""
    ids = split_ids(data["instanceId"])
    found = lifecycle.find_instances(ids)
    key, encrypt_type = _verified_key(), _own(rt).v1_encrypt_type
    info, waiting = [], False
    for instance_id in ids:
        instance = found.get(instance_id)
        if instance is None or instance.state == lifecycle.State.RELEASED:
            continue
        app_info = lifecycle.app_info(instance, rt.settings.data_keys)
        if instance.state in lifecycle.NOT_PROVISIONED or app_info is None:
            waiting = True
            info.append({"instanceId": instance_id})
        else:
            out = encrypted_app_info(_app_info_out(app_info), key, encrypt_type)
            info.append({"instanceId": instance_id, "appInfo": out})
    if not info:
        return reply(INSTANCE_NOT_FOUND, "instance does not exist")
    code, message = (
        (IN_PROGRESS, "an instance is still being provisioned") if waiting else (SUCCESS, "success")
    )
    return reply(code, message, encryptType=str(encrypt_type), info=info)


def refresh_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Renewal, or trial to formal (`trialToFormal=1`): a new expiry, once per order."""
    action = Action.CONVERT_TRIAL if data.get("trialToFormal") == "1" else Action.RENEW
    counted(
        rt.lifecycle.change_expiry(
            data["instanceId"],
            action,
            order_change_key(data["orderId"]),
            data["expireTime"],
            data.get("productId"),
            reference=(data["orderId"], None),
        ).changed
    )
    return reply(SUCCESS, "success")


def expire_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Expiry: freeze, keeping the data; repeating it succeeds."""
    counted(rt.lifecycle.set_frozen(data["instanceId"], True).changed)
    return reply(SUCCESS, "success")


def release_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Mark released; a repeated release succeeds."""
    counted(rt.lifecycle.release(data["instanceId"], (data["orderId"], None)).changed)
    return reply(SUCCESS, "success")


def upgrade(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Record the upgrade to the new SKU (its parameters handed to the provisioner), once per order."""
    detail = {
        name: data[field]
        for field, name in PURCHASE_DETAIL.items()
        if field in data
        and field in ("skuCode", "productId", "amount", "diskSize", "bandWidth", "saasExtendParams")
    }
    counted(
        rt.lifecycle.upgrade(
            data["instanceId"], order_change_key(data["orderId"]), (data["orderId"], None), detail=detail
        ).changed
    )
    return reply(SUCCESS, "success")


HANDLERS: dict[str, Handler] = {
    "newInstance": new_instance,
    "queryInstance": query_instance,
    "refreshInstance": refresh_instance,
    "expireInstance": expire_instance,
    "releaseInstance": release_instance,
    "upgrade": upgrade,
}
READ_ONLY_ACTIVITIES = frozenset({"queryInstance"})


# --- testFlag=1: verified and logged, never touching a real instance (as V2, spec §5 decision) -----


def test_instance_id(order_id: str) -> str:
    """The deterministic instanceId answered to a debug V1 newInstance of this order."""
    return "test-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"koogallery-v1:{order_id}"))


def _test_app_info(rt: Runtime, instance_id: str) -> dict[str, str]:
    own = _own(rt)
    if own.test_app_info is not None:
        return dict(own.test_app_info)
    ids = InstanceView(instance_id, MARKETPLACE, "", "", None, None, False)
    info = {"frontEndUrl": render_url(rt.settings.frontend_url_template, ids)}
    if rt.settings.admin_url_template:
        info["adminUrl"] = render_url(rt.settings.admin_url_template, ids)
    info["memo"] = "debug request (testFlag=1): no real instance"
    return info


def test_new_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """A deterministic id and the test appInfo, nothing created."""
    instance_id = test_instance_id(data["orderId"])
    encrypt_type = _own(rt).v1_encrypt_type
    app_info = encrypted_app_info(_test_app_info(rt, instance_id), _verified_key(), encrypt_type)
    return reply(
        SUCCESS,
        "success (debug request)",
        instanceId=instance_id,
        encryptType=str(encrypt_type),
        appInfo=app_info,
    )


def test_query_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """The test appInfo for every id."""
    encrypt_type = _own(rt).v1_encrypt_type
    info = [
        {"instanceId": i, "appInfo": encrypted_app_info(_test_app_info(rt, i), _verified_key(), encrypt_type)}
        for i in split_ids(data["instanceId"])
    ]
    return reply(SUCCESS, "success (debug request)", encryptType=str(encrypt_type), info=info)


def test_success(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Success, nothing touched."""
    return reply(SUCCESS, "success (debug request)")


TEST_HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(HANDLERS, test_success),
    "newInstance": test_new_instance,
    "queryInstance": test_query_instance,
}
