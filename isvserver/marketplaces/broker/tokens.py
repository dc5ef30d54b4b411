"""Access tokens: opaque, random, stored as SHA-256 digests with their expiry; failed requests counted."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

from authlib.common.security import generate_token
from peewee import Database

from isvserver.db import database, ident, statement
from isvserver.marketplaces.broker.models import BrokerClient, BrokerToken, BrokerTokenFailure
from isvserver.models import utcnow

TOKEN_LENGTH = 48  # characters of A-Z a-z 0-9: about 285 bits


def digest(token: str) -> str:
    """The SHA-256 of a token, the only form stored."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue(client_id: str, ttl_s: int) -> str:
    """A new token for the active client `client_id`, valid for `ttl_s` seconds on every worker."""
    client = BrokerClient.get((BrokerClient.client_id == client_id) & BrokerClient.revoked_at.is_null())
    token = generate_token(TOKEN_LENGTH)
    now = utcnow()
    BrokerToken.create(
        digest=digest(token), client=client, created_at=now, expires_at=now + timedelta(seconds=ttl_s)
    )
    return token


def _holder_sql(db: Database) -> str:
    """The token lookup, built once per database (it runs on every broker call)."""
    token, client = ident(db, BrokerToken._meta.table_name), ident(db, BrokerClient._meta.table_name)
    column = ident(db, BrokerClient.client_id.column_name)
    return (
        f"SELECT c.{column} FROM {token} t JOIN {client} c "  # noqa: S608 (names from the models)
        f"ON c.{ident(db, 'id')} = t.{ident(db, BrokerToken.client.column_name)} "
        f"WHERE t.{ident(db, BrokerToken.digest.column_name)} = {db.param} "
        f"AND t.{ident(db, BrokerToken.expires_at.column_name)} > {db.param} "
        f"AND c.{ident(db, BrokerClient.revoked_at.column_name)} IS NULL"
    )


def holder(token: str) -> str | None:
    """The client id a valid token belongs to: issued, not expired, its client not revoked; else None."""
    if not token or len(token) > 512:
        return None
    now = BrokerToken.expires_at.db_value(utcnow())
    cursor = database.execute_sql(statement("broker_token.holder", _holder_sql), (digest(token), now))
    row = cursor.fetchone()
    return row[0] if row else None


def failures(source: str, minute: int) -> int:
    """How many token requests from `source` failed in `minute`."""
    return (
        BrokerTokenFailure.select(BrokerTokenFailure.failures)
        .where((BrokerTokenFailure.source_address == source) & (BrokerTokenFailure.minute == minute))
        .scalar()
        or 0
    )


def count_failure(source: str, minute: int) -> None:
    """One more failed token request from `source` in `minute` (one upsert, any number of workers)."""
    with database.atomic():
        query = BrokerTokenFailure.insert(source_address=source, minute=minute, failures=1).on_conflict(
            conflict_target=[BrokerTokenFailure.source_address, BrokerTokenFailure.minute],
            update={BrokerTokenFailure.failures: BrokerTokenFailure.failures + 1},
        )
        query.execute()


KEEP_EXPIRED = timedelta(days=1)  # an expired token's digest is kept this long (for the operator)
KEEP_FAILURE_MINUTES = 60


def prune() -> tuple[int, int]:
    """Forget what can no longer matter, like the core's nonces: token digests expired a day ago and
    failure counts older than an hour (the limit is per minute). A periodic job; (tokens, counts)."""
    now, minute = utcnow(), int(time.time() // 60)
    with database.atomic():
        tokens = BrokerToken.delete().where(BrokerToken.expires_at < now - KEEP_EXPIRED).execute()
        counts = (
            BrokerTokenFailure.delete()
            .where(BrokerTokenFailure.minute < minute - KEEP_FAILURE_MINUTES)
            .execute()
        )
    return tokens, counts
