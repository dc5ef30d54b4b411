"""The event id the lifecycle builds for a recorded change is the `webhook-id` of every attempt at it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime

import pytest
from flask import Flask

from isvserver import create_app, db
from isvserver.models import Delivery
from isvserver.provisioning.webhook import WebhookProvisioner
from isvserver.settings import Settings

from support.harness import FixedClock, Marketplace
from support.receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """The product's webhook endpoint on loopback."""
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def app(settings: Settings, clock: FixedClock, receiver: WebhookReceiver) -> Iterator[Flask]:
    """The app with the webhook provisioner; no consumer runs: the test runs the deliveries itself."""
    settings = dataclasses.replace(settings, provision_budget_ms=0)
    provisioner = WebhookProvisioner(receiver.url, receiver.secret, timeout_s=5.0)
    application = create_app(settings, provisioner=provisioner, clock=clock)
    application.config["TESTING"] = True
    yield application
    db.close_all()


def run_due_deliveries(app: Flask, instance_id: str) -> None:
    """What the job consumer does for the instance once any retry is due."""
    with db.connected():
        Delivery.update(next_attempt_at=datetime(2000, 1, 1)).where(Delivery.status == "pending").execute()
        app.extensions["isvserver"].jobs.run_deliveries(instance_id)


def test_each_retry_of_a_change_carries_its_event_id(
    app: Flask, marketplace: Marketplace, receiver: WebhookReceiver
) -> None:
    """Creation and freeze each fail once (503) and are retried with the same webhook-id; the two differ."""
    answer = marketplace.new_instance("CS-EVT", business_id="evt-1")
    assert answer.code == "000004"
    instance_id = answer.json["instanceId"]
    receiver.fail_next(1)
    run_due_deliveries(app, instance_id)
    run_due_deliveries(app, instance_id)
    freeze = {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "FREEZE"}
    assert marketplace.send(freeze).code == "000000"
    receiver.fail_next(1)
    run_due_deliveries(app, instance_id)
    run_due_deliveries(app, instance_id)

    sent = [(r["type"], r["webhook_id"], r["status"]) for r in receiver.requests]
    assert [(kind, status) for kind, _, status in sent] == [
        ("instance.created", 503),
        ("instance.created", 200),
        ("instance.frozen", 503),
        ("instance.frozen", 200),
    ]
    created, frozen = {sent[0][1], sent[1][1]}, {sent[2][1], sent[3][1]}
    assert len(created) == len(frozen) == 1
    assert created != frozen
    assert receiver.event_types(instance_id) == ["instance.created", "instance.frozen"]
    assert marketplace.query(instance_id).code == "000000"
