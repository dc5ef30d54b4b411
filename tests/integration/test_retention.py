"""Retention: what a prune removes (in batches, to the second), and when the job consumer runs it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from flask import Flask

from isvserver import create_app, db
from isvserver.db import connected
from isvserver.jobs.retention import PRUNE_MINUTE, prune
from isvserver.models import CallLog, RejectedCallCount, utcnow
from isvserver.settings import load_settings

from support.harness import FixedClock

NOW = datetime(2026, 3, 10, 12, 0, 0)
NOW_MINUTE = int((NOW - datetime(1970, 1, 1)).total_seconds() // 60)


@pytest.fixture
def ten_day_app(env: dict[str, str], clock: FixedClock) -> Iterator[Flask]:
    """The app with ISV_LOG_RETENTION_DAYS=10."""
    application = create_app(load_settings({**env, "ISV_LOG_RETENTION_DAYS": "10"}), clock=clock)
    yield application
    db.close_all()


def add_calls(*received: datetime) -> None:
    """One callback-log row per moment, each named by its moment."""
    with connected():
        for moment in received:
            CallLog.create(
                request_id=moment.strftime("%Y%m%d%H%M%S"),
                received_at=moment,
                interface="koogallery",
                verdict="verified",
                result_code="000000",
                latency_ms=1.0,
            )


def kept_calls() -> list[str]:
    with connected():
        return [row.request_id for row in CallLog.select().order_by(CallLog.id)]


def add_counts(*minutes: int) -> None:
    with connected():
        for minute in minutes:
            RejectedCallCount.create(source_address="198.51.100.1", minute=minute, calls=3)


def kept_counts() -> list[int]:
    with connected():
        return [row.minute for row in RejectedCallCount.select().order_by(RejectedCallCount.minute)]


@pytest.mark.usefixtures("app")
@pytest.mark.parametrize("batch", [1, 2, 3, 7, 8])
def test_a_prune_over_several_batches_removes_every_old_row_and_no_new_one(batch: int) -> None:
    old = [NOW - timedelta(days=30, minutes=n + 1) for n in range(7)]
    new = [NOW - timedelta(days=29, hours=23), NOW]
    add_calls(old[0], new[0], *old[1:4], new[1], *old[4:])
    pruned = prune(30, now=NOW, batch=batch)
    assert pruned.calls == 7
    assert kept_calls() == [moment.strftime("%Y%m%d%H%M%S") for moment in new]
    assert pruned.before == NOW - timedelta(days=30)
    assert prune(30, now=NOW, batch=batch).calls == 0


@pytest.mark.usefixtures("app")
def test_a_row_received_at_the_cutoff_itself_is_kept() -> None:
    cutoff = NOW - timedelta(days=5)
    add_calls(cutoff - timedelta(seconds=1), cutoff, cutoff + timedelta(seconds=1))
    assert prune(5, now=NOW).calls == 1
    assert kept_calls() == [m.strftime("%Y%m%d%H%M%S") for m in (cutoff, cutoff + timedelta(seconds=1))]


@pytest.mark.usefixtures("app")
def test_rejection_counts_go_by_the_minute_of_the_cutoff() -> None:
    cutoff_minute = NOW_MINUTE - 5 * 24 * 60
    add_counts(cutoff_minute - 2, cutoff_minute - 1, cutoff_minute, cutoff_minute + 1, NOW_MINUTE)
    pruned = prune(5, now=NOW)
    assert (pruned.calls, pruned.counts) == (0, 2)
    assert kept_counts() == [cutoff_minute, cutoff_minute + 1, NOW_MINUTE]


@pytest.mark.usefixtures("app")
def test_without_a_moment_a_prune_counts_back_from_now() -> None:
    now = utcnow()
    add_calls(now - timedelta(days=3, minutes=1), now - timedelta(days=2, hours=23))
    pruned = prune(3)
    assert pruned.calls == 1 and len(kept_calls()) == 1
    assert abs(pruned.before - (now - timedelta(days=3))) < timedelta(minutes=1)


def every_minute_of(day: datetime) -> list[datetime]:
    return [day + timedelta(minutes=n) for n in range(24 * 60)]


def test_the_consumer_prunes_once_an_hour_at_minute_7(
    ten_day_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer's scheduler asks every minute which periodic tasks are due: retention is due at
    minute 7 of every hour and never otherwise; run, it prunes with ISV_LOG_RETENTION_DAYS and says so."""
    huey = ten_day_app.extensions["isvserver"].jobs.huey
    due = [
        moment
        for moment in every_minute_of(datetime(2026, 3, 10))
        if any(task.name == "retention" for task in huey.read_periodic(moment))
    ]
    assert [(m.hour, m.minute) for m in due] == [(hour, PRUNE_MINUTE) for hour in range(24)]

    now = utcnow()
    old_minute = int((now - datetime(1970, 1, 1)).total_seconds() // 60) - 10 * 24 * 60 - 5
    (task,) = [t for t in huey.read_periodic(due[0]) if t.name == "retention"]
    with caplog.at_level(logging.INFO, logger="isvserver.jobs"):
        add_calls(now - timedelta(days=10, minutes=5), now - timedelta(days=9))
        task.execute()
        add_counts(old_minute)
        task.execute()
        add_calls(now - timedelta(days=11))
        add_counts(old_minute - 1)
        task.execute()
        task.execute()  # nothing left: nothing said
    assert len(kept_calls()) == 1 and kept_counts() == []
    lines = [r.getMessage() for r in caplog.records if r.name == "isvserver.jobs"]
    assert lines == [
        "retention: pruned 1 calls and 0 rejection counts older than 10 days",
        "retention: pruned 0 calls and 1 rejection counts older than 10 days",
        "retention: pruned 1 calls and 1 rejection counts older than 10 days",
    ]


@pytest.mark.usefixtures("app")
def test_no_transaction_of_a_prune_deletes_more_than_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short transactions: a big prune never holds the write lock for more than `batch` rows."""
    add_calls(*(NOW - timedelta(days=31, minutes=n) for n in range(7)))
    deleted: list[int] = []
    execute = db.database.obj.execute_sql

    def counting(sql: str, *args: object, **kwargs: object) -> object:
        cursor = execute(sql, *args, **kwargs)
        if sql.lstrip().upper().startswith("DELETE") and "callback_log" in sql:
            deleted.append(cursor.rowcount)
        return cursor

    monkeypatch.setattr(db.database.obj, "execute_sql", counting)
    assert prune(30, now=NOW, batch=3).calls == 7
    assert deleted == [3, 3, 1]
