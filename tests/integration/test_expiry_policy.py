"""Each adapter's expiry policy decides what reconcile does with its instances past their expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from isvserver import db
from isvserver.adapters import Adapter, ExpiryPolicy, expiry_policies
from isvserver.jobs import reconcile
from isvserver.models import Instance, utcnow
from isvserver.settings import Settings

POLICIES = {
    "koogallery": ExpiryPolicy.GUARD,
    "paid_hours": ExpiryPolicy.FREEZE,
    "no_expiry": ExpiryPolicy.IGNORE,
}


def add(instance_id: str, marketplace: str, state: str, now: datetime, expires_in_days: float) -> None:
    with db.connected():
        Instance.create(
            instance_id=instance_id,
            marketplace=marketplace,
            creation_key=f"k:{instance_id}",
            state=state,
            expire_at=now + timedelta(days=expires_in_days),
            created_at=now - timedelta(days=60),
            updated_at=now - timedelta(days=40),
        )


@pytest.fixture
def fleet(app: Flask, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Expired and frozen instances of three marketplaces with the three policies."""
    monkeypatch.setattr(reconcile, "expiry_policies", lambda names: POLICIES)
    monkeypatch.setattr("isvserver.web.metrics.expiry_policies", lambda names: POLICIES)
    now = utcnow()
    for marketplace in POLICIES:
        add(f"{marketplace}-expired", marketplace, "active", now, -2)
        add(f"{marketplace}-current", marketplace, "active", now, 2)
        add(f"{marketplace}-frozen", marketplace, "frozen", now, -30)
    return now


def states() -> dict[str, str]:
    with db.connected():
        return dict(Instance.select(Instance.instance_id, Instance.state).tuples())


def test_without_auto_freeze_only_the_freeze_policys_instances_are_frozen(
    fleet: datetime, settings: Settings
) -> None:
    assert settings.auto_freeze is False
    report = reconcile.periodic(settings)

    assert [r.instance_id for r in report.expired_not_frozen] == ["koogallery-expired", "paid_hours-expired"]
    assert [r.instance_id for r in report.frozen_not_released] == ["koogallery-frozen", "paid_hours-frozen"]
    assert report.auto_frozen == 1
    assert {i: s for i, s in states().items() if i.endswith("-expired")} == {
        "koogallery-expired": "active",  # the marketplace freezes it; listed as overdue
        "paid_hours-expired": "frozen",  # the end of what was paid: frozen whatever the setting
        "no_expiry-expired": "active",  # its expiry means nothing to reconcile
    }


def test_with_auto_freeze_the_guard_freezes_too_and_ignore_stays_out(fleet: datetime, settings) -> None:
    from dataclasses import replace

    report = reconcile.periodic(replace(settings, auto_freeze=True))

    assert report.auto_frozen == 2
    assert states()["koogallery-expired"] == "frozen"
    assert states()["no_expiry-expired"] == "active"


def test_freeze_expired_freezes_one_marketplaces_instances(fleet: datetime) -> None:
    with db.connected():
        assert reconcile.freeze_expired("paid_hours", utcnow(), outbox=False) == 1
        assert reconcile.freeze_expired("paid_hours", utcnow(), outbox=False) == 0
    assert states()["paid_hours-expired"] == "frozen"
    assert states()["koogallery-expired"] == "active"


def test_the_overdue_metric_leaves_out_the_ignored(fleet: datetime, client) -> None:
    text = client.get("/metrics").get_data(as_text=True)
    gauge = {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "isv_instances_overdue"
    }
    assert gauge == {"expired_not_frozen": 2.0, "frozen_not_released": 2.0}


def test_koogallery_keeps_the_guard_policy_and_a_new_adapter_gets_it_by_default() -> None:
    assert expiry_policies(["koogallery", "koogallery_kit"]) == {
        "koogallery": ExpiryPolicy.GUARD,
        "koogallery_kit": ExpiryPolicy.GUARD,
    }
    assert Adapter(name="reader").expiry_policy == ExpiryPolicy.GUARD
