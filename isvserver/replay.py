"""Replay protection: every accepted nonce is stored in the database shared by all workers."""

from __future__ import annotations

import hashlib
import random

from peewee import Database

from isvserver.db import database, ident, is_postgres, names, placeholders, statement
from isvserver.models import Nonce

PRUNE_ONE_IN = 200  # about one call in this many also deletes nonces past their keeping time


def first_use(scope: str, nonce: str, now_ms: int, keep_ms: int) -> bool:
    """Record `nonce`; False when it was seen before within its keeping time (a replay)."""
    digest = hashlib.sha256(f"{scope}\n{nonce}".encode()).hexdigest()
    cursor = database.execute_sql(statement("nonce.insert", _insert_sql), (digest, now_ms))
    if cursor.rowcount != 1:
        return False
    if random.randrange(PRUNE_ONE_IN) == 0:
        prune(now_ms - keep_ms)
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


def prune(before_ms: int) -> int:
    """Forget nonces seen before `before_ms`; their timestamps can no longer pass the window."""
    return Nonce.delete().where(Nonce.seen_at < before_ms).execute()
