"""The usage ledger: records taken, duplicates and conflicts, refusals with reasons, nothing half-stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from peewee import IntegrityError

from isvserver import db, usage
from isvserver.models import Instance, UsageRecord, utcnow
from isvserver.settings import Settings
from isvserver.usage import Reason, Report, Status

from support.harness import Marketplace


def wire(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


NOW = utcnow().replace(microsecond=0)  # one moment: a resend is the same record


def report(instance_id: str, sn: str, value: object = "1.5", hours_ago: float = 1, **extra: object) -> Report:
    end = NOW - timedelta(hours=hours_ago)
    return Report(instance_id, sn, wire(end - timedelta(hours=1)), wire(end), value, **extra)


@pytest.fixture
def on_demand(app: Flask, marketplace: Marketplace) -> str:
    """An active, on-demand KooGallery instance's id."""
    instance_id = marketplace.new_instance("CSUSAGE1", business_id="usage-inst-1").json["instanceId"]
    assert usage.mark_on_demand(instance_id)
    return instance_id


def stored() -> list[UsageRecord]:
    with db.connected():
        return list(UsageRecord.select().order_by(UsageRecord.id))


def test_a_record_is_stored_once_and_its_resend_is_a_duplicate(settings: Settings, on_demand: str) -> None:
    first = usage.record_many(settings, [report(on_demand, "sn-1", "2.5000")], "http", "billing")
    again = usage.record_many(settings, [report(on_demand, "sn-1", "2.5")], "http", "billing")
    assert [o.status for o in first] == [Status.ACCEPTED]
    assert [o.status for o in again] == [Status.DUPLICATE]
    (row,) = stored()
    assert (row.metering_sn, row.usage_value, row.state, row.source, row.source_name) == (
        "sn-1",
        Decimal("2.5"),
        "pending",
        "http",
        "billing",
    )
    assert row.marketplace == "koogallery"


def test_the_same_sn_with_other_content_is_a_conflict_naming_what_differs(
    settings: Settings, on_demand: str
) -> None:
    usage.record_many(settings, [report(on_demand, "sn-1", "2")], "http")
    (outcome,) = usage.record_many(settings, [report(on_demand, "sn-1", "3")], "http")
    assert (outcome.status, outcome.code) == (Status.REFUSED, Reason.CONFLICT)
    assert "value" in outcome.reason and "sn-1" in outcome.reason
    pair = [report(on_demand, "sn-2"), report(on_demand, "sn-2", "9")]
    (again,) = usage.record_many(settings, pair, "http")[1:]
    assert again.code == Reason.CONFLICT
    assert [r.usage_value for r in stored()] == [Decimal("2"), Decimal("1.5")]


def test_refusals_say_why_and_store_nothing(
    settings: Settings, marketplace: Marketplace, on_demand: str
) -> None:
    periodic = marketplace.new_instance("CSPERIOD", business_id="periodic-1").json["instanceId"]
    released = marketplace.new_instance("CSGONE", business_id="gone-1").json["instanceId"]
    usage.mark_on_demand(released)
    marketplace.send({"activity": "releaseInstance", "instanceId": released})
    outcomes = usage.record_many(
        settings,
        [
            report("no-such-instance", "r-1"),
            report(released, "r-2"),
            report(periodic, "r-3"),
            report(on_demand, "r-4", hours_ago=73),  # KooGallery takes 72 h by default
            report(on_demand, "r-5", value="0"),
            report(on_demand, "r-6", value="1.23456"),
            report(on_demand, "r-7", value=True),
            Report(on_demand, "r-8", "20260101T000000Z", "20251231T000000Z", "1"),
            Report(on_demand, "r 9", "20260101T000000Z", "20260101T010000Z", "1"),
            Report(on_demand, "r-10", "yesterday", "20260101T010000Z", "1"),
            Report(on_demand, "r-11", wire(utcnow()), wire(utcnow() + timedelta(hours=1)), "1"),
        ],
        "http",
    )
    assert [(o.metering_sn, o.status, o.code) for o in outcomes] == [
        ("r-1", Status.REFUSED, Reason.UNKNOWN_INSTANCE),
        ("r-2", Status.REFUSED, Reason.RELEASED),
        ("r-3", Status.REFUSED, Reason.NOT_ON_DEMAND),
        ("r-4", Status.REFUSED, Reason.TOO_OLD),
        *((f"r-{n}", Status.REFUSED, Reason.INVALID) for n in (5, 6, 7, 8)),
        ("r 9", Status.REFUSED, Reason.INVALID),
        ("r-10", Status.REFUSED, Reason.INVALID),
        ("r-11", Status.REFUSED, Reason.INVALID),
    ]
    assert "72 h" in outcomes[3].reason
    assert "4 decimals" in outcomes[5].reason
    assert stored() == []


@pytest.mark.parametrize(
    ("begin", "end"),
    [
        ("2026-12-05T10:00:00Z", "2026-12-05T11:00:00+00:00"),
        ("2026-12-05T18:00:00+08:00", "20261205T110000Z"),
        ("2026-12-05T10:00:00", "2026-12-05T11:00:00.000Z"),
    ],
)
def test_iso_and_compact_times_are_the_same_utc_seconds(
    settings: Settings, on_demand: str, begin: str, end: str
) -> None:
    now = datetime(2026, 12, 5, 12, 0, 0)
    (outcome,) = usage.record_many(settings, [Report(on_demand, "t-1", begin, end, 7)], "cli", now=now)
    assert outcome.status == Status.ACCEPTED, outcome.reason
    (row,) = stored()
    assert (row.begin_at, row.end_at) == (datetime(2026, 12, 5, 10), datetime(2026, 12, 5, 11))


def test_a_batch_is_never_half_stored(settings: Settings, on_demand: str, monkeypatch) -> None:
    real = UsageRecord.insert_many
    calls = []

    def crash_on_second_chunk(rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise IntegrityError("simulated crash between two chunks")
        return real(rows)

    monkeypatch.setattr(UsageRecord, "insert_many", crash_on_second_chunk)
    reports = [report(on_demand, f"b-{n}") for n in range(450)]
    with pytest.raises(IntegrityError):
        usage.record_many(settings, reports, "http")
    assert stored() == []
    monkeypatch.undo()
    assert {o.status for o in usage.record_many(settings, reports, "http")} == {Status.ACCEPTED}
    assert len(stored()) == 450


def test_python_record_and_latest(app: Flask, on_demand: str) -> None:
    end = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    with app.app_context():
        first = usage.record(on_demand, "py-1", end - timedelta(hours=2), end - timedelta(hours=1), 4)
        second = usage.record(on_demand, "py-2", end - timedelta(hours=1), end, Decimal("0.0001"))
        assert usage.record(on_demand, "py-2", end - timedelta(hours=1), end, "0.0001").status == "duplicate"
    assert (first.status, second.status) == (Status.ACCEPTED, Status.ACCEPTED)
    with db.connected():
        ref = Instance.get(Instance.instance_id == on_demand).id
        latest = usage.latest([ref, ref + 1000])
    assert latest == {ref: usage.Latest(Decimal("0.0001"), end)}


def test_too_many_records_or_an_unknown_source_is_a_programming_error(settings: Settings) -> None:
    with pytest.raises(ValueError, match="1000"):
        usage.record_many(settings, [report("x", f"s{n}") for n in range(1001)], "http")
    with pytest.raises(ValueError, match="source"):
        usage.record_many(settings, [], "mail")


def test_marking_on_demand_twice_changes_nothing(on_demand: str) -> None:
    assert not usage.mark_on_demand(on_demand)
    assert usage.mark_on_demand(on_demand, False)
