"""Logins under way: a `state` stored as its hash, bound to one browser, used once before it expires."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from isvserver.db import database
from isvserver.marketplaces.koogallery_kit.models import KitSsoState
from isvserver.marketplaces.koogallery_kit.pii import seal_optional, unseal_optional
from isvserver.models import utcnow
from isvserver.sealing import DataKeys

KEEP_EXPIRED = timedelta(days=1)  # an expired login's row is kept this long (for the operator)


class StateRefused(Exception):
    """The callback's state is unknown, used, expired or from another browser (the reason, no value)."""


@dataclass(frozen=True)
class Pending:
    """What the login stored for its callback."""

    instance_id: str
    app_id: str
    redirect_uri: str
    code_verifier: str | None


def digest(value: str) -> str:
    """The SHA-256 hex of a state or browser token (what is stored, never the token)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def begin(
    instance_id: str,
    app_id: str,
    redirect_uri: str,
    code_verifier: str | None,
    ttl_s: int,
    data_keys: DataKeys,
) -> tuple[str, str]:
    """A new login's (state, browser token), stored with its expiry."""
    state, browser = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    KitSsoState.create(
        state_hash=digest(state),
        browser_hash=digest(browser),
        instance_id=instance_id,
        app_id=app_id,
        code_verifier_sealed=seal_optional(data_keys, code_verifier),
        redirect_uri=redirect_uri,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    return state, browser


def consume(state: str, browser: str | None, data_keys: DataKeys) -> Pending:
    """The pending login of `state`, now used; StateRefused when it cannot be used (again)."""
    if not state or len(state) > 128:
        raise StateRefused("the state is missing or malformed")
    with database.atomic():
        row = KitSsoState.get_or_none(KitSsoState.state_hash == digest(state))
        if row is None:
            raise StateRefused("the state is unknown")
        if row.used_at is not None:
            raise StateRefused("the state was already used")
        now = utcnow()
        if row.expires_at <= now:
            raise StateRefused("the state has expired")
        if not browser or not hmac.compare_digest(digest(browser).encode(), row.browser_hash.encode()):
            raise StateRefused("the state was issued to another browser")
        taken = (
            KitSsoState.update(used_at=now)
            .where(KitSsoState.id == row.id, KitSsoState.used_at.is_null())
            .execute()
        )
        if taken != 1:
            raise StateRefused("the state was already used")
    return Pending(
        row.instance_id, row.app_id, row.redirect_uri, unseal_optional(data_keys, row.code_verifier_sealed)
    )


def prune() -> int:
    """Forget the logins expired more than KEEP_EXPIRED ago, used or not, as the core forgets nonces
    (each login's outcome stays in kit_sso_login); how many. A periodic job."""
    with database.atomic():
        return KitSsoState.delete().where(KitSsoState.expires_at < utcnow() - KEEP_EXPIRED).execute()
