"""The lifecycle transition table, pair by pair, through the HTTP surface (the answers to late and
out-of-order calls), plus queued provisioning (its runner driven in-process) and provisioning failures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask

from isvserver import create_app, db, lifecycle
from isvserver.lifecycle import TRANSITIONS, Action, State
from isvserver.models import Delivery, Instance, InstanceEvent, utcnow
from isvserver.provisioning import AppInfo, LifecycleEvent, ProvisioningError
from isvserver.provisioning.template import TemplateProvisioner
from isvserver.sealing import unseal
from isvserver.settings import Settings

from support.harness import (
    ADMIN_TEMPLATE,
    FRONTEND_TEMPLATE,
    FixedClock,
    Marketplace,
    instance_events,
    instance_row,
)
from support.server import wait_until

OK, NOT_FOUND, IN_PROGRESS, INTERNAL = "000000", "000003", "000004", "000005"
P, A, F, R, X = State.PROVISIONING, State.ACTIVE, State.FROZEN, State.RELEASED, State.FAILED
EXPIRE = "20301231235959"


class Switchable:
    """A provisioner that answers at once, or (mode "pending") has the creation queued, or fails."""

    def __init__(self) -> None:
        self.mode = "ready"
        self.template = TemplateProvisioner(FRONTEND_TEMPLATE, ADMIN_TEMPLATE)
        self.provisioned: list[str] = []
        self.applied: list[tuple[str, str]] = []
        self.oversized = AppInfo("https://app.example.com/")

    @property
    def inline(self) -> bool:
        return self.mode != "pending"

    def provision(self, event: LifecycleEvent) -> AppInfo:
        self.provisioned.append(event.instance.instance_id)
        if self.mode == "fail":
            raise ProvisioningError("tenant quota exhausted in region cn-north-4")
        if self.mode == "crash":
            raise RuntimeError("connection to tenant-db failed: password=hunter2")
        if self.mode == "oversized":
            return self.oversized
        return self.template.provision(event)

    def apply(self, event: LifecycleEvent) -> None:
        self.applied.append((event.instance.instance_id, event.type))

    def check_change(self, instance: Any, product_info: dict[str, Any]) -> str | None:
        return None


@pytest.fixture
def provisioner() -> Switchable:
    return Switchable()


@pytest.fixture
def app(settings: Settings, clock: FixedClock, provisioner: Switchable) -> Iterator[Flask]:
    """No consumer runs here: a queued creation stays pending (newInstance does not wait for it) until a
    test runs the instance's deliveries itself."""
    settings = dataclasses.replace(settings, provision_budget_ms=0)
    application: Flask = create_app(settings, provisioner=provisioner, clock=clock)
    application.config["TESTING"] = True
    yield application
    db.close_all()


@pytest.fixture
def market(app: Flask, settings: Settings) -> Marketplace:
    return Marketplace(app.test_client(), settings.of("koogallery").produce_path)


def run_deliveries(app: Flask, instance_id: str) -> None:
    """What the job consumer does for the instance, run here."""
    with db.connected():
        app.extensions["isvserver"].jobs.run_deliveries(instance_id)


row = instance_row


events = instance_events


def counts() -> tuple[int, int]:
    with db.connected():
        return Instance.select().count(), InstanceEvent.select().count()


def in_state(market: Marketplace, provisioner: Switchable, state: State) -> str:
    """A fresh instance (its own order) in `state`; its instanceId."""
    order = f"CS-{state.value}"
    if state in (P, X):
        provisioner.mode = "pending"
        answer = market.new_instance(order, business_id=f"inst-{state.value}")
        provisioner.mode = "ready"
        assert answer.code == IN_PROGRESS, answer.json
    else:
        answer = market.new_instance(order, business_id=f"inst-{state.value}")
        assert answer.code == OK, answer.json
    instance_id = answer.json["instanceId"]
    if state == F:
        assert market.send(status(instance_id, "FREEZE")).code == OK
    if state == R:
        assert market.send({"activity": "releaseInstance", "instanceId": instance_id}).code == OK
    if state == X:
        with db.connected():
            assert lifecycle.fail_provisioning(instance_id, "the product gave up") is True
    assert row(instance_id).state == state.value
    return instance_id


def refresh(scene: str) -> Callable[[str], dict[str, str]]:
    return lambda instance_id: {
        "activity": "refreshInstance",
        "instanceId": instance_id,
        "orderId": "CS-LATE",
        "orderLineId": "CS-LATE-000001",
        "scene": scene,
        "expireTime": EXPIRE,
    }


def status(instance_id: str, value: str) -> dict[str, str]:
    return {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": value}


# action → (the activity body for an instance id, {state: (resultCode, resulting state, event kind or None)})
TABLE: dict[Action, tuple[Callable[[str], dict[str, str]], dict[State, tuple[str, State, str | None]]]] = {
    Action.RENEW: (
        refresh("RENEWAL"),
        {
            P: (OK, P, "renewed"),
            X: (OK, X, "renewed"),
            A: (OK, A, "renewed"),
            F: (OK, F, "renewed"),
            R: (NOT_FOUND, R, None),
        },
    ),
    Action.CONVERT_TRIAL: (
        refresh("TRIAL_TO_FORMAL"),
        {
            P: (OK, P, "trial_converted"),
            X: (OK, X, "trial_converted"),
            A: (OK, A, "trial_converted"),
            F: (OK, F, "trial_converted"),
            R: (NOT_FOUND, R, None),
        },
    ),
    Action.UNSUBSCRIBE_RENEWAL: (
        refresh("UNSUBSCRIBE_RENEWAL_PERIOD"),
        {
            P: (OK, P, "renewal_unsubscribed"),
            X: (OK, X, "renewal_unsubscribed"),
            A: (OK, A, "renewal_unsubscribed"),
            F: (OK, F, "renewal_unsubscribed"),
            R: (NOT_FOUND, R, None),
        },
    ),
    Action.CHANGE_RENEWAL: (
        refresh("RENEWAL_CHANGE"),
        {
            P: (OK, P, "renewal_changed"),
            X: (OK, X, "renewal_changed"),
            A: (OK, A, "renewal_changed"),
            F: (OK, F, "renewal_changed"),
            R: (NOT_FOUND, R, None),
        },
    ),
    Action.FREEZE: (
        lambda instance_id: status(instance_id, "FREEZE"),
        {
            P: (OK, P, "frozen"),
            X: (OK, X, "frozen"),
            A: (OK, F, "frozen"),
            F: (OK, F, None),
            R: (OK, R, None),
        },
    ),
    Action.UNFREEZE: (
        lambda instance_id: status(instance_id, "UNFREEZE"),
        {
            P: (OK, P, "unfrozen"),
            X: (OK, X, "unfrozen"),
            A: (OK, A, None),
            F: (OK, A, "unfrozen"),
            R: (NOT_FOUND, R, None),
        },
    ),
    Action.UPGRADE: (
        lambda instance_id: {
            "activity": "upgradeInstance",
            "instanceId": instance_id,
            "orderId": "CS-UP",
            "orderLineId": "CS-UP-000001",
        },
        {
            P: (OK, P, "upgraded"),
            X: (OK, X, "upgraded"),
            A: (OK, A, "upgraded"),
            F: (OK, F, "upgraded"),
            R: (NOT_FOUND, R, None),
        },
    ),
    Action.RELEASE: (
        lambda instance_id: {
            "activity": "releaseInstance",
            "instanceId": instance_id,
            "orderId": "CS-REL",
            "orderLineId": "CS-REL-000001",
        },
        {
            P: (OK, R, "released"),
            X: (OK, R, "released"),
            A: (OK, R, "released"),
            F: (OK, R, "released"),
            R: (OK, R, None),
        },
    ),
}
STATES = (P, X, A, F, R)
PAIRS = [(action, state) for action in TABLE for state in STATES]


def test_the_table_covers_every_action_and_state() -> None:
    assert set(TRANSITIONS) == {
        *TABLE,
        Action.PROVISIONED,
        Action.PROVISIONING_FAILED,
        Action.PROVISIONING_RESTARTED,
    }
    assert all(set(row) == set(STATES) for row in TRANSITIONS.values())
    assert all(set(expected) == set(STATES) for _, expected in TABLE.values())


@pytest.mark.parametrize(("action", "state"), PAIRS, ids=[f"{a.name}-{s.value}" for a, s in PAIRS])
def test_activity_in_state(
    market: Marketplace, provisioner: Switchable, action: Action, state: State
) -> None:
    instance_id = in_state(market, provisioner, state)
    before = row(instance_id)
    history = events(instance_id)
    body, expected = TABLE[action]
    code, next_state, kind = expected[state]

    answer = market.send(body(instance_id))

    assert answer.code == code, answer.json
    after = row(instance_id)
    assert after.state == next_state.value
    added = events(instance_id)[len(history) :]
    if kind is None:
        assert added == []
        assert after.expire_at == before.expire_at
        assert after.released_at == before.released_at
    else:
        [event] = added
        assert (event.kind, event.from_state, event.to_state) == (kind, state.value, next_state.value)
    if kind is not None and body(instance_id)["activity"] == "refreshInstance":
        assert after.expire_at == datetime(2030, 12, 31, 23, 59, 59)
    if next_state == R:
        assert after.released_at is not None
    assert counts()[0] == 1  # never deleted, never duplicated


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
def test_complete_provisioning_in_state(
    market: Marketplace, provisioner: Switchable, settings: Settings, state: State
) -> None:
    instance_id = in_state(market, provisioner, state)
    before = row(instance_id)
    history = events(instance_id)
    info = AppInfo(
        "https://late.example.com/t/1", "https://late.example.com/admin", "boss", "S3cret-pw!", "hi"
    )

    with db.connected():
        changed = lifecycle.complete_provisioning(instance_id, info, settings.data_key)

    after = row(instance_id)
    added = events(instance_id)[len(history) :]
    if state in (P, X):
        assert changed is True
        assert after.state == "active"
        assert [(e.kind, e.from_state, e.to_state) for e in added] == [("provisioned", state.value, "active")]
    else:
        assert changed is False
        assert after.state == state.value
        assert added == []
        assert after.front_end_url == before.front_end_url
        assert after.password_encrypted == before.password_encrypted


# --- the calls outside the table, in every state ---------------------------------------------------

QUERY = {P: IN_PROGRESS, X: IN_PROGRESS, A: OK, F: OK, R: NOT_FOUND}
CHECK = {P: IN_PROGRESS, X: IN_PROGRESS, A: OK, F: OK, R: NOT_FOUND}


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
def test_query_in_state(market: Marketplace, provisioner: Switchable, state: State) -> None:
    instance_id = in_state(market, provisioner, state)

    answer = market.query(instance_id)

    assert answer.code == QUERY[state], answer.json
    if state == R:
        assert "info" not in answer.json
    elif state in (P, X):
        assert answer.json["info"] == [{"instanceId": instance_id}]
    else:
        [entry] = answer.json["info"]
        assert entry["appInfo"]["frontEndUrl"] == FRONTEND_TEMPLATE.format(instance_id=instance_id)


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
def test_change_check_in_state(market: Marketplace, provisioner: Switchable, state: State) -> None:
    instance_id = in_state(market, provisioner, state)
    before = counts()

    answer = market.send(
        {"activity": "changeInstanceCheck", "instanceId": instance_id, "productInfo": {"skuCode": "s2"}}
    )

    assert answer.code == CHECK[state], answer.json
    assert counts() == before


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
def test_new_instance_resend_in_state(market: Marketplace, provisioner: Switchable, state: State) -> None:
    instance_id = in_state(market, provisioner, state)
    before = counts()
    calls = len(provisioner.provisioned)

    answer = market.new_instance(f"CS-{state.value}", business_id="a-later-business-id")

    assert answer.code == (IN_PROGRESS if state in (P, X) else OK), answer.json
    assert answer.json["instanceId"] == instance_id
    assert len(provisioner.provisioned) == calls  # never provisioned twice
    if state == X:  # a resend starts a failed provisioning again
        assert row(instance_id).state == P.value
        assert events(instance_id)[-1].kind == "provisioning_restarted"
        assert counts() == (before[0], before[1] + 1)
    else:
        assert row(instance_id).state == state.value
        assert counts() == before


# --- asynchronous provisioning ---------------------------------------------------------------------


def test_pending_instance_becomes_active_when_provisioning_completes(
    app: Flask, market: Marketplace, provisioner: Switchable, settings: Settings
) -> None:
    provisioner.mode = "pending"
    first = market.new_instance("CS-ASYNC", business_id="async-1")
    resend = market.new_instance("CS-ASYNC", business_id="async-2")
    pending_query = market.query("async-1")

    assert (first.code, first.json["instanceId"]) == (IN_PROGRESS, "async-1")
    assert (resend.code, resend.json["instanceId"]) == (IN_PROGRESS, "async-1")
    assert pending_query.code == IN_PROGRESS
    assert "appInfo" not in pending_query.json["info"][0]
    assert provisioner.provisioned == []  # queued: the product has not been asked yet
    assert [e.kind for e in events("async-1")] == ["created"]

    info = AppInfo(
        "https://t.example.com/async-1", "https://t.example.com/a", "owner", "Pa55-word!", "welcome"
    )
    with db.connected():
        assert lifecycle.complete_provisioning("async-1", info, settings.data_key) is True

    answer = market.query("async-1")
    assert answer.code == OK
    assert answer.json["info"] == [
        {
            "instanceId": "async-1",
            "appInfo": {
                "frontEndUrl": "https://t.example.com/async-1",
                "adminUrl": "https://t.example.com/a",
                "userName": "owner",
                "password": "Pa55-word!",
                "memo": "welcome",
            },
        }
    ]
    stored = row("async-1")
    assert stored.state == "active"
    assert "Pa55-word!" not in stored.password_encrypted
    assert unseal(settings.data_key, stored.password_encrypted) == "Pa55-word!"
    assert [e.kind for e in events("async-1")] == ["created", "provisioned"]
    assert market.new_instance("CS-ASYNC", business_id="async-3").code == OK


def deliveries_of(instance_id: str) -> list[tuple[str, str, int]]:
    with db.connected():
        query = (
            Delivery.select(Delivery.event_type, Delivery.status, Delivery.attempts)
            .join(Instance)
            .where(Instance.instance_id == instance_id)
            .order_by(Delivery.id)
            .tuples()
        )
        return list(query)


def retry_time(instance_id: str) -> datetime:
    """When the instance's oldest pending delivery may be tried again."""
    with db.connected():
        return (
            Delivery.select(Delivery.next_attempt_at)
            .join(Instance)
            .where((Instance.instance_id == instance_id) & (Delivery.status == "pending"))
            .order_by(Delivery.id)
            .scalar()
        )


def test_changes_during_provisioning_are_applied_in_order_after_it(
    app: Flask, market: Marketplace, provisioner: Switchable
) -> None:
    """Freeze, renewal and upgrade that arrive while the creation is queued succeed at once, are handed
    to the product after the creation in arrival order, and the instance ends frozen, not active."""
    provisioner.mode = "pending"
    instance_id = market.new_instance("CS-ORDER", business_id="order-1").json["instanceId"]
    assert market.send(status(instance_id, "FREEZE")).code == OK
    assert market.send(refresh("RENEWAL")(instance_id)).code == OK
    assert market.send(status(instance_id, "UNFREEZE")).code == OK
    assert market.send(status(instance_id, "FREEZE")).code == OK
    assert row(instance_id).state == P.value
    provisioner.mode = "ready"

    run_deliveries(app, instance_id)

    assert provisioner.provisioned == [instance_id]
    assert provisioner.applied == [
        (instance_id, "instance.frozen"),
        (instance_id, "instance.renewed"),
        (instance_id, "instance.unfrozen"),
        (instance_id, "instance.frozen"),
    ]
    assert row(instance_id).state == F.value
    assert [e.kind for e in events(instance_id)][-1] == "provisioned"
    assert all(status == "delivered" for _, status, _ in deliveries_of(instance_id))
    assert market.query(instance_id).code == OK
    assert market.send(status(instance_id, "UNFREEZE")).code == OK
    assert row(instance_id).state == A.value


def test_failing_creation_is_retried_then_failed_and_a_resend_restarts_it(
    app: Flask, market: Marketplace, provisioner: Switchable
) -> None:
    """Each failed attempt is recorded with a backoff; the last marks the instance failed, with the
    changes behind it waiting; the marketplace's resend restarts it and everything is then handed over."""
    jobs = app.extensions["isvserver"].jobs
    jobs.settings = dataclasses.replace(jobs.settings, job_max_attempts=2, job_retry_base_s=0.5)
    provisioner.mode = "pending"
    instance_id = market.new_instance("CS-RETRY", business_id="retry-1").json["instanceId"]
    assert market.send(status(instance_id, "FREEZE")).code == OK
    provisioner.mode = "fail"

    run_deliveries(app, instance_id)
    first = deliveries_of(instance_id)
    run_deliveries(app, instance_id)  # inside the backoff (0.4 s at least): nothing is tried
    retry_at = retry_time(instance_id)
    assert wait_until(lambda: utcnow() >= retry_at, 5), f"the retry at {retry_at} never came due"
    run_deliveries(app, instance_id)

    assert first == [("instance.created", "pending", 1), ("instance.frozen", "pending", 0)]
    assert provisioner.provisioned == [instance_id, instance_id]
    assert deliveries_of(instance_id) == [
        ("instance.created", "failed", 2),
        ("instance.frozen", "pending", 0),
    ]
    assert row(instance_id).state == X.value
    assert [e.kind for e in events(instance_id)][-1] == "provisioning_failed"
    assert provisioner.applied == []  # the freeze waits behind the failed creation
    assert market.query(instance_id).code == IN_PROGRESS

    provisioner.mode = "ready"
    resend = market.new_instance("CS-RETRY", business_id="retry-2")
    run_deliveries(app, instance_id)

    assert (resend.code, resend.json["instanceId"]) == (IN_PROGRESS, instance_id)
    assert row(instance_id).state == F.value
    assert provisioner.applied == [(instance_id, "instance.frozen")]
    assert deliveries_of(instance_id) == [
        ("instance.created", "delivered", 0),
        ("instance.frozen", "delivered", 0),
    ]
    assert market.new_instance("CS-RETRY", business_id="retry-3").code == OK


def test_query_mixing_pending_and_active_answers_in_progress(
    market: Marketplace, provisioner: Switchable
) -> None:
    active = in_state(market, provisioner, A)
    pending = in_state(market, provisioner, P)

    answer = market.query(active, pending)

    assert answer.code == IN_PROGRESS
    assert [i["instanceId"] for i in answer.json["info"]] == [active, pending]
    assert "appInfo" in answer.json["info"][0]
    assert "appInfo" not in answer.json["info"][1]


# --- provisioning failure --------------------------------------------------------------------------


def test_provisioning_error_rolls_back_and_a_resend_creates_the_instance(
    market: Marketplace, provisioner: Switchable
) -> None:
    provisioner.mode = "fail"

    failed = market.new_instance("CS-FAIL", business_id="fail-1")  # the reply's Body-Sign is checked

    assert failed.status == 200
    assert failed.code == INTERNAL
    assert "instanceId" not in failed.json
    assert "tenant quota exhausted" in failed.json["resultMsg"]
    assert counts() == (0, 0)
    assert provisioner.provisioned == ["fail-1"]

    provisioner.mode = "ready"
    retried = market.new_instance("CS-FAIL", business_id="fail-2")

    assert retried.code == OK
    instance_id = retried.json["instanceId"]
    assert instance_id in ("fail-1", "fail-2")
    assert row(instance_id).state == "active"
    assert [e.kind for e in events(instance_id)] == ["created", "provisioned"]
    assert counts() == (1, 2)
    assert market.query(instance_id).code == OK


def test_unexpected_provisioner_crash_rolls_back_and_tells_nothing(
    market: Marketplace, provisioner: Switchable
) -> None:
    provisioner.mode = "crash"

    answer = market.new_instance("CS-CRASH", business_id="crash-1")

    assert answer.code == INTERNAL
    assert "hunter2" not in answer.json["resultMsg"]
    assert counts() == (0, 0)


# the AppInfo limits of spec §5 (frontEndUrl M 512, adminUrl 512, userName 128, password 128, memo 1024)
OVERSIZED = {
    "frontEndUrl 513": AppInfo("https://app.example.com/" + "u" * 489),
    "frontEndUrl empty": AppInfo(""),
    "adminUrl 513": AppInfo("https://app.example.com/", admin_url="https://app.example.com/" + "a" * 489),
    "userName 129": AppInfo("https://app.example.com/", user_name="n" * 129),
    "password 129": AppInfo("https://app.example.com/", password="p" * 129),
    "memo 1025": AppInfo("https://app.example.com/", memo="m" * 1025),
}


@pytest.mark.parametrize("label", list(OVERSIZED))
def test_app_info_outside_the_contract_is_never_answered(
    market: Marketplace, provisioner: Switchable, label: str
) -> None:
    """An AppInfo the marketplace cannot take fails the call (000005, nothing kept) on every database;
    only an over-long memo may instead be cut to its 1024 characters."""
    provisioner.mode = "oversized"
    provisioner.oversized = OVERSIZED[label]

    created = market.new_instance("CS-BIG", business_id="big-1")
    queried = market.query("big-1")

    if label.startswith("memo") and created.code == OK:
        [entry] = queried.json["info"]
        assert entry["appInfo"]["memo"] == "m" * 1024
        return
    assert created.code == INTERNAL, created.json
    assert queried.code == NOT_FOUND, queried.json
    assert counts() == (0, 0)


def test_an_unexpected_provisioner_error_is_stored_without_its_message(
    app: Flask, market: Marketplace, provisioner: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    """Only ProvisioningError (and the order-query errors) promise a message safe to store and show; any
    other exception is stored by its type, its message going only to the log, masked there."""
    provisioner.mode = "pending"
    instance_id = market.new_instance("CS-CRASH-Q", business_id="crash-q").json["instanceId"]
    provisioner.mode = "crash"

    run_deliveries(app, instance_id)

    with db.connected():
        [error] = [
            d.last_error for d in Delivery.select().join(Instance).where(Instance.instance_id == instance_id)
        ]
    assert error == "RuntimeError (details in the consumer's log)"
    assert "hunter2" not in "".join(str(e.detail) for e in events(instance_id))
    assert any(r.exc_info and "delivery raised" in r.getMessage() for r in caplog.records)
