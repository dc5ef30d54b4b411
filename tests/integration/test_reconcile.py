"""The expiry guard (`isvserver reconcile`, its periodic run and its metric) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from click.testing import Result
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from isvserver import create_app, db, lifecycle
from isvserver.cli import main
from isvserver.jobs.reconcile import Overdue, auto_freeze, find_overdue, periodic
from isvserver.models import Delivery, Instance, InstanceEvent, utcnow
from isvserver.settings import load_settings

from support.cli import invoke_cli

EXPIRED = ["exp-old", "exp-new"]  # most overdue first
FROZEN_TOO_LONG = ["frozen-old", "frozen-no-event"]
NOT_OVERDUE = ["not-yet", "no-expiry", "released", "frozen-recent", "provisioning"]


def add_instance(
    instance_id: str,
    state: str,
    now: datetime,
    expires_in_days: float | None = None,
    updated_days_ago: float = 0,
    frozen_days_ago: tuple[float, ...] = (),
) -> None:
    """An instance row as the lifecycle leaves it, with `frozen` events that many days ago."""
    with db.connected():
        instance = Instance.create(
            instance_id=instance_id,
            marketplace="koogallery",
            creation_key=f"order:{instance_id}",
            order_id=f"ORD-{instance_id}",
            order_line_id=f"ORD-{instance_id}-000001",
            business_id=f"biz-{instance_id}",
            state=state,
            expire_at=None if expires_in_days is None else now + timedelta(days=expires_in_days),
            created_at=now - timedelta(days=60),
            updated_at=now - timedelta(days=updated_days_ago),
            released_at=now - timedelta(days=updated_days_ago) if state == "released" else None,
        )
        for days in frozen_days_ago:
            InstanceEvent.create(
                instance=instance,
                kind="frozen",
                from_state="active",
                to_state="frozen",
                created_at=now - timedelta(days=days),
            )


@pytest.fixture
def fleet(app: Flask) -> datetime:
    """Instances overdue and not, on the app's database; returns the time they were made relative to."""
    now = utcnow()
    add_instance("exp-old", "active", now, expires_in_days=-10, updated_days_ago=40)
    add_instance("exp-new", "active", now, expires_in_days=-2, updated_days_ago=40)
    add_instance("not-yet", "active", now, expires_in_days=5, updated_days_ago=40)
    add_instance("no-expiry", "active", now, updated_days_ago=40)
    add_instance("provisioning", "provisioning", now, expires_in_days=-5)
    add_instance("released", "released", now, expires_in_days=-30, updated_days_ago=20, frozen_days_ago=(40,))
    # Renewed while frozen a day ago: the freeze still began with its event 20 days ago.
    add_instance("frozen-old", "frozen", now, expires_in_days=30, updated_days_ago=1, frozen_days_ago=(20,))
    # Frozen 40 days ago, unfrozen, frozen again 3 days ago: this freeze is 3 days old.
    add_instance(
        "frozen-recent", "frozen", now, expires_in_days=-3, updated_days_ago=3, frozen_days_ago=(40, 3)
    )
    # No frozen event (frozen before events were kept): the last update tells when.
    add_instance("frozen-no-event", "frozen", now, expires_in_days=-20, updated_days_ago=17)
    return now


def run_cli(env: dict[str, str], *args: str) -> Result:
    """`isvserver ARGS` in-process with exactly `env` as its ISV_* settings; the test binding is kept."""
    result = invoke_cli(env, main, *args)
    assert result.exit_code == 0, result.output
    return result


def sections(output: str) -> list[tuple[str, list[str]]]:
    """The printed blocks: (title, instance ids of its rows) for each list."""
    found = []
    for block in output.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith("frozen now:")]
        if lines[0].startswith("totals:"):
            continue
        rows = [] if lines[1:] == ["none"] else [re.split(r"\s{2,}", line)[0] for line in lines[2:]]
        found.append((lines[0], rows))
    return found


def states() -> dict[str, str]:
    with db.connected():
        return dict(Instance.select(Instance.instance_id, Instance.state).tuples())


def frozen_events() -> dict[str, int]:
    """How many `frozen` events each instance has."""
    with db.connected():
        query = (
            InstanceEvent.select(Instance.instance_id, InstanceEvent.id)
            .join(Instance)
            .where(InstanceEvent.kind == "frozen")
            .tuples()
        )
        counts: dict[str, int] = {}
        for instance_id, _ in query:
            counts[instance_id] = counts.get(instance_id, 0) + 1
        return counts


@pytest.fixture
def reconcile_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog attached to the `isvserver` logger too (the app sets it not to propagate)."""
    logger = logging.getLogger("isvserver")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="isvserver")
    yield caplog
    logger.removeHandler(caplog.handler)


def ids(rows: list[Overdue]) -> list[str]:
    return [row.instance_id for row in rows]


# --- finding ------------------------------------------------------------------------------------------


def test_find_overdue_lists_exactly_the_overdue_most_overdue_first(fleet: datetime) -> None:
    with db.connected():
        expired, frozen = find_overdue(fleet, 15)
    assert ids(expired) == EXPIRED
    assert ids(frozen) == FROZEN_TOO_LONG
    assert [(r.state, r.frozen_since, r.days_overdue) for r in expired] == [
        ("active", None, 10.0),
        ("active", None, 2.0),
    ]
    assert expired[0].order_id == "ORD-exp-old"
    assert expired[0].expire_at == fleet - timedelta(days=10)
    assert [(r.state, r.frozen_since, r.days_overdue) for r in frozen] == [
        ("frozen", fleet - timedelta(days=20), 5.0),
        ("frozen", fleet - timedelta(days=17), 2.0),
    ]


def test_a_shorter_freeze_period_lists_the_recent_freeze_too(fleet: datetime) -> None:
    with db.connected():
        _, frozen = find_overdue(fleet, 2)
    assert ids(frozen) == ["frozen-old", "frozen-no-event", "frozen-recent"]


def test_cli_prints_both_lists_and_totals(fleet: datetime, env: dict[str, str]) -> None:
    output = run_cli(env, "reconcile").output
    assert sections(output) == [
        ("expired, never frozen (2)", EXPIRED),
        ("frozen more than 15 days, never released (2)", FROZEN_TOO_LONG),
    ]
    header = output.splitlines()[1].split("  ")
    assert [h.strip() for h in header if h.strip()] == [
        "instance_id",
        "order_id",
        "state",
        "expiry",
        "frozen since",
        "days overdue",
    ]
    first = re.split(r"\s{2,}", output.splitlines()[2])
    assert first[:3] == ["exp-old", "ORD-exp-old", "active"]
    assert first[4:] == ["-", "10.0"]
    assert output.strip().splitlines()[-1] == (
        "totals: expired_not_frozen=2 frozen_not_released=2 auto_frozen=0"
    )
    assert states()["exp-old"] == "active"  # listing changes nothing


def test_cli_freeze_days_option(fleet: datetime, env: dict[str, str]) -> None:
    output = run_cli(env, "reconcile", "--freeze-days", "2").output
    assert sections(output)[1] == (
        "frozen more than 2 days, never released (3)",
        ["frozen-old", "frozen-no-event", "frozen-recent"],
    )


def test_cli_json(fleet: datetime, env: dict[str, str]) -> None:
    document = json.loads(run_cli(env, "reconcile", "--json").output)
    assert [r["instance_id"] for r in document["expired_not_frozen"]] == EXPIRED
    assert [r["instance_id"] for r in document["frozen_not_released"]] == FROZEN_TOO_LONG
    assert document["totals"] == {"expired_not_frozen": 2, "frozen_not_released": 2, "auto_frozen": 0}
    assert document["freeze_days"] == 15
    first = document["expired_not_frozen"][0]
    assert first["order_id"] == "ORD-exp-old"
    assert first["state"] == "active"
    assert first["frozen_since"] is None
    assert first["days_overdue"] == 10.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["expire_at"])
    frozen = document["frozen_not_released"][0]
    assert frozen["frozen_since"] == (fleet - timedelta(days=20)).isoformat(timespec="milliseconds") + "Z"
    assert frozen["days_overdue"] == 5.0


# --- acting -------------------------------------------------------------------------------------------


def test_cli_freeze_freezes_exactly_the_expired_once(fleet: datetime, env: dict[str, str]) -> None:
    before_states, before_events = states(), frozen_events()
    first = run_cli(env, "reconcile", "--freeze").output
    assert sections(first)[0] == ("expired, never frozen (2)", EXPIRED)  # as found
    assert "frozen now: 2" in first.splitlines()
    totals = first.strip().splitlines()[-1]
    assert totals == "totals: expired_not_frozen=2 frozen_not_released=2 auto_frozen=2"
    after_states, after_events = states(), frozen_events()
    assert {i: s for i, s in after_states.items() if s != before_states[i]} == {
        "exp-old": "frozen",
        "exp-new": "frozen",
    }
    assert {i: n for i, n in after_events.items() if n != before_events.get(i, 0)} == {
        "exp-old": 1,
        "exp-new": 1,
    }
    with db.connected():
        event = InstanceEvent.select().join(Instance).where(Instance.instance_id == "exp-old").get()
        told = list(Delivery.select(Instance.instance_id, Delivery.event_type).join(Instance).tuples())
    assert (event.kind, event.from_state, event.to_state) == ("frozen", "active", "frozen")
    assert sorted(told) == [("exp-new", "instance.frozen"), ("exp-old", "instance.frozen")]  # product told

    second = json.loads(run_cli(env, "reconcile", "--freeze", "--json").output)  # nothing left to freeze
    assert second["expired_not_frozen"] == []
    assert second["totals"] == {"expired_not_frozen": 0, "frozen_not_released": 2, "auto_frozen": 0}
    assert frozen_events() == after_events


def test_periodic_run_without_auto_freeze_changes_nothing(
    fleet: datetime, env: dict[str, str], reconcile_logs: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(env)
    assert settings.auto_freeze is False  # the default
    before_states, before_events = states(), frozen_events()
    report = periodic(settings)
    assert ids(report.expired_not_frozen) == EXPIRED
    assert ids(report.frozen_not_released) == FROZEN_TOO_LONG
    assert report.auto_frozen == 0
    assert (states(), frozen_events()) == (before_states, before_events)
    lines = [r.getMessage() for r in reconcile_logs.records if r.name == "isvserver.reconcile"]
    assert lines == ["reconcile expired_not_frozen=2 frozen_not_released=2 auto_frozen=0"]


def test_periodic_run_with_auto_freeze_freezes_the_expired(
    fleet: datetime, env: dict[str, str], reconcile_logs: pytest.LogCaptureFixture
) -> None:
    report = periodic(load_settings({**env, "ISV_AUTO_FREEZE": "1"}))
    assert report.auto_frozen == 2
    assert [states()[i] for i in EXPIRED] == ["frozen", "frozen"]
    assert [states()[i] for i in ("not-yet", "no-expiry", "provisioning")] == [
        "active",
        "active",
        "provisioning",
    ]
    lines = [r.getMessage() for r in reconcile_logs.records if r.name == "isvserver.reconcile"]
    assert lines == ["reconcile expired_not_frozen=2 frozen_not_released=2 auto_frozen=2"]


def test_auto_freeze_skips_instances_changed_since_they_were_listed(fleet: datetime) -> None:
    with db.connected():
        expired, _ = find_overdue(fleet, 15)
        Instance.update(expire_at=fleet + timedelta(days=365)).where(
            Instance.instance_id == "exp-old"
        ).execute()  # renewed meanwhile
        lifecycle.release("exp-new")
        gone = Overdue("no-such-instance", "ORD-x", "active", fleet, None, 1.0)
        frozen = auto_freeze([*expired, gone], utcnow(), outbox=False)
    assert frozen == 0
    assert (states()["exp-old"], states()["exp-new"]) == ("active", "released")
    assert "exp-old" not in frozen_events()


# --- the metric ---------------------------------------------------------------------------------------


def overdue_gauge(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
        if sample.name == "isv_instances_overdue"
    }


def test_metric_counts_overdue_instances(fleet: datetime, client, env: dict[str, str]) -> None:
    assert overdue_gauge(client) == {"expired_not_frozen": 2.0, "frozen_not_released": 2.0}
    run_cli(env, "reconcile", "--freeze")
    assert overdue_gauge(client) == {"expired_not_frozen": 0.0, "frozen_not_released": 2.0}


def test_metric_uses_the_configured_freeze_period(fleet: datetime, env: dict[str, str]) -> None:
    previous = db.database.obj
    client = create_app(load_settings({**env, "ISV_FREEZE_DAYS": "2"})).test_client()  # binds its own
    try:
        assert overdue_gauge(client) == {"expired_not_frozen": 2.0, "frozen_not_released": 3.0}
    finally:
        db.close_all()
        db.database.initialize(previous)


def test_metric_reads_zero_on_an_empty_database(client) -> None:
    assert overdue_gauge(client) == {"expired_not_frozen": 0.0, "frozen_not_released": 0.0}
