"""Offline-verifiable license tokens, signed with Ed25519, for products sold as licenses.

A token is `ISVL1.<payload>.<signature>`: `payload` the URL-safe Base64 (no padding) of a compact JSON
object, `signature` the URL-safe Base64 (no padding) of the Ed25519 signature of the ASCII bytes
`ISVL1.<payload>`. The payload's fields: `lid` license id, `iid` instance id, `sku` SKU code, `exp`
expiry (UNIX seconds, UTC; null: no expiry), `iat` issued at (UNIX seconds), `ver` the license's
version (1, then one more on each reissue), `mkt` the marketplace. A product verifies it with the
public key alone (examples/license_verify.py, examples/LicenseVerify.java).

A provisioner may issue licenses itself: one with an `issue_license(instance, grant) -> str` method
is asked instead (an optional capability); the token here is the built-in issuer's.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

PREFIX = "ISVL1"


class LicenseError(Exception):
    """A token that is malformed, not signed by the key, or a key that is not one."""


@dataclass(frozen=True)
class Grant:
    """What a license grants: which license, instance and SKU, until when, in which version."""

    license_id: str
    instance_id: str
    sku_code: str
    expire_at: datetime | None  # naive UTC; None: no expiry
    version: int
    marketplace: str
    issued_at: datetime

    def payload(self) -> dict[str, Any]:
        """The token's payload fields."""
        return {
            "lid": self.license_id,
            "iid": self.instance_id,
            "sku": self.sku_code,
            "exp": _seconds(self.expire_at),
            "iat": _seconds(self.issued_at),
            "ver": self.version,
            "mkt": self.marketplace,
        }


def _seconds(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise LicenseError("not URL-safe Base64")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LicenseError("not URL-safe Base64") from None


def private_key(seed: bytes) -> Ed25519PrivateKey:
    """The Ed25519 private key of a 32-byte seed."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_text(seed: bytes) -> str:
    """The public key of a seed, as URL-safe Base64 of its 32 raw bytes."""
    return _b64(private_key(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def keygen() -> tuple[str, str]:
    """A new key pair: (private seed, public key), each URL-safe Base64 of 32 raw bytes."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return _b64(seed), public_key_text(seed)


def issue(seed: bytes, grant: Grant) -> str:
    """The signed token of `grant`."""
    payload = json.dumps(grant.payload(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    signed = f"{PREFIX}.{_b64(payload)}"
    return f"{signed}.{_b64(private_key(seed).sign(signed.encode('ascii')))}"


def verify(token: str, public_key: str) -> dict[str, Any]:
    """The payload of a token signed by `public_key` (URL-safe Base64); LicenseError otherwise."""
    raw_key = _unb64(public_key.strip())
    if len(raw_key) != 32:
        raise LicenseError("the public key is not 32 bytes of URL-safe Base64")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise LicenseError(f"not a license token ({PREFIX}.<payload>.<signature>)")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(
            _unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode("ascii")
        )
    except InvalidSignature:
        raise LicenseError("the signature does not match this public key") from None
    try:
        payload = json.loads(_unb64(parts[1]))
    except ValueError:
        raise LicenseError("the payload is not JSON") from None
    if not isinstance(payload, dict):
        raise LicenseError("the payload is not a JSON object")
    return payload


def expired(payload: dict[str, Any], now: datetime | None = None) -> bool:
    """Whether a verified payload's expiry has passed."""
    exp = payload.get("exp")
    moment = now or datetime.now(UTC)
    return isinstance(exp, int) and exp <= moment.timestamp()
