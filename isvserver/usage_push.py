"""Pushing the usage ledger to each marketplace: fixed batches, sent again byte for byte until taken.

One pass for a marketplace: records that left its window unsent are marked expired (counted, logged, never
retried); then an upload due for a retry is sent again (the same records, so the same bytes), or a new one
is made of the pending records that end first (those closest to leaving the window). An upload is claimed
under a lease before it is sent and its answer is written back after; a pusher killed in between leaves the
lease to expire and the next pass sends the very same bytes again (the marketplace knows the meteringSns).
A taken upload marks its records pushed, never pushed again; per-record problems in the answer mark those
records refused with the code. A failure backs the upload off; the pass stops there (the marketplace is down).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peewee import fn

from isvserver.db import connected, database, is_postgres
from isvserver.jobs.deliveries import backoff_s
from isvserver.models import Instance, UsageRecord, UsageUpload, utcnow
from isvserver.settings import Settings
from isvserver.usage import Metering, Sender, State, UploadAnswer, metering_of

SENDING, TAKEN, ABANDONED = "sending", "taken", "abandoned"
PUSH_LOCK_CLASS = 18772  # the advisory-lock class of batch claims (one per marketplace)
MAX_MESSAGE = 255

log = logging.getLogger("isvserver.usage")


@dataclass
class Summary:
    """What one pass did for one marketplace."""

    marketplace: str
    uploads: int = 0  # uploads taken
    pushed: int = 0  # records taken
    refused: int = 0  # records the answer refused
    expired: int = 0  # records marked expired
    failed: int = 0  # uploads that failed (backed off)
    dry_run_batches: int = 0


def owner_name() -> str:
    """Who holds a lease: host, process and a random part."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _short(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def expire(marketplace: str, max_age: timedelta, now: datetime) -> int:
    """Mark the pending records outside any upload that ended before the window: how many."""
    with database.atomic():
        count = (
            UsageRecord.update(
                state=State.EXPIRED.value,
                result_msg=f"ended before the marketplace's window ({max_age.total_seconds() / 3600:g} h)",
                updated_at=now,
            )
            .where(
                (UsageRecord.marketplace == marketplace)
                & (UsageRecord.state == State.PENDING.value)
                & UsageRecord.upload.is_null()
                & (UsageRecord.end_at < now - max_age)
            )
            .execute()
        )
    if count:
        log.warning("usage expired marketplace=%s records=%d (never pushed, not retried)", marketplace, count)
    return count


def _take_lease(upload_id: int, owner: str, lease_s: float, now: datetime) -> bool:
    with database.atomic():
        taken = (
            UsageUpload.update(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
            .where(
                (UsageUpload.id == upload_id)
                & (UsageUpload.state == SENDING)
                & (UsageUpload.lease_until.is_null() | (UsageUpload.lease_until < now))
            )
            .execute()
        )
    return taken == 1


def _due_upload(marketplace: str, owner: str, lease_s: float, now: datetime) -> UsageUpload | None:
    """An upload waiting to be sent again, now under this pusher's lease."""
    candidates = (
        UsageUpload.select(UsageUpload.id)
        .where(
            (UsageUpload.marketplace == marketplace)
            & (UsageUpload.state == SENDING)
            & (UsageUpload.next_attempt_at <= now)
            & (UsageUpload.lease_until.is_null() | (UsageUpload.lease_until < now))
        )
        .order_by(UsageUpload.id)
        .limit(5)
        .tuples()
    )
    for (upload_id,) in list(candidates):
        if _take_lease(upload_id, owner, lease_s, now):
            return UsageUpload.get_by_id(upload_id)
    return None


def _claim(
    marketplace: str, batch_size: int, owner: str, lease_s: float, now: datetime
) -> UsageUpload | None:
    """A new upload of the pending records that end first, under this pusher's lease; None when none."""
    with database.atomic():
        if is_postgres():
            database.execute_sql(
                f"SELECT pg_advisory_xact_lock({PUSH_LOCK_CLASS}, hashtext(%s))", (marketplace,)
            )
        ids = [
            row_id
            for (row_id,) in UsageRecord.select(UsageRecord.id)
            .where(
                (UsageRecord.marketplace == marketplace)
                & (UsageRecord.state == State.PENDING.value)
                & UsageRecord.upload.is_null()
            )
            .order_by(UsageRecord.end_at, UsageRecord.id)
            .limit(batch_size)
            .tuples()
        ]
        if not ids:
            return None
        upload = UsageUpload.create(
            marketplace=marketplace,
            state=SENDING,
            records=len(ids),
            next_attempt_at=now,
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_s),
            created_at=now,
        )
        UsageRecord.update(upload=upload.id, updated_at=now).where(UsageRecord.id.in_(ids)).execute()
    return upload


def batch(upload: UsageUpload) -> list[UsageRecord]:
    """The records of an upload, in the order its body lists them."""
    query = (
        UsageRecord.select(UsageRecord, Instance)
        .join(Instance)
        .where(UsageRecord.upload == upload.id)
        .order_by(UsageRecord.id)
    )
    return list(query)


def _abandon_if_expired(upload: UsageUpload, max_age: timedelta, now: datetime) -> int | None:
    """When a record of the upload left the window, give the upload up: those records expired, the
    others pending again (a new upload takes them); how many expired, None when none did."""
    records = batch(upload)
    gone = [r.id for r in records if r.end_at < now - max_age]
    if not gone:
        return None
    with database.atomic():
        UsageUpload.update(
            state=ABANDONED,
            finished_at=now,
            lease_owner=None,
            lease_until=None,
            result_msg=_short(f"{len(gone)} record(s) left the window before the upload was taken"),
        ).where(UsageUpload.id == upload.id).execute()
        UsageRecord.update(
            state=State.EXPIRED.value,
            result_msg=f"ended before the marketplace's window ({max_age.total_seconds() / 3600:g} h)",
            updated_at=now,
        ).where(UsageRecord.id.in_(gone)).execute()
        UsageRecord.update(upload=None, updated_at=now).where(
            (UsageRecord.upload == upload.id) & (UsageRecord.state == State.PENDING.value)
        ).execute()
    log.warning(
        "usage expired marketplace=%s upload=%d records=%d (never taken, not retried)",
        upload.marketplace,
        upload.id,
        len(gone),
    )
    return len(gone)


def _taken(upload: UsageUpload, answer: UploadAnswer, now: datetime) -> tuple[int, int]:
    """Write back a taken upload: its records pushed, those the answer refused refused; (pushed, refused)."""
    with database.atomic():
        UsageUpload.update(
            state=TAKEN,
            attempts=UsageUpload.attempts + 1,
            finished_at=now,
            lease_owner=None,
            lease_until=None,
            http_status=answer.http_status,
            result_code=answer.code,
            result_msg=_short(answer.message or ""),
        ).where(UsageUpload.id == upload.id).execute()
        refused = 0
        for sn, (code, message) in answer.refused.items():
            refused += (
                UsageRecord.update(
                    state=State.REFUSED.value,
                    attempts=UsageRecord.attempts + 1,
                    result_code=code[:32],
                    result_msg=_short(message),
                    updated_at=now,
                )
                .where((UsageRecord.upload == upload.id) & (UsageRecord.metering_sn == sn))
                .execute()
            )
        pushed = (
            UsageRecord.update(
                state=State.PUSHED.value,
                attempts=UsageRecord.attempts + 1,
                result_code=answer.code,
                result_msg=None,
                pushed_at=now,
                updated_at=now,
            )
            .where((UsageRecord.upload == upload.id) & (UsageRecord.state == State.PENDING.value))
            .execute()
        )
    return pushed, refused


def _failed(upload: UsageUpload, answer: UploadAnswer, settings: Settings, now: datetime) -> datetime:
    """Count a failed attempt of the upload; when it is sent again (the same bytes)."""
    attempts = upload.attempts + 1
    delay = backoff_s(attempts, settings.job_retry_base_s, settings.job_retry_max_s)
    retry_at = now + timedelta(seconds=delay)
    reason = _short(answer.message or "no answer")
    with database.atomic():
        UsageUpload.update(
            attempts=attempts,
            next_attempt_at=retry_at,
            lease_owner=None,
            lease_until=None,
            http_status=answer.http_status,
            result_code=answer.code,
            result_msg=reason,
        ).where(UsageUpload.id == upload.id).execute()
        UsageRecord.update(
            attempts=UsageRecord.attempts + 1, result_code=answer.code, result_msg=reason, updated_at=now
        ).where(UsageRecord.upload == upload.id).execute()
    return retry_at


def _send(sender: Sender, upload: UsageUpload, now: datetime) -> UploadAnswer:
    """Build the upload's body from the ledger and send it (the same bytes on every attempt)."""
    body = sender.body(batch(upload))
    digest = hashlib.sha256(body).hexdigest()
    if upload.body_sha256 is None:
        with database.atomic():
            UsageUpload.update(body_sha256=digest, sent_at=now).where(UsageUpload.id == upload.id).execute()
    elif upload.body_sha256 != digest:  # the ledger's rows never change: this cannot happen
        raise RuntimeError(f"usage upload {upload.id}: its body changed between attempts")
    try:
        return sender.send(body)
    except (OSError, http.client.HTTPException) as exc:
        return UploadAnswer(False, message=f"the marketplace cannot be reached: {type(exc).__name__}: {exc}")
    except Exception as exc:  # anything else is not taken either; its text may hold anything: not shown
        log.warning("usage upload %d: the sender raised", upload.id, exc_info=True)
        return UploadAnswer(False, message=f"the upload could not be sent: {type(exc).__name__}")


def push_marketplace(
    settings: Settings,
    marketplace: str,
    metering: Metering,
    now: datetime | None = None,
    max_uploads: int = 1000,
) -> Summary:
    """One pass for one marketplace (see the module's docstring)."""
    sender = metering.sender(settings)
    max_age = metering.max_age(settings)
    summary = Summary(marketplace)
    if settings.usage_push_dry_run:
        return _dry_run(sender, marketplace, summary)
    owner = owner_name()
    lease_s = settings.job_lease_s
    with connected():
        summary.expired += expire(marketplace, max_age, now or utcnow())
        for _ in range(max_uploads):
            moment = now or utcnow()
            upload = _due_upload(marketplace, owner, lease_s, moment)
            if upload is not None:
                expired = _abandon_if_expired(upload, max_age, moment)
                if expired is not None:
                    summary.expired += expired
                    continue
            else:
                upload = _claim(marketplace, sender.batch_size, owner, lease_s, moment)
                if upload is None:
                    break
            answer = _send(sender, upload, moment)
            done_at = now or utcnow()
            if answer.taken:
                pushed, refused = _taken(upload, answer, done_at)
                summary.uploads += 1
                summary.pushed += pushed
                summary.refused += refused
                log.info(
                    "usage upload taken marketplace=%s upload=%d records=%d refused=%d attempt=%d",
                    marketplace, upload.id, pushed + refused, refused, upload.attempts + 1,
                )  # fmt: skip
                continue
            retry_at = _failed(upload, answer, settings, done_at)
            summary.failed += 1
            log.warning(
                "usage upload failed marketplace=%s upload=%d records=%d attempt=%d status=%s code=%s "
                "retry at %s: %s",
                marketplace, upload.id, upload.records, upload.attempts + 1, answer.http_status,
                answer.code, f"{retry_at:%H:%M:%S}", _short(answer.message or ""),
            )  # fmt: skip
            break  # the marketplace is failing: the next pass tries again
    return summary


def _dry_run(sender: Sender, marketplace: str, summary: Summary) -> Summary:
    """Build and log the batches a pass would send, changing nothing."""
    with connected():
        records = list(
            UsageRecord.select(UsageRecord, Instance)
            .join(Instance)
            .where((UsageRecord.marketplace == marketplace) & (UsageRecord.state == State.PENDING.value))
            .order_by(UsageRecord.end_at, UsageRecord.id)
        )
    for start in range(0, len(records), sender.batch_size):
        chunk = sorted(records[start : start + sender.batch_size], key=lambda r: r.id)
        body = sender.body(chunk)
        summary.dry_run_batches += 1
        log.info(
            "usage dry run marketplace=%s batch=%d records=%d first=%s last=%s bytes=%d sha256=%s",
            marketplace, summary.dry_run_batches, len(chunk), chunk[0].metering_sn,
            chunk[-1].metering_sn, len(body), hashlib.sha256(body).hexdigest(),
        )  # fmt: skip
    return summary


def push_all(settings: Settings, now: datetime | None = None) -> list[Summary]:
    """One pass for every enabled marketplace that takes usage records."""
    summaries = []
    for marketplace in settings.marketplaces:
        metering = metering_of(marketplace)
        if metering is not None:
            summaries.append(push_marketplace(settings, marketplace, metering, now))
    return summaries


def repush(metering_sns: Iterable[str], now: datetime | None = None) -> dict[str, str]:
    """Put records back to pending (by hand: one the marketplace's console reports refused, an expired
    one the marketplace agreed to take); meteringSn → what was done."""
    now = now or utcnow()
    done: dict[str, str] = {}
    with connected(), database.atomic():
        for sn in metering_sns:
            row = UsageRecord.get_or_none(UsageRecord.metering_sn == sn)
            if row is None:
                done[sn] = "unknown meteringSn"
            elif row.state == State.PENDING.value:
                done[sn] = "already pending"
            else:
                UsageRecord.update(
                    state=State.PENDING.value,
                    upload=None,
                    result_code=None,
                    result_msg=f"re-pushed by hand (was {row.state})",
                    updated_at=now,
                ).where(UsageRecord.id == row.id).execute()
                done[sn] = f"pending again (was {row.state})"
    return done


def pending_uploads(marketplace: str) -> int:
    """Uploads of a marketplace still waiting to be taken."""
    return (
        UsageUpload.select(fn.COUNT(UsageUpload.id))
        .where((UsageUpload.marketplace == marketplace) & (UsageUpload.state == SENDING))
        .scalar()
    )


JOB_NAME = "usage_push"


def register(jobs: Any, settings: Settings) -> None:
    """Have the job consumer push the ledger every ISV_USAGE_PUSH_INTERVAL_S seconds (when an enabled
    marketplace takes usage records)."""
    if any(metering_of(name) is not None for name in settings.marketplaces):
        jobs.every(JOB_NAME, settings.usage_push_interval_s, lambda runtime: push_all(runtime.settings))
