"""What the provider hands the buyer, encrypted to the order's publicKey: a sealed box (X25519,
XSalsa20-Poly1305; libsodium's crypto_box_seal through PyNaCl). Only the buyer's private key opens it.

The platform gives the key as text [doc: "publicKey"]; [decision] 32 bytes in base58 (the VSYS wallets'
alphabet), base64 (standard or url-safe) or hex are accepted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

from nacl.public import PublicKey, SealedBox

KEY_BYTES = 32
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
ALGORITHM = "crypto_box_seal (X25519, XSalsa20-Poly1305)"


def _base58(text: str) -> bytes | None:
    number = 0
    for char in text:
        digit = BASE58.find(char)
        if digit < 0:
            return None
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def public_key(text: str | None) -> PublicKey | None:
    """The X25519 public key of the platform's text, or None when it is not one."""
    if not text or len(text) > 200 or not text.isascii():
        return None
    candidates = [_base58(text)]
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            continue
    for raw in candidates:
        if raw is not None and len(raw) == KEY_BYTES:
            return PublicKey(raw)
    return None


def seal(key: PublicKey, details: dict[str, Any]) -> str:
    """`details` as JSON, sealed to `key`, in base64."""
    plain = json.dumps(details, separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(SealedBox(key).encrypt(plain)).decode("ascii")
