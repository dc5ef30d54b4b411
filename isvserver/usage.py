"""The usage ledger (pay-per-use): records the product reports for its on-demand instances.

A record's identity is the product's `meteringSn`, fixed before anything is sent: the same record again
is a duplicate (accepted, nothing stored), the same `meteringSn` with other content a conflict (refused,
naming what differs). A record is refused, with its reason, for an unknown, released or not-on-demand
instance, or when it ended before the instance's marketplace accepts. The accepted records of one call are
stored in one transaction: a crash stores all of them or none. Pushing them is `isvserver.usage_push`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from peewee import IntegrityError, fn

from isvserver.adapters import AdapterError, load
from isvserver.db import connected, database
from isvserver.models import Instance, UsageRecord, utcnow

if TYPE_CHECKING:
    from isvserver.settings import Settings

MAX_RECORDS = 1000  # per call (POST /v1/usage, one CSV chunk): the marketplace's batch limit too
MAX_VALUE = Decimal("1e15")  # the marketplace takes usage_value as ≤ 20 characters
MAX_FUTURE = timedelta(minutes=5)  # an end time ahead of our clock by more than this is refused
SN = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no space: it travels in URLs and CSV files
ID = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,64}")  # what an instance id is everywhere
COMPACT_TIME = re.compile(r"(\d{8})T(\d{6})Z")
SOURCES = ("http", "python", "cli", "csv")


class State(StrEnum):
    """Where a record is on its way to the marketplace."""

    PENDING = "pending"  # stored, not taken by the marketplace yet
    PUSHED = "pushed"  # an upload holding it was taken (never pushed again but by hand)
    REFUSED = "refused"  # the marketplace's answer refused it (code and message stored)
    EXPIRED = "expired"  # it left the marketplace's window before an upload was taken


class Status(StrEnum):
    """What became of one reported record."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


class Reason(StrEnum):
    """Why a record was refused (its `code` in replies; the message says more)."""

    INVALID = "invalid"
    UNKNOWN_INSTANCE = "unknown_instance"
    RELEASED = "instance_released"
    NOT_ON_DEMAND = "not_on_demand"
    NOT_METERED = "marketplace_takes_no_usage"
    TOO_OLD = "too_old"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class UploadAnswer:
    """What a marketplace answered to one upload."""

    taken: bool  # the upload was taken: its records are pushed (but those in `refused`)
    http_status: int | None = None
    code: str | None = None
    message: str | None = None
    # Per-record problems when the answer carries them: meteringSn → (code, message).
    refused: Mapping[str, tuple[str, str]] = field(default_factory=dict)


class Sender(Protocol):
    """A marketplace's side of the push: the body of a batch, and one upload of it."""

    batch_size: int

    def body(self, records: Sequence[UsageRecord]) -> bytes:
        """The exact upload bytes of `records`: only from what the ledger holds (no "now")."""
        ...

    def send(self, body: bytes) -> UploadAnswer:
        """Upload `body` once; raise OSError when the marketplace cannot be reached."""
        ...


@dataclass(frozen=True)
class Metering:
    """How a marketplace takes usage records (an adapter's `metering`)."""

    max_age: Callable[[Settings], timedelta]  # a record that ended longer ago is refused or expired
    sender: Callable[[Settings], Sender]


@dataclass(frozen=True)
class Report:
    """One record as reported, before it is checked (times as received, value as received)."""

    instance_id: Any
    metering_sn: Any
    begin_time: Any
    end_time: Any
    value: Any
    related_instance_id: Any = None


@dataclass(frozen=True)
class Outcome:
    """What became of one reported record: accepted, duplicate, or refused with a code and a message."""

    metering_sn: str | None
    status: Status
    code: Reason | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The record's line in a reply."""
        out: dict[str, Any] = {"meteringSn": self.metering_sn, "status": self.status.value}
        if self.code is not None:
            out.update(code=self.code.value, reason=self.reason)
        return out


class Refused(Exception):
    """One record cannot be taken; `code` and the message say why."""

    def __init__(self, code: Reason, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Checked:
    """A record whose fields are valid (times naive UTC, whole seconds)."""

    instance_id: str
    metering_sn: str
    begin_at: datetime
    end_at: datetime
    value: Decimal
    related_instance_id: str | None


# --- parsing ------------------------------------------------------------------------------------------


def parse_time(value: Any, name: str) -> datetime:
    """ISO-8601 (an offset or Z; none means UTC) or yyyyMMdd'T'HHmmss'Z', as naive UTC whole seconds."""
    if not isinstance(value, str) or not value.isascii() or len(value) > 40:
        raise Refused(Reason.INVALID, f"{name} must be an ISO-8601 time or yyyyMMdd'T'HHmmss'Z'")
    compact = COMPACT_TIME.fullmatch(value)
    try:
        if compact:
            moment = datetime.strptime(compact.group(1) + compact.group(2), "%Y%m%d%H%M%S")
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(Reason.INVALID, f"{name} is not an ISO-8601 time or yyyyMMdd'T'HHmmss'Z'") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    if moment.microsecond:
        raise Refused(Reason.INVALID, f"{name} must be whole seconds (the marketplace takes no fractions)")
    return moment


def parse_value(value: Any) -> Decimal:
    """A usage value: a number or a decimal string, > 0, at most 4 decimals, below 10^15."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str, float)):
        raise Refused(Reason.INVALID, "value must be a number or a decimal string")
    if isinstance(value, float):  # only from a caller in Python: its decimal text is what was meant
        value = repr(value)
    if isinstance(value, str) and (len(value) > 40 or not re.fullmatch(r"\s*[0-9.eE+-]+\s*", value)):
        raise Refused(Reason.INVALID, "value must be a decimal number")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise Refused(Reason.INVALID, "value must be a decimal number") from None
    if not number.is_finite() or number <= 0:
        raise Refused(Reason.INVALID, "value must be greater than 0")
    if number >= MAX_VALUE:
        raise Refused(Reason.INVALID, "value must be below 10^15")
    if number != number.quantize(Decimal("0.0001")):
        raise Refused(Reason.INVALID, "value may have at most 4 decimals")
    return number.quantize(Decimal("0.0001")).normalize()


def _text(value: Any, name: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Refused(Reason.INVALID, f"{name} must be {what}")
    return value


def check(report: Report, now: datetime) -> Checked:
    """The record's fields checked (Refused with INVALID naming the first bad field)."""
    metering_sn = _text(report.metering_sn, "meteringSn", SN, "1 to 64 printable ASCII characters, no space")
    instance_id = _text(report.instance_id, "instanceId", ID, "1 to 64 letters, digits, '.', '_' or '-'")
    related = report.related_instance_id
    if related is not None:
        related = _text(related, "relatedInstanceId", ID, "1 to 64 letters, digits, '.', '_' or '-'")
    begin_at = parse_time(report.begin_time, "beginTime")
    end_at = parse_time(report.end_time, "endTime")
    if end_at <= begin_at:
        raise Refused(Reason.INVALID, "endTime must be after beginTime")
    if end_at > now + MAX_FUTURE:
        raise Refused(Reason.INVALID, "endTime is in the future")
    value = parse_value(report.value)
    return Checked(instance_id, metering_sn, begin_at, end_at, value, related)


# --- the ledger ---------------------------------------------------------------------------------------


def metering_of(marketplace: str) -> Metering | None:
    """The marketplace adapter's metering, or None when it takes no usage records."""
    try:
        return load(marketplace).metering
    except AdapterError:
        return None


def _differences(row: UsageRecord, record: Checked, instance_id: str) -> list[str]:
    pairs = (
        ("instanceId", instance_id, record.instance_id),
        ("beginTime", row.begin_at, record.begin_at),
        ("endTime", row.end_at, record.end_at),
        ("value", row.usage_value, record.value),
        ("relatedInstanceId", row.related_instance_id, record.related_instance_id),
    )
    return [name for name, stored, sent in pairs if stored != sent]


def _refusal(instance: Instance | None, record: Checked, now: datetime, settings: Settings) -> Refused | None:
    if instance is None:
        return Refused(Reason.UNKNOWN_INSTANCE, f"no instance {record.instance_id}")
    if instance.state == "released":
        return Refused(Reason.RELEASED, f"instance {record.instance_id} was released")
    if not instance.on_demand:
        return Refused(Reason.NOT_ON_DEMAND, f"instance {record.instance_id} is not on-demand")
    metering = metering_of(instance.marketplace)
    if metering is None:
        return Refused(Reason.NOT_METERED, f"marketplace {instance.marketplace} takes no usage records")
    max_age = metering.max_age(settings)
    if record.end_at < now - max_age:
        hours = max_age.total_seconds() / 3600
        return Refused(
            Reason.TOO_OLD, f"ended before {instance.marketplace} accepts records (within {hours:g} h)"
        )
    return None


def record_many(
    settings: Settings,
    reports: Sequence[Report],
    source: str,
    source_name: str | None = None,
    now: datetime | None = None,
) -> list[Outcome]:
    """Check and store `reports` (at most MAX_RECORDS): one outcome each, in order; the accepted ones
    are stored in one transaction."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    if len(reports) > MAX_RECORDS:
        raise ValueError(f"at most {MAX_RECORDS} records at once")
    now = now or utcnow()
    outcomes: list[Outcome | None] = [None] * len(reports)
    checked: dict[int, Checked] = {}
    for index, report in enumerate(reports):
        sn = report.metering_sn if isinstance(report.metering_sn, str) else None
        try:
            checked[index] = check(report, now)
        except Refused as exc:
            outcomes[index] = Outcome(sn, Status.REFUSED, exc.code, str(exc))
    with connected(), database.atomic():
        instances = _instances({c.instance_id for c in checked.values()})
        stored = _stored({c.metering_sn for c in checked.values()})
        batch: dict[str, Checked] = {}
        for index, record in checked.items():
            outcomes[index] = _decide(record, instances, stored, batch, now, settings)
        _insert(batch, instances, source, source_name, now)
    return [outcome for outcome in outcomes if outcome is not None]


def _decide(
    record: Checked,
    instances: dict[str, Instance],
    stored: dict[str, UsageRecord],
    batch: dict[str, Checked],
    now: datetime,
    settings: Settings,
) -> Outcome:
    """Accepted (added to `batch`), duplicate or refused: one record against the ledger and the batch."""
    sn = record.metering_sn
    earlier = stored.get(sn)
    if earlier is not None:
        return _same_or_conflict(record, _differences(earlier, record, earlier.instance.instance_id))
    if sn in batch:
        other = batch[sn]
        same = [n for n, a, b in _fields(other, record) if a != b]
        return _same_or_conflict(record, same)
    refusal = _refusal(instances.get(record.instance_id), record, now, settings)
    if refusal is not None:
        return Outcome(sn, Status.REFUSED, refusal.code, str(refusal))
    batch[sn] = record
    return Outcome(sn, Status.ACCEPTED)


def _fields(a: Checked, b: Checked) -> Iterable[tuple[str, Any, Any]]:
    yield "instanceId", a.instance_id, b.instance_id
    yield "beginTime", a.begin_at, b.begin_at
    yield "endTime", a.end_at, b.end_at
    yield "value", a.value, b.value
    yield "relatedInstanceId", a.related_instance_id, b.related_instance_id


def _same_or_conflict(record: Checked, differences: list[str]) -> Outcome:
    if not differences:
        return Outcome(record.metering_sn, Status.DUPLICATE)
    return Outcome(
        record.metering_sn,
        Status.REFUSED,
        Reason.CONFLICT,
        f"meteringSn {record.metering_sn} is already recorded with another {', '.join(differences)}",
    )


def _instances(ids: set[str]) -> dict[str, Instance]:
    if not ids:
        return {}
    return {row.instance_id: row for row in Instance.select().where(Instance.instance_id.in_(list(ids)))}


def _stored(sns: set[str]) -> dict[str, UsageRecord]:
    if not sns:
        return {}
    query = (
        UsageRecord.select(UsageRecord, Instance).join(Instance).where(UsageRecord.metering_sn.in_(list(sns)))
    )
    return {row.metering_sn: row for row in query}


def _insert(
    batch: dict[str, Checked],
    instances: dict[str, Instance],
    source: str,
    source_name: str | None,
    now: datetime,
) -> None:
    """INSERT the accepted records (a concurrent call storing the same meteringSn first makes the whole
    transaction fail and the caller answer an error: nothing half-stored)."""
    rows = [
        {
            UsageRecord.instance: instances[r.instance_id].id,
            UsageRecord.marketplace: instances[r.instance_id].marketplace,
            UsageRecord.metering_sn: r.metering_sn,
            UsageRecord.begin_at: r.begin_at,
            UsageRecord.end_at: r.end_at,
            UsageRecord.recorded_at: now,
            UsageRecord.usage_value: r.value,
            UsageRecord.related_instance_id: r.related_instance_id,
            UsageRecord.source: source,
            UsageRecord.source_name: source_name,
            UsageRecord.state: State.PENDING.value,
            UsageRecord.updated_at: now,
        }
        for r in batch.values()
    ]
    for start in range(0, len(rows), 200):  # SQLite's limit of bound parameters per statement
        UsageRecord.insert_many(rows[start : start + 200]).execute()


def record(
    instance_id: str,
    metering_sn: str,
    begin_time: datetime | str,
    end_time: datetime | str,
    value: Decimal | int | str,
    related_instance_id: str | None = None,
    settings: Settings | None = None,
) -> Outcome:
    """Record one usage record from Python (a `python:` provisioner): accepted, duplicate or refused."""

    def text(moment: datetime | str) -> str:
        if isinstance(moment, datetime):
            aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return aware.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return moment

    if settings is None:
        settings = _current_settings()
    report = Report(instance_id, metering_sn, text(begin_time), text(end_time), value, related_instance_id)
    return record_safely(settings, [report], "python")[0]


def record_safely(
    settings: Settings, reports: Sequence[Report], source: str, source_name: str | None = None
) -> list[Outcome]:
    """record_many, once more when a concurrent call stored one of the same meteringSns first."""
    try:
        return record_many(settings, reports, source, source_name)
    except IntegrityError:
        return record_many(settings, reports, source, source_name)


def _current_settings() -> Settings:
    from flask import current_app, has_app_context

    from isvserver.settings import load_settings

    if has_app_context() and "isvserver" in current_app.extensions:
        return current_app.extensions["isvserver"].settings
    return load_settings()


def mark_on_demand(instance_id: str, on_demand: bool = True) -> bool:
    """Mark an instance pay-per-use (or not); True when it changed."""
    with connected(), database.atomic():
        changed = (
            Instance.update(on_demand=on_demand, updated_at=utcnow())
            .where((Instance.instance_id == instance_id) & (Instance.on_demand != on_demand))
            .execute()
        )
    return changed == 1


# --- reads --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latest:
    """An instance's latest usage: the value of its record that ended last, and when."""

    value: Decimal
    end_at: datetime
    related_instance_id: str | None = None  # the package's instance, for package products


def latest(instance_refs: Sequence[int]) -> dict[int, Latest]:
    """The latest record (the one that ended last; of those, the last stored) of each of these instances
    (by row id) that has one, refused ones aside: one query on the ledger alone."""
    if not instance_refs:
        return {}
    refs = list(instance_refs)
    last = (
        UsageRecord.select(UsageRecord.instance, fn.MAX(UsageRecord.end_at).alias("end_at"))
        .where(UsageRecord.instance.in_(refs) & (UsageRecord.state != State.REFUSED.value))
        .group_by(UsageRecord.instance)
    )
    rows = (
        UsageRecord.select(
            UsageRecord.instance, UsageRecord.usage_value, UsageRecord.end_at, UsageRecord.related_instance_id
        )
        .join(last, on=(UsageRecord.instance == last.c.instance_ref) & (UsageRecord.end_at == last.c.end_at))
        .where(UsageRecord.state != State.REFUSED.value)
        .order_by(UsageRecord.id)
        .tuples()
    )
    return {ref: Latest(Decimal(value), end_at, related) for ref, value, end_at, related in rows}


def counts() -> dict[tuple[str, str], int]:
    """Records by (marketplace, state)."""
    query = (
        UsageRecord.select(UsageRecord.marketplace, UsageRecord.state, fn.COUNT(UsageRecord.id))
        .group_by(UsageRecord.marketplace, UsageRecord.state)
        .tuples()
    )
    return {(marketplace, state): count for marketplace, state, count in query}


def refused_by_code() -> dict[tuple[str, str], int]:
    """Records the marketplace refused, by (marketplace, code)."""
    query = (
        UsageRecord.select(UsageRecord.marketplace, UsageRecord.result_code, fn.COUNT(UsageRecord.id))
        .where(UsageRecord.state == State.REFUSED.value)
        .group_by(UsageRecord.marketplace, UsageRecord.result_code)
        .tuples()
    )
    return {(marketplace, code or ""): count for marketplace, code, count in query}


def oldest_pending(now: datetime | None = None) -> dict[str, float]:
    """Seconds since the oldest pending record of each marketplace was stored."""
    now = now or utcnow()
    query = (
        UsageRecord.select(UsageRecord.marketplace, fn.MIN(UsageRecord.recorded_at))
        .where(UsageRecord.state == State.PENDING.value)
        .group_by(UsageRecord.marketplace)
        .tuples()
    )
    return {marketplace: max(0.0, (now - oldest).total_seconds()) for marketplace, oldest in query if oldest}
