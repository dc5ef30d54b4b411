"""Replay protection: every accepted nonce is stored in the database shared by all workers.

Each interface keeps its nonces for its own window, so a row holds the moment it may be forgotten
(`Nonce.seen_at`: seen + kept, in UNIX ms); pruning by that moment never drops another interface's
nonce early."""

from __future__ import annotations

import hashlib
import random

from peewee import Database

from isvserver.db import database, ident, is_postgres, names, placeholders, statement
from isvserver.models import Nonce

PRUNE_ONE_IN = 200  # about one call in this many also deletes nonces past their keeping time


def first_use(scope: str, nonce: str, now_ms: int, keep_ms: int) -> bool:
    """Record `nonce` for `keep_ms`; False when it was seen before within its keeping time (a replay)."""
    digest = hashlib.sha256(f"{scope}\n{nonce}".encode()).hexdigest()
    cursor = database.execute_sql(statement("nonce.insert", _insert_sql), (digest, now_ms + keep_ms))
    if cursor.rowcount != 1:
        return False
    if random.randrange(PRUNE_ONE_IN) == 0:
        prune(now_ms)
    return True


def _insert_sql(db: Database) -> str:
    """INSERT the nonce unless it is there (built once per database: peewee compiles no query per call)."""
    table, columns = (
        ident(db, Nonce._meta.table_name),
        names(db, Nonce.digest.column_name, Nonce.seen_at.column_name),
    )
    values = placeholders(db, 2)
    if is_postgres(db):
        return f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING"  # noqa: S608
    return f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({values})"  # noqa: S608


def prune(now_ms: int) -> int:
    """Forget the nonces whose keeping time has passed by `now_ms`: their calls can no longer pass
    their interface's window."""
    return Nonce.delete().where(Nonce.seen_at < now_ms).execute()
