"""Periodic jobs (Jobs.every): a schedule and a lease per job in the database, so that each job runs at
most once at a time across consumers and hosts, and at its interval whichever consumer runs it.

A runner takes the lease with one conditional UPDATE (the job is due and no live runner holds it), renews
it while the job runs, and gives it back with the next run's time. A runner killed mid-run keeps the
lease until it expires; the next consumer to look then takes the job over.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from isvserver.db import database
from isvserver.models import PeriodicJob, utcnow

NAME_LENGTH = 64


def runner_id() -> str:
    """This runner's lease owner: host, pid and a random part (unique across threads and restarts)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:NAME_LENGTH]


@dataclass(frozen=True)
class Schedule:
    """A periodic job's row as one runner reads it."""

    name: str
    next_run_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_success_at: datetime | None
    runs: int
    failures: int
    last_error: str | None


def ensure(name: str, interval_s: float, now: datetime | None = None) -> None:
    """Create the job's row (due at once) unless it exists; a changed interval is stored."""
    now = now or utcnow()
    with database.atomic():
        PeriodicJob.insert(
            name=name, interval_s=interval_s, next_run_at=now, created_at=now
        ).on_conflict_ignore().execute()
        PeriodicJob.update(interval_s=interval_s).where(
            (PeriodicJob.name == name) & (PeriodicJob.interval_s != interval_s)
        ).execute()


def acquire(name: str, owner: str, lease_s: float, now: datetime | None = None) -> bool:
    """Take the job's lease when it is due and no live runner holds it; True when this runner has it."""
    now = now or utcnow()
    with database.atomic():
        taken = (
            PeriodicJob.update(
                lease_owner=owner, lease_until=now + timedelta(seconds=lease_s), last_started_at=now
            )
            .where(
                (PeriodicJob.name == name)
                & (PeriodicJob.next_run_at <= now)
                & (PeriodicJob.lease_until.is_null() | (PeriodicJob.lease_until < now))
            )
            .execute()
        )
    return taken == 1


def renew(name: str, owner: str, lease_s: float, now: datetime | None = None) -> bool:
    """Extend the lease this runner holds; False when it lost it (it expired and another took it)."""
    now = now or utcnow()
    with database.atomic():
        kept = (
            PeriodicJob.update(lease_until=now + timedelta(seconds=lease_s))
            .where((PeriodicJob.name == name) & (PeriodicJob.lease_owner == owner))
            .execute()
        )
    return kept == 1


def finish(
    name: str,
    owner: str,
    started: datetime,
    interval_s: float,
    error: str | None,
    now: datetime | None = None,
) -> bool:
    """Give the lease back and schedule the next run an interval after this one started (at once when
    the run took longer); count the run and its outcome. False when this runner no longer held it."""
    now = now or utcnow()
    next_run = max(started + timedelta(seconds=interval_s), now)
    outcome = (
        {"last_success_at": now, "last_error": None}
        if error is None
        else {"last_error": error[:255], "failures": PeriodicJob.failures + 1}
    )
    with database.atomic():
        done = (
            PeriodicJob.update(
                lease_owner=None,
                lease_until=None,
                next_run_at=next_run,
                last_finished_at=now,
                runs=PeriodicJob.runs + 1,
                **outcome,
            )
            .where((PeriodicJob.name == name) & (PeriodicJob.lease_owner == owner))
            .execute()
        )
    return done == 1


def read(name: str) -> Schedule | None:
    """The job's row, or None before its first look."""
    row = PeriodicJob.get_or_none(PeriodicJob.name == name)
    if row is None:
        return None
    return Schedule(
        row.name,
        row.next_run_at,
        row.lease_owner,
        row.lease_until,
        row.last_success_at,
        row.runs,
        row.failures,
        row.last_error,
    )


def wait_s(schedule: Schedule | None, now: datetime | None = None) -> float:
    """Seconds until the job may be taken: when it is due and its lease, if any, has expired."""
    if schedule is None:
        return 0.0
    now = now or utcnow()
    ready = schedule.next_run_at
    if schedule.lease_until is not None:
        ready = max(ready, schedule.lease_until)
    return max(0.0, (ready - now).total_seconds())


def all_schedules() -> list[Schedule]:
    """Every periodic job's row, by name (for metrics and the CLI)."""
    return [
        Schedule(*row)
        for row in PeriodicJob.select(
            PeriodicJob.name,
            PeriodicJob.next_run_at,
            PeriodicJob.lease_owner,
            PeriodicJob.lease_until,
            PeriodicJob.last_success_at,
            PeriodicJob.runs,
            PeriodicJob.failures,
            PeriodicJob.last_error,
        )
        .order_by(PeriodicJob.name)
        .tuples()
    ]
