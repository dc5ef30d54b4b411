"""Callback-log retention: rows (and rejection counts) older than ISV_LOG_RETENTION_DAYS are pruned.

The only rows isvserver ever deletes. The job consumer prunes once an hour; `isvserver log prune` on demand.
Every minute it also logs the summary lines of the rejected calls that were only counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from isvserver.calllog import summarize_rejected
from isvserver.db import connected, database
from isvserver.models import CallLog, RejectedCallCount, RejectedCallMinute, utcnow

log = logging.getLogger("isvserver.jobs")

BATCH = 5000  # rows per short transaction: a big prune never holds the write lock for long
PRUNE_MINUTE = 7  # the minute of every hour the consumer prunes


@dataclass(frozen=True)
class Pruned:
    """What one prune removed, and the moment before which rows went."""

    calls: int
    counts: int
    before: datetime


def prune(days: int, now: datetime | None = None, batch: int = BATCH) -> Pruned:
    """Delete callback-log rows and rejection counts older than `days` days, in short batches."""
    before = (now or utcnow()) - timedelta(days=days)
    before_minute = int((before - datetime(1970, 1, 1)).total_seconds() // 60)
    calls = counts = 0
    with connected():
        while True:
            with database.atomic():
                ids = [
                    row.id
                    for row in CallLog.select(CallLog.id)
                    .where(CallLog.received_at < before)
                    .order_by(CallLog.id)
                    .limit(batch)
                ]
                if ids:
                    calls += CallLog.delete().where(CallLog.id.in_(ids)).execute()
            if len(ids) < batch:
                break
        with database.atomic():
            counts = RejectedCallCount.delete().where(RejectedCallCount.minute < before_minute).execute()
            RejectedCallMinute.delete().where(RejectedCallMinute.minute < before_minute).execute()
    return Pruned(calls, counts, before)


def register(jobs: Any) -> None:
    """Add the hourly prune to the job consumer's periodic tasks (`jobs` is an isvserver.jobs.Jobs)."""
    days = jobs.settings.log_retention_days

    def prune_call_log() -> None:
        """Prune what is past the retention period."""
        pruned = prune(days)
        if pruned.calls or pruned.counts:
            log.info(
                "retention: pruned %d calls and %d rejection counts older than %d days",
                pruned.calls,
                pruned.counts,
                days,
            )

    jobs.huey.periodic_task(lambda moment: moment.minute == PRUNE_MINUTE, name="retention")(prune_call_log)

    def summarize_rejected_calls() -> None:
        """The summary lines of the rejected calls only counted in the minutes that have ended."""
        summarize_rejected(int(time.time() // 60))

    jobs.huey.periodic_task(lambda moment: True, name="rejected-calls")(summarize_rejected_calls)
