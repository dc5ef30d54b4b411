"""The V2 basic activities: each parses nothing itself, calls the lifecycle and builds its reply."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from isvserver import lifecycle
from isvserver.calls import counted, wait_after_commit
from isvserver.deferred import after_commit
from isvserver.lifecycle import Action
from isvserver.marketplaces.koogallery import order_jobs
from isvserver.marketplaces.koogallery.models import OrderNotification
from isvserver.marketplaces.koogallery.replies import Reply, reply
from isvserver.marketplaces.koogallery.results import (
    IN_PROGRESS,
    INSTANCE_NOT_FOUND,
    INTERNAL_ERROR,
    SUCCESS,
)
from isvserver.marketplaces.koogallery.schemas import split_ids
from isvserver.models import utcnow
from isvserver.provisioning import AppInfo, InstanceView
from isvserver.provisioning.template import render_url
from isvserver.runtime import Runtime

MARKETPLACE = "koogallery"
SCENE_ACTIONS = {
    "TRIAL_TO_FORMAL": Action.CONVERT_TRIAL,
    "RENEWAL": Action.RENEW,
    "UNSUBSCRIBE_RENEWAL_PERIOD": Action.UNSUBSCRIBE_RENEWAL,
    "RENEWAL_CHANGE": Action.CHANGE_RENEWAL,
}
Handler = Callable[[Runtime, dict[str, Any]], Reply]


def order_key(order_id: str, order_line_id: str) -> str:
    """The idempotency key of an order line (length-prefixed: ids may contain the separator)."""
    return f"order:{len(order_id)}:{order_id}:{order_line_id}"


def _app_info_out(info: AppInfo) -> dict[str, str | None]:
    return {
        "frontEndUrl": info.front_end_url,
        "adminUrl": info.admin_url,
        "userName": info.user_name,
        "password": info.password,
        "memo": info.memo,
    }


def _fetch_order_line(rt: Runtime, data: dict[str, Any]) -> None:
    """After commit, have the call's order line fetched from the order-query API (when AK/SK are set)."""
    after_commit(lambda: order_jobs.fetch_soon(rt.jobs, data["orderId"], data["orderLineId"]))


# --- real calls ---------------------------------------------------------------------------------


def new_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Create (once per order line) and provision the instance, waiting for it within the budget (and
    the call's answer deadline, when a waiting slot is free)."""
    creation = rt.lifecycle.create(
        MARKETPLACE,
        order_key(data["orderId"], data["orderLineId"]),
        data["businessId"],  # the recommended instanceId: the first request's businessId
        reference=(data["orderId"], data["orderLineId"]),
        business_id=data["businessId"],
    )
    instance, created = creation.instance, counted(creation.changed)
    instance_id = instance.instance_id
    if created:
        _fetch_order_line(rt, data)
    if instance.state not in lifecycle.NOT_PROVISIONED:
        return reply(SUCCESS, "success", instanceId=instance_id)

    def provisioned(until: float) -> Reply:
        return _provisioning_answer(instance_id, lifecycle.await_provisioning(instance_id, until))

    wait_after_commit(rt.settings.provision_budget_ms, provisioned)
    return reply(IN_PROGRESS, "instance is being provisioned", instanceId=instance_id)


def _provisioning_answer(instance_id: str, state: str) -> Reply:
    """newInstance's answer once the wait for provisioning has ended in `state`."""
    if state == lifecycle.State.PROVISIONING:
        return reply(IN_PROGRESS, "instance is being provisioned", instanceId=instance_id)
    if state == lifecycle.State.FAILED:
        return reply(INTERNAL_ERROR, "provisioning failed; a resend starts it again", instanceId=instance_id)
    return reply(SUCCESS, "success", instanceId=instance_id)


def query_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """AppInfo of up to 100 instances, read in one query."""
    ids = split_ids(data["instanceId"])
    found = lifecycle.find_instances(ids)
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
            info.append({"instanceId": instance_id, "appInfo": _app_info_out(app_info)})
    if not info:
        return reply(INSTANCE_NOT_FOUND, "instance does not exist")
    if waiting:
        return reply(IN_PROGRESS, "an instance is still being provisioned", info=info)
    return reply(SUCCESS, "success", info=info)


def refresh_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Renewal, trial to formal, unsubscribed renewal period or renewal change: a new expiry."""
    changed = rt.lifecycle.change_expiry(
        data["instanceId"],
        SCENE_ACTIONS[data["scene"]],
        order_key(data["orderId"], data["orderLineId"]),
        data["expireTime"],
        data.get("productId"),
        reference=(data["orderId"], data["orderLineId"]),
    ).changed
    if counted(changed):
        _fetch_order_line(rt, data)
    return reply(SUCCESS, "success")


def update_instance_status(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Freeze (keep data) or unfreeze."""
    counted(rt.lifecycle.set_frozen(data["instanceId"], data["status"] == "FREEZE").changed)
    return reply(SUCCESS, "success")


def release_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Mark released; a repeated release succeeds."""
    counted(rt.lifecycle.release(data["instanceId"], (data.get("orderId"), data.get("orderLineId"))).changed)
    return reply(SUCCESS, "success")


def upgrade_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Record the upgrade order (the new spec is read from the order-query API)."""
    changed = rt.lifecycle.upgrade(
        data["instanceId"],
        order_key(data["orderId"], data["orderLineId"]),
        reference=(data["orderId"], data["orderLineId"]),
    ).changed
    if counted(changed):
        _fetch_order_line(rt, data)
    return reply(SUCCESS, "success")


def change_instance_check(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Whether the product accepts the renewal change."""
    rt.lifecycle.check_change(data["instanceId"], data["productInfo"])
    return reply(SUCCESS, "success")


def order_notify(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Remember the notified order line (one row per line, counted)."""
    now = utcnow()
    OrderNotification.insert(
        marketplace=MARKETPLACE,
        order_id=data["orderId"],
        order_line_id=data["orderLineId"],
        times_received=1,
        first_received_at=now,
        last_received_at=now,
    ).on_conflict(
        conflict_target=[
            OrderNotification.marketplace,
            OrderNotification.order_id,
            OrderNotification.order_line_id,
        ],
        update={
            OrderNotification.times_received: OrderNotification.times_received + 1,
            OrderNotification.last_received_at: now,
        },
    ).execute()
    _fetch_order_line(rt, data)
    return reply(SUCCESS, "success")


HANDLERS: dict[str, Handler] = {
    "newInstance": new_instance,
    "queryInstance": query_instance,
    "refreshInstance": refresh_instance,
    "updateInstanceStatus": update_instance_status,
    "releaseInstance": release_instance,
    "upgradeInstance": upgrade_instance,
    "changeInstanceCheck": change_instance_check,
    "orderNotify": order_notify,
}
READ_ONLY_ACTIVITIES = frozenset({"queryInstance", "changeInstanceCheck"})


# --- testFlag=1: verified and logged, never touching a real instance (spec §5 decision) -------------


def test_instance_id(order_id: str, order_line_id: str) -> str:
    """The deterministic instanceId answered to a debug newInstance of this order line."""
    return "test-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"koogallery:{order_id}\n{order_line_id}"))


def test_new_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """A deterministic id, nothing created."""
    return reply(
        SUCCESS, "success (debug request)", instanceId=test_instance_id(data["orderId"], data["orderLineId"])
    )


def test_query_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """The configured test appInfo for every id."""
    own = rt.settings.of(MARKETPLACE)
    info = []
    for instance_id in split_ids(data["instanceId"]):
        if own.test_app_info is not None:
            app_info = dict(own.test_app_info)
        else:
            ids = InstanceView(instance_id, MARKETPLACE, "", "", None, None, False)
            settings = rt.settings
            app_info = {"frontEndUrl": render_url(settings.frontend_url_template, ids)}
            if settings.admin_url_template:
                app_info["adminUrl"] = render_url(settings.admin_url_template, ids)
            app_info["memo"] = "debug request (testFlag=1): no real instance"
        info.append({"instanceId": instance_id, "appInfo": app_info})
    return reply(SUCCESS, "success (debug request)", info=info)


def test_success(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Success, nothing touched."""
    return reply(SUCCESS, "success (debug request)")


TEST_HANDLERS: dict[str, Handler] = {
    **dict.fromkeys(HANDLERS, test_success),
    "newInstance": test_new_instance,
    "queryInstance": test_query_instance,
}
