"""The call log: one row per marketplace call, with ids, verdict, result and latency; no secrets."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import asdict, astuple, dataclass, fields, replace
from datetime import UTC, datetime

from peewee import Database

from isvserver.db import connected, database, ident, is_postgres, names, placeholders, statement
from isvserver.models import CallLog, RejectedCallCount, RejectedCallMinute, utcnow

log = logging.getLogger("isvserver.calls")


@dataclass
class CallRecord:
    """What is known about a call; only ids, never keys, signatures, nonces, passwords or buyer data."""

    request_id: str
    interface: str
    activity: str | None = None
    test_flag: bool = False
    instance_id: str | None = None
    order_id: str | None = None
    order_line_id: str | None = None
    business_id: str | None = None
    verdict: str = "unverified"
    reason: str | None = None
    result_code: str = ""
    result_msg: str | None = None
    latency_ms: float = 0.0
    source_address: str | None = None
    delivery: str = "sent"  # whether the answer was written: sent, not_sent, client_gone


# The longest text each column holds: its max_length, or for a text column the longest instanceId list
# that validates (100 ids of 64 characters and their commas).
TEXT_LIMIT = 6500
_LIMITS = {
    f.name: getattr(CallLog._meta.fields[f.name], "max_length", None) or TEXT_LIMIT
    for f in fields(CallRecord)
}


def _storable_text(value: object, limit: int) -> object:
    """`value` with what no database column can hold (NUL, lone surrogates) escaped, then cut to `limit`."""
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")[:limit]


def _clean(call: CallRecord) -> CallRecord:
    return CallRecord(**{name: _storable_text(value, _LIMITS[name]) for name, value in asdict(call).items()})


def log_line(call: CallRecord) -> None:
    """The call's `isvserver.calls` log line."""
    call = _clean(call)
    log.info(
        "call request_id=%s activity=%s test=%s verdict=%s code=%s ms=%.1f instance=%s order=%s/%s",
        call.request_id,
        call.activity,
        int(call.test_flag),
        call.verdict,
        call.result_code,
        call.latency_ms,
        (call.instance_id or "-")[:200],
        call.order_id or "-",
        call.order_line_id or "-",
    )


def _insert_sql(db: Database) -> str:
    """callback_log's INSERT of every CallRecord field and received_at (built once per database)."""
    columns = [CallLog._meta.fields[name].column_name for name in _STORED]
    sql = (
        f"INSERT INTO {ident(db, CallLog._meta.table_name)} ({names(db, *columns)}) "  # noqa: S608 (names from the model)
        f"VALUES ({placeholders(db, len(columns))})"
    )
    if is_postgres(db):
        sql += f" RETURNING {ident(db, CallLog.id.column_name)}"
    return sql


_STORED = ("received_at", *(f.name for f in fields(CallRecord)))
_CONVERT = tuple(CallLog._meta.fields[name].db_value for name in _STORED)


def store(call: CallRecord) -> int:
    """Insert the call's callback_log row in the open connection (and transaction); errors propagate.

    The statement's text is built once (peewee compiling a 15-column INSERT was a fifth of a call).
    """
    texts = (_storable_text(v, limit) for v, limit in zip(astuple(call), _LIMITS.values(), strict=True))
    values = (utcnow(), *texts)
    cursor = database.execute_sql(
        statement("callback_log.insert", _insert_sql),
        [convert(value) for convert, value in zip(_CONVERT, values, strict=True)],
    )
    if cursor.description:  # RETURNING id (PostgreSQL)
        return int(cursor.fetchone()[0])
    return int(cursor.lastrowid)


def update_result(row_id: int, call: CallRecord) -> None:
    """Rewrite a stored call's result, latency and delivery (what was finally sent, or that nothing was)."""
    call = _clean(call)
    CallLog.update(
        result_code=call.result_code,
        result_msg=call.result_msg,
        latency_ms=call.latency_ms,
        delivery=call.delivery,
    ).where(CallLog.id == row_id).execute()


def record(call: CallRecord, attempts: int = 2) -> int | None:
    """The log line and the row in a transaction of its own (tried twice; a failed write is logged).

    Returns the row's id, or None when it could not be written.
    """
    log_line(call)
    for attempt in range(1, attempts + 1):
        try:
            with connected():
                return store(call)
        except Exception as exc:  # the reply goes out whatever happens to its log row
            if attempt == attempts:
                log.warning("callback log not written request_id=%s: %s", call.request_id, type(exc).__name__)
    return None


# --- rejected calls: what an operator needs, and a bounded number per source and minute ----------

ID_LENGTH = 64  # the longest id any marketplace defines
_ID_TEXT = re.compile(r"[A-Za-z0-9._:,-]+")  # what an id (or a list of ids) is made of


def _id_or_none(value: str | None) -> str | None:
    """An id as sent, cut to its legal length, or None when it is not made of id characters."""
    if not value:
        return None
    value = value[:ID_LENGTH]
    return value if _ID_TEXT.fullmatch(value) else None


def minimal(call: CallRecord, activities: Collection[str]) -> CallRecord:
    """What is kept of a rejected call: the reason, a known activity, ids cut to their length, the source.

    An unauthenticated caller chooses every byte of a rejected call: nothing else of it is stored.
    """
    return replace(
        call,
        activity=call.activity if call.activity in activities else None,
        instance_id=_id_or_none(call.instance_id),
        order_id=_id_or_none(call.order_id),
        order_line_id=_id_or_none(call.order_line_id),
        business_id=_id_or_none(call.business_id),
    )


def _count_sql(db: Database) -> str:
    table = ident(db, RejectedCallCount._meta.table_name)
    source, minute, calls = (ident(db, name) for name in ("source_address", "minute", "calls"))
    return (
        f"INSERT INTO {table} ({source}, {minute}, {calls}) VALUES ({placeholders(db, 2)}, 1) "  # noqa: S608 (names from the model)
        f"ON CONFLICT ({source}, {minute}) DO UPDATE SET {calls} = {table}.{calls} + 1 RETURNING {calls}"
    )


def _total_sql(db: Database) -> str:
    table = ident(db, RejectedCallMinute._meta.table_name)
    minute, calls = ident(db, "minute"), ident(db, "calls")
    return (
        f"INSERT INTO {table} ({minute}, {calls}) VALUES ({placeholders(db, 1)}, 1) "  # noqa: S608 (names from the model)
        f"ON CONFLICT ({minute}) DO UPDATE SET {calls} = {table}.{calls} + 1 RETURNING {calls}"
    )


def count_rejected(source: str, minute: int) -> int:
    """Count a rejected call of `source` in `minute` (open transaction); the count of that minute so far."""
    cursor = database.execute_sql(statement("rejected_call_count.upsert", _count_sql), [source, minute])
    return int(cursor.fetchone()[0])


def count_within_share(minute: int) -> int:
    """Count a rejected call within its source's share of `minute`, whatever its source (open
    transaction); how many there were in that minute so far."""
    cursor = database.execute_sql(statement("rejected_call_minute.upsert", _total_sql), [minute])
    return int(cursor.fetchone()[0])


def store_rejected(
    call: CallRecord, activities: Collection[str], per_minute: int, minute: int, total: int | None = None
) -> int | None:
    """Count a rejected call; store its minimal row while its source is within `per_minute` a minute and
    all sources' calls within their shares are within `total` a minute (None: no bound across sources).

    The counts live in the database, so every worker and host agrees on them. Returns the row's id, or
    None when the call was only counted.
    """
    source = (call.source_address or "unknown")[:ID_LENGTH]
    if count_rejected(source, minute) > per_minute:
        return None
    if total is not None and count_within_share(minute) > total:
        return None
    RejectedCallCount.update(stored=RejectedCallCount.stored + 1).where(
        (RejectedCallCount.source_address == source) & (RejectedCallCount.minute == minute)
    ).execute()
    return store(minimal(call, activities))


def record_rejected(
    call: CallRecord,
    activities: Collection[str],
    per_minute: int,
    minute: int,
    attempts: int = 2,
    total: int | None = None,
) -> int | None:
    """A rejected call's row and log line (minimal) within the bounds, else only its count; when the
    count cannot be written, the line (and a warning). Returns the row's id, or None when the call
    was only counted or could not be written."""
    for attempt in range(1, attempts + 1):
        try:
            with connected(), database.atomic():
                row = store_rejected(call, activities, per_minute, minute, total)
        except Exception as exc:  # the reply goes out whatever happens to its log row
            if attempt == attempts:
                log_line(minimal(call, activities))
                log.warning("callback log not written request_id=%s: %s", call.request_id, type(exc).__name__)
            continue
        if row is not None:
            log_line(minimal(call, activities))
        return row
    return None


# --- the summary of rejected calls only counted -----------------------------------------------------

SUMMARY_SOURCES = 100  # per minute, the sources with most calls get a line each; the rest share one
SUMMARY_LOOKBACK_MINUTES = 24 * 60  # counts older than this (a consumer down for a day) stay unsummarized


def _claim_sql(db: Database) -> str:
    table = ident(db, RejectedCallCount._meta.table_name)
    source, minute, calls, stored, summarized = (
        ident(db, name) for name in ("source_address", "minute", "calls", "stored", "summarized")
    )
    return (
        f"UPDATE {table} SET {summarized} = TRUE WHERE {minute} >= {placeholders(db, 1)} "  # noqa: S608 (names from the model)
        f"AND {minute} < {placeholders(db, 1)} AND {summarized} = FALSE AND {calls} > {stored} "
        f"RETURNING {source}, {minute}, {calls}, {stored}"
    )


def minute_text(minute: int) -> str:
    """A UNIX minute as UTC text (2026-12-06T00:21Z)."""
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%MZ")


def summarize_rejected(now_minute: int, limit: int = SUMMARY_SOURCES) -> int:
    """Log one line per source and finished minute with rejected calls that were only counted (its
    count of calls and of those logged), at most `limit` sources a minute (the most calls first; the
    rest in one line). Each count is claimed once, by one consumer. Returns the lines logged."""
    with connected(), database.atomic():
        cursor = database.execute_sql(
            statement("rejected_call_count.claim", _claim_sql),
            [now_minute - SUMMARY_LOOKBACK_MINUTES, now_minute],
        )
        claimed = [(str(s), int(m), int(c), int(k)) for s, m, c, k in cursor.fetchall()]
    by_minute: dict[int, list[tuple[str, int, int]]] = {}
    for source, minute, calls, stored in claimed:
        by_minute.setdefault(minute, []).append((source, calls, stored))
    lines = 0
    for minute in sorted(by_minute):
        counts = sorted(by_minute[minute], key=lambda item: (-item[1], item[0]))
        for source, calls, stored in counts[:limit]:
            log.info(
                "rejected calls only counted minute=%s source=%s calls=%d logged=%d",
                minute_text(minute),
                _storable_text(source, ID_LENGTH),
                calls,
                stored,
            )
            lines += 1
        rest = counts[limit:]
        if rest:
            log.info(
                "rejected calls only counted minute=%s sources=%d more calls=%d logged=%d",
                minute_text(minute),
                len(rest),
                sum(calls for _, calls, _ in rest),
                sum(stored for _, _, stored in rest),
            )
            lines += 1
    return lines
