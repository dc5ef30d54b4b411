"""Broker clients: a platform's client id and secret (shown once, kept as an argon2 hash), revocable."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from authlib.oauth2.rfc6749 import ClientMixin

from isvserver.db import database
from isvserver.marketplaces.broker.models import BrokerClient
from isvserver.models import utcnow

# OWASP's argon2id minimum (19 MiB, 2 passes): slow to guess offline, ~20 ms per check online.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
GRANT = "client_credentials"
AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# Checked when the client id is unknown, so an unknown id costs as long as a wrong secret.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(32))


class ClientError(Exception):
    """A client cannot be added or removed; the message says why."""


@dataclass(frozen=True)
class Credentials:
    """A new client's id and secret (the secret exists only here, once)."""

    client_id: str
    client_secret: str


def add(name: str) -> Credentials:
    """A new client named `name` with a random id and secret; only the secret's hash is stored."""
    if not NAME.fullmatch(name):
        raise ClientError("a client name is 1-64 of A-Z a-z 0-9 . _ -")
    client_id = f"isv-{secrets.token_hex(12)}"
    secret = secrets.token_urlsafe(32)
    BrokerClient.create(client_id=client_id, name=name, secret_hash=HASHER.hash(secret))
    return Credentials(client_id, secret)


def remove(client_id: str) -> bool:
    """Revoke the client (its tokens stop working at once); False when no active client has this id."""
    with database.atomic():
        return bool(
            BrokerClient.update(revoked_at=utcnow())
            .where((BrokerClient.client_id == client_id) & BrokerClient.revoked_at.is_null())
            .execute()
        )


def listed() -> list[dict[str, str | datetime | None]]:
    """Every client: id, name, created, revoked (never a secret or hash)."""
    return [
        {"client_id": c.client_id, "name": c.name, "created_at": c.created_at, "revoked_at": c.revoked_at}
        for c in BrokerClient.select().order_by(BrokerClient.id)
    ]


# Checks that succeeded, by (stored hash, SHA-256 of the secret): HTTP Basic platforms send the secret
# on every call, and one argon2 check costs ~20 ms of CPU. Only successes are remembered (a guess
# always pays the full check); the stored hash is part of the key and is read from the database on
# every call, so a revoked client (no row) or a new secret (another hash) is never let in from here.
VERIFIED_CACHE_SIZE = 256
_verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()
_verified_lock = threading.Lock()


def secret_matches(stored_hash: str | None, secret: str) -> bool:
    """Whether `secret` is the one hashed (an unknown client still costs one hash check)."""
    key = (stored_hash or "", hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest())
    if stored_hash is not None:
        with _verified_lock:
            if key in _verified:
                _verified.move_to_end(key)
                return True
    try:
        matched = HASHER.verify(stored_hash or _DUMMY_HASH, secret) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if matched:
        with _verified_lock:
            _verified[key] = True
            while len(_verified) > VERIFIED_CACHE_SIZE:
                _verified.popitem(last=False)
    return matched


class OAuthClient(ClientMixin):
    """A stored client as Authlib's client authentication sees it."""

    def __init__(self, row: BrokerClient | None, client_id: str) -> None:
        self.row = row
        self.client_id = client_id

    def get_client_id(self) -> str:
        """The client's id."""
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        """The secret against the stored argon2 hash (constant time; unknown clients too)."""
        return secret_matches(self.row.secret_hash if self.row else None, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """HTTP Basic or the client id and secret in the body, at the token endpoint."""
        return method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        """Only client credentials."""
        return hmac.compare_digest(grant_type.encode(), GRANT.encode())


def query_client(client_id: str) -> OAuthClient:
    """The active client with this id, or a stand-in that no secret matches (same cost, same answer)."""
    row = None
    if CLIENT_ID.fullmatch(client_id):
        row = (
            BrokerClient.select()
            .where((BrokerClient.client_id == client_id) & BrokerClient.revoked_at.is_null())
            .first()
        )
    return OAuthClient(row, client_id)
