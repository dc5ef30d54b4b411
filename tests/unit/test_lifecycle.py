"""The lifecycle's commands on their own: outbox decisions and after-commit queueing (no HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from isvserver import db, deferred
from isvserver.lifecycle import (
    EVENT_TYPES,
    Action,
    Lifecycle,
    Operation,
    State,
    complete_provisioning,
    register_event_types,
)
from isvserver.migrations import migrate
from isvserver.models import Delivery, Instance, InstanceEvent
from isvserver.provisioning import AppInfo
from isvserver.provisioning.template import TemplateProvisioner

from support.harness import DATA_KEY, FRONTEND_TEMPLATE


class QueuedProvisioner:
    """A provisioner that is not inline: every change goes through the outbox."""

    inline = False

    def provision(self, event):
        return AppInfo(front_end_url="https://app.example/t")

    def apply(self, event):
        return None

    def check_change(self, instance, product_info):
        return None


class RecordingJobs:
    """The job queue as the lifecycle sees it: which instances were handed to a runner, and when."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def deliver_soon(self, instance_id: str, at: datetime | None = None) -> None:
        self.asked.append(instance_id)


@pytest.fixture
def bound(tmp_path: Path) -> Iterator[None]:
    database = db.bind(f"sqlite:///{tmp_path / 'lifecycle.sqlite3'}")
    migrate(database)
    with db.connected():
        yield
    db.close_all(database)


def _pair(creation: Operation) -> tuple[Instance | None, bool]:
    """A creation as (instance, created)."""
    return creation.instance, creation.changed


def test_a_queued_change_reaches_the_outbox_and_a_runner_only_after_commit(bound: None) -> None:
    jobs = RecordingJobs()
    changes = Lifecycle(QueuedProvisioner(), jobs, DATA_KEY.encode())

    with deferred.collecting() as steps:
        instance, created = _pair(changes.create("market", "key-1", "inst-1"))
        assert (created, instance.state) == (True, State.PROVISIONING)
        assert jobs.asked == []
    for step in steps:
        step()

    assert jobs.asked == ["inst-1"]
    assert [d.event_type for d in Delivery.select()] == ["instance.created"]


def test_a_repeated_change_is_not_queued_twice(bound: None) -> None:
    jobs = RecordingJobs()
    changes = Lifecycle(QueuedProvisioner(), jobs, DATA_KEY.encode())
    changes.create("market", "key-1", "inst-1")
    assert complete_provisioning("inst-1", AppInfo(front_end_url="https://app.example/t"), DATA_KEY.encode())
    jobs.asked.clear()

    assert changes.set_frozen("inst-1", True).changed is True
    assert changes.set_frozen("inst-1", True).changed is False
    assert changes.upgrade("inst-1", "key-1").changed is True
    assert changes.upgrade("inst-1", "key-1").changed is False

    assert jobs.asked == ["inst-1", "inst-1"]
    kinds = [e.kind for e in InstanceEvent.select().order_by(InstanceEvent.id)]
    assert kinds == ["created", Action.PROVISIONED.value, Action.FREEZE.value, Action.UPGRADE.value]
    assert [d.event_type for d in Delivery.select().order_by(Delivery.id)] == [
        "instance.created",
        "instance.frozen",
        "instance.upgraded",
    ]


def test_an_inline_provisioner_needs_no_outbox(bound: None) -> None:
    jobs = RecordingJobs()
    changes = Lifecycle(TemplateProvisioner(FRONTEND_TEMPLATE), jobs, DATA_KEY.encode())

    instance, _ = _pair(changes.create("market", "key-1", "inst-1"))
    changes.release("inst-1")

    assert instance.state == State.ACTIVE
    assert jobs.asked == []
    assert Delivery.select().count() == 0


def test_adapters_add_event_kinds_but_cannot_rename_one() -> None:
    register_event_types({"thing_synced": "thing.synced"})
    register_event_types({"thing_synced": "thing.synced"})
    assert EVENT_TYPES["thing_synced"] == "thing.synced"
    with pytest.raises(ValueError, match="already"):
        register_event_types({"created": "something.else"})


def test_an_instance_without_an_order_line_is_created_once_per_key(bound: None) -> None:
    """A broker or V Cloud instance: its adapter's own idempotency key, no order line, no business id."""
    changes = Lifecycle(TemplateProvisioner(FRONTEND_TEMPLATE), RecordingJobs(), DATA_KEY.encode())

    first, created = _pair(changes.create("broker", "service-instance:abc", "abc"))
    again, created_again = _pair(changes.create("broker", "service-instance:abc", "ignored"))
    other, _ = _pair(changes.create("broker", "service-instance:def", "def"))
    same_key_elsewhere, elsewhere_created = _pair(changes.create("vcloud", "service-instance:abc", "abc-2"))

    assert (created, created_again, elsewhere_created) == (True, False, True)
    assert first.instance_id == again.instance_id == "abc"
    assert (first.order_id, first.order_line_id, first.business_id) == (None, None, None)
    assert other.instance_id == "def"
    assert same_key_elsewhere.instance_id == "abc-2"
