"""Verify an isvserver license offline: python license_verify.py PUBLIC_KEY TOKEN (needs `cryptography`)."""

import base64
import json
import sys
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(public_key: str, token: str) -> dict:
    prefix, payload, signature = token.split(".")
    assert prefix == "ISVL1", "not an isvserver license"
    Ed25519PublicKey.from_public_bytes(b64(public_key)).verify(b64(signature), f"{prefix}.{payload}".encode())
    grant = json.loads(b64(payload))
    assert grant["exp"] is None or grant["exp"] > time.time(), "license expired"
    return grant  # lid, iid, sku, exp, iat, ver, mkt


if __name__ == "__main__":
    print(verify(sys.argv[1], sys.argv[2]))  # raises (exit 1) when invalid or expired
