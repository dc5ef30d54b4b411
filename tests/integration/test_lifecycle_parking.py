"""An adapter's own changes (record_change): recorded against a known instance, parked for an unknown
one and adopted, in order, by the creation of that id; queued only for a provisioner that hears them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from isvserver import db, deferred
from isvserver.lifecycle import (
    PARKED,
    RECORDED,
    REPEATED,
    Lifecycle,
    create_instance,
    hears,
    record_change,
    register_event_types,
)
from isvserver.models import Delivery, Instance, InstanceEvent, ParkedChange
from isvserver.provisioning import AppInfo, BaseProvisioner, LifecycleEvent
from isvserver.provisioning.template import TemplateProvisioner

from support.harness import DATA_KEY, FRONTEND_TEMPLATE

KIND, TYPE = "widget_synced", "widget.synced"
register_event_types({KIND: TYPE})


class Queued:
    """A provisioner of before the adapters' events: not inline, no `sync`."""

    inline = False

    def provision(self, event: LifecycleEvent) -> AppInfo:
        return AppInfo(front_end_url="https://app.example/t")

    def apply(self, event: LifecycleEvent) -> None:
        return None

    def check_change(self, instance: Any, product_info: dict[str, Any]) -> str | None:
        return None


class NotCallableSync(Queued):
    """`sync` that is not a method: it does not opt in."""

    sync = None


class Syncing(BaseProvisioner):
    """A provisioner that opted in to the adapters' events."""


class InlineSyncing(TemplateProvisioner):
    """An inline provisioner that has a `sync` method: still no outbox."""

    def sync(self, event: LifecycleEvent) -> None:
        return None


class Jobs:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def deliver_soon(self, instance_id: str, at: datetime | None = None) -> None:
        self.asked.append(instance_id)


@pytest.fixture(autouse=True)
def bound(database_url: str) -> Iterator[None]:
    database = db.bind(database_url)
    with db.connected():
        yield
    db.close_all(database)


def parked() -> list[tuple[str, str, str | None, str | None, bool]]:
    """(instance id, kind, idempotency key, detail, adopted) of every parked change, in order."""
    return [
        (p.instance_id, p.kind, p.idempotency_key, p.detail, p.adopted_at is not None)
        for p in ParkedChange.select().order_by(ParkedChange.id)
    ]


def events(instance_id: str) -> list[tuple[str, str, str, str | None, dict | None]]:
    """(kind, from state, to state, idempotency key, detail) of the instance's events, in order."""
    query = InstanceEvent.select().join(Instance).where(Instance.instance_id == instance_id)
    return [
        (e.kind, e.from_state, e.to_state, e.idempotency_key, json.loads(e.detail) if e.detail else None)
        for e in query.order_by(InstanceEvent.id)
    ]


def delivered_types(instance_id: str) -> list[str]:
    query = Delivery.select().join(Instance).where(Instance.instance_id == instance_id)
    return [d.event_type for d in query.order_by(Delivery.id)]


def create(instance_id: str, provisioner: Any, key: str | None = None) -> tuple[Instance, bool]:
    return create_instance("market", key or f"key-{instance_id}", instance_id, provisioner, DATA_KEY.encode())


@pytest.mark.parametrize("kind", ["created", "frozen", "never_declared"])
def test_only_an_adapters_declared_kind_is_recorded(kind: str) -> None:
    with pytest.raises(ValueError, match="is not an adapter's declared event kind"):
        record_change("inst-1", kind, {"n": 1}, Syncing())
    assert parked() == []


def test_a_change_for_an_unknown_id_is_parked_once_per_key() -> None:
    provisioner = Syncing()
    assert record_change("early", KIND, {"b": 2, "a": 1}, provisioner, "k-1") == PARKED
    assert record_change("early", KIND, {"b": 3}, provisioner, "k-1") == REPEATED
    assert record_change("other", KIND, {}, provisioner, "k-1") == PARKED  # the key is per instance id
    assert record_change("early", KIND, {}, provisioner) == PARKED
    assert record_change("early", KIND, {}, provisioner) == PARKED  # without a key: nothing to repeat
    assert parked() == [
        ("early", KIND, "k-1", '{"a": 1, "b": 2}', False),
        ("other", KIND, "k-1", None, False),
        ("early", KIND, None, None, False),
        ("early", KIND, None, None, False),
    ]
    assert Instance.select().count() == 0 and InstanceEvent.select().count() == 0


@pytest.mark.parametrize(
    ("provisioner", "queued"),
    [
        (Syncing(), True),
        (Queued(), False),
        (NotCallableSync(), False),
        (InlineSyncing(FRONTEND_TEMPLATE), False),
    ],
    ids=["sync", "no-sync", "sync-not-callable", "inline"],
)
def test_a_change_for_a_known_instance_is_recorded_in_its_state(provisioner: Any, queued: bool) -> None:
    instance, _ = create("inst-1", provisioner)
    state = instance.state
    assert record_change("inst-1", KIND, {"count": 2}, provisioner, "k-1") == RECORDED
    assert record_change("inst-1", KIND, {"count": 3}, provisioner, "k-1") == REPEATED
    assert record_change("inst-1", KIND, {}, provisioner) == RECORDED
    assert events("inst-1")[-2:] == [
        (KIND, state, state, "k-1", {"count": 2}),
        (KIND, state, state, None, None),
    ]
    assert Instance.get(Instance.instance_id == "inst-1").state == state
    assert delivered_types("inst-1").count(TYPE) == (2 if queued else 0)
    assert parked() == []


@pytest.mark.parametrize(
    ("provisioner", "state", "created_types"),
    [
        (Syncing(), "provisioning", ["instance.created", TYPE, TYPE]),
        (Queued(), "provisioning", ["instance.created"]),
        (InlineSyncing(FRONTEND_TEMPLATE), "active", []),
    ],
    ids=["sync", "no-sync", "inline"],
)
def test_the_creation_of_the_id_adopts_its_parked_changes_in_order(
    provisioner: Any, state: str, created_types: list[str]
) -> None:
    assert record_change("early", KIND, {"n": 1}, provisioner, "k-1") == PARKED
    assert record_change("elsewhere", KIND, {"n": 9}, provisioner, "k-9") == PARKED
    assert record_change("early", KIND, {"n": 2}, provisioner) == PARKED

    instance, created = create("early", provisioner)
    assert created and instance.state == state
    adopted = events("early")[-2:]
    assert adopted == [(KIND, state, state, "k-1", {"n": 1}), (KIND, state, state, None, {"n": 2})]
    assert delivered_types("early") == created_types
    assert [(p[0], p[4]) for p in parked()] == [("early", True), ("elsewhere", False), ("early", True)]
    event_ids = [e.id for e in InstanceEvent.select().order_by(InstanceEvent.id)][-2:]
    assert [p.event_id for p in ParkedChange.select().where(ParkedChange.instance_id == "early")] == event_ids

    before = events("early")
    again, created_again = create("early", provisioner)  # a resend adopts nothing twice
    assert not created_again and again.instance_id == "early"
    assert events("early") == before
    assert record_change("early", KIND, {"n": 1}, provisioner, "k-1") == REPEATED  # adopted keys count


def test_an_adopted_count_is_the_number_of_changes_parked() -> None:
    from isvserver import lifecycle

    for n in range(3):
        record_change("early", KIND, {"n": n}, Queued())
    instance = Instance.create(
        instance_id="early",
        marketplace="market",
        creation_key="k",
        state="active",
        created_at=datetime(2026, 1, 1),
        updated_at=datetime(2026, 1, 1),
    )
    assert lifecycle._adopt_parked(instance, Queued()) == 3
    assert lifecycle._adopt_parked(instance, Queued()) == 0


def test_who_hears_an_adapters_change() -> None:
    assert hears(Syncing(), KIND) and hears(Syncing(), "frozen")
    assert not hears(Queued(), KIND) and hears(Queued(), "frozen")
    assert not hears(NotCallableSync(), KIND)
    assert not hears(InlineSyncing(FRONTEND_TEMPLATE), KIND)
    assert not hears(InlineSyncing(FRONTEND_TEMPLATE), "frozen")


@pytest.mark.parametrize(
    ("provisioner", "asked"), [(Syncing(), ["inst-1"]), (Queued(), [])], ids=["sync", "no-sync"]
)
def test_the_lifecycle_queues_a_recorded_change_after_commit_for_a_provisioner_that_hears_it(
    provisioner: Any, asked: list[str]
) -> None:
    jobs = Jobs()
    changes = Lifecycle(provisioner, jobs, DATA_KEY.encode())
    create("inst-1", provisioner)
    with deferred.collecting() as steps:
        assert changes.record("inst-1", KIND, {"n": 1}, "k-1") is True
        assert changes.record("inst-1", KIND, {"n": 1}, "k-1") is False
        assert changes.record("early", KIND, {"n": 1}, "k-2") is True  # parked: nobody to deliver to yet
        assert jobs.asked == []
    for step in steps:
        step()
    assert jobs.asked == asked


def test_a_change_parked_without_detail_is_adopted_without_detail() -> None:
    assert record_change("early", KIND, {}, Syncing(), "k-1") == PARKED
    create("early", Syncing())
    assert events("early")[-1] == (KIND, "provisioning", "provisioning", "k-1", None)


def test_a_moment_in_a_change_is_stored_as_text_and_told_as_a_moment() -> None:
    """A detail value JSON has no form for (a datetime) is stored as its text, parked or recorded; the
    provisioner's event has it back as a datetime (a name ending in _at)."""
    from isvserver.lifecycle import lifecycle_event

    moment = datetime(2026, 1, 2, 3, 4, 5)
    assert record_change("early", KIND, {"synced_at": moment}, Syncing()) == PARKED
    assert parked()[0][3] == '{"synced_at": "2026-01-02 03:04:05"}'
    instance, _ = create("early", Syncing())
    assert record_change("early", KIND, {"synced_at": moment}, Syncing()) == RECORDED
    adopted, recorded = list(
        InstanceEvent.select().where(InstanceEvent.kind == KIND).order_by(InstanceEvent.id)
    )
    for event in (adopted, recorded):
        assert lifecycle_event(event, instance).change == {"kind": KIND, "synced_at": moment}


def test_a_change_parked_while_its_instance_is_created_is_adopted_not_lost() -> None:
    """Parking and adopting one id are serialised: the creation waits for a parking transaction still
    open, then adopts what it parked (SQLite: its write lock; PostgreSQL: an advisory lock per id)."""
    parked_open, release, errors = threading.Event(), threading.Event(), []

    def park() -> None:
        try:
            with db.connected(), db.database.atomic():
                assert record_change("race", KIND, {"n": 1}, Syncing(), "k-race") == PARKED
                parked_open.set()
                release.wait(10)
        except Exception as exc:  # reported below: an assertion in a thread would be lost
            errors.append(exc)
            parked_open.set()

    def creation() -> None:
        try:
            with db.connected():
                create("race", Syncing())
        except Exception as exc:
            errors.append(exc)

    parking = threading.Thread(target=park)
    parking.start()
    assert parked_open.wait(10)
    creating = threading.Thread(target=creation)
    creating.start()
    creating.join(0.5)
    waited = creating.is_alive()
    release.set()
    parking.join(10)
    creating.join(10)
    assert errors == []
    assert waited, "the creation did not wait for the parking transaction"
    assert [(e[0], e[3]) for e in events("race")] == [("created", None), (KIND, "k-race")]
    assert [p[4] for p in parked()] == [True]
