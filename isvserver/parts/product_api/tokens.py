"""The product's bearer tokens: printed once when added, stored as SHA-256 digests, revoked by name."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import CharField, DateTimeField, IntegrityError

from isvserver.db import connected, database
from isvserver.models import BaseModel, utcnow

PREFIX = "isvp_"  # tells a product token apart in a config file or a leak scanner
TOKEN = re.compile(r"isvp_[A-Za-z0-9_-]{43}")
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per token


class ProductToken(BaseModel):
    """A token the seller's product authenticates with (`Authorization: Bearer …`)."""

    name = CharField(max_length=64, unique=True)
    digest = CharField(max_length=64, unique=True)  # SHA-256 of the token (it has 256 random bits)
    hint = CharField(max_length=16)  # its first characters, to tell tokens apart in listings
    created_at = DateTimeField(default=utcnow)
    revoked_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)

    class Meta:
        table_name = "product_token"


class TokenError(Exception):
    """A token cannot be added or revoked; the message says why."""


@dataclass(frozen=True)
class Caller:
    """Who a valid token belongs to."""

    name: str


def digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def add(name: str) -> str:
    """A new token named `name`, returned once (only its digest is kept)."""
    if not NAME.fullmatch(name):
        raise TokenError("a token name is 1 to 64 letters, digits, '.', '_' or '-'")
    token = PREFIX + secrets.token_urlsafe(32)
    try:
        with connected(), database.atomic():
            ProductToken.create(name=name, digest=digest(token), hint=token[:9])
    except IntegrityError:
        raise TokenError(f"a token named {name} exists already (revoked names stay taken)") from None
    return token


def revoke(name: str) -> bool:
    """Revoke the token named `name`; False when it was revoked already."""
    with connected(), database.atomic():
        row = ProductToken.get_or_none(ProductToken.name == name)
        if row is None:
            raise TokenError(f"no token named {name}")
        if row.revoked_at is not None:
            return False
        ProductToken.update(revoked_at=utcnow()).where(ProductToken.id == row.id).execute()
    return True


def listing() -> list[ProductToken]:
    """Every token, the revoked too, oldest first."""
    with connected():
        return list(ProductToken.select().order_by(ProductToken.id))


def authenticate(header: str | None, now: datetime | None = None) -> Caller | None:
    """The caller of an `Authorization: Bearer <token>` header, or None when it is no active token."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN.fullmatch(token):
        return None
    wanted = digest(token)
    row = ProductToken.get_or_none(ProductToken.digest == wanted)
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.digest.encode("ascii"), wanted.encode("ascii")):
        return None  # the index found it: equal by construction, compared in constant time all the same
    now = now or utcnow()
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_EVERY:
        with database.atomic():
            ProductToken.update(last_used_at=now).where(ProductToken.id == row.id).execute()
    return Caller(row.name)
