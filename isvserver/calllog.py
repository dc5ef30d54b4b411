"""The call log: one row per marketplace call, with ids, verdict, result and latency; no secrets."""

from __future__ import annotations

import logging
from dataclasses import asdict, astuple, dataclass, fields

from peewee import Database

from isvserver.db import connected, database, ident, is_postgres, names, placeholders, statement
from isvserver.models import CallbackLog, utcnow

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


# The longest text each column holds: its max_length, or for a text column the longest instanceId list
# that validates (100 ids of 64 characters and their commas).
TEXT_LIMIT = 6500
_LIMITS = {
    f.name: getattr(CallbackLog._meta.fields[f.name], "max_length", None) or TEXT_LIMIT
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
    columns = [CallbackLog._meta.fields[name].column_name for name in _STORED]
    sql = (
        f"INSERT INTO {ident(db, CallbackLog._meta.table_name)} ({names(db, *columns)}) "  # noqa: S608 (names from the model)
        f"VALUES ({placeholders(db, len(columns))})"
    )
    if is_postgres(db):
        sql += f" RETURNING {ident(db, CallbackLog.id.column_name)}"
    return sql


_STORED = ("received_at", *(f.name for f in fields(CallRecord)))
_CONVERT = tuple(CallbackLog._meta.fields[name].db_value for name in _STORED)


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
    """Rewrite a stored call's result and latency (its answer changed after its transaction committed)."""
    call = _clean(call)
    CallbackLog.update(
        result_code=call.result_code, result_msg=call.result_msg, latency_ms=call.latency_ms
    ).where(CallbackLog.id == row_id).execute()


def record(call: CallRecord, attempts: int = 2) -> None:
    """The log line and the row in a transaction of its own (tried twice; a failed write is logged)."""
    log_line(call)
    for attempt in range(1, attempts + 1):
        try:
            with connected():
                store(call)
            return
        except Exception as exc:  # the reply goes out whatever happens to its log row
            if attempt == attempts:
                log.warning("callback log not written request_id=%s: %s", call.request_id, type(exc).__name__)
