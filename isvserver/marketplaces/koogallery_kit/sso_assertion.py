"""The assertion handed to the product: a short-lived HS256 JWT (PyJWT) naming the user, no IdP token.

One use: its `jti` is unique (kept in kit_sso_login); the product records the jti of every assertion it
accepts until the assertion's `exp` and refuses one it has seen (examples/sso_verify.py).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from isvserver.marketplaces.koogallery_kit.sso_config import SsoSettings

ALGORITHM = "HS256"


@dataclass(frozen=True)
class Assertion:
    """A signed assertion, its id and its expiry (epoch seconds)."""

    token: str
    jti: str
    expires: int


def issue(settings: SsoSettings, claims: dict[str, Any], now: float | None = None) -> Assertion:
    """Sign `claims` (user, tenant, instance) with iss, aud, iat, nbf, exp and a fresh jti."""
    if settings.assertion_key is None:
        raise ValueError("ISV_SSO_ASSERTION_KEY is not set")
    issued = int(time.time() if now is None else now)
    jti = uuid.uuid4().hex
    payload = {
        **claims,
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + settings.assertion_ttl_s,
        "jti": jti,
    }
    token = jwt.encode(payload, settings.assertion_key, algorithm=ALGORITHM)
    return Assertion(token, jti, payload["exp"])


def verify(settings: SsoSettings, token: str, leeway_s: int = 5) -> dict[str, Any]:
    """The claims of `token` if its signature, issuer, audience and expiry hold (else InvalidTokenError)."""
    return jwt.decode(
        token,
        settings.assertion_key,
        algorithms=[ALGORITHM],
        audience=settings.audience,
        issuer=settings.issuer,
        leeway=leeway_s,
        options={"require": ["exp", "iat", "jti", "aud", "iss", "sub"]},
    )
