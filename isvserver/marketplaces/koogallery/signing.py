"""HMAC signatures of the V2 basic interface: request signature (spec §2.1) and Body-Sign (spec §3)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any

from isvserver.body_sign import BODY_SIGN_FORMAT, body_sign, body_sign_valid

SIGNATURE_FORMAT = re.compile(r"[0-9A-Fa-f]{64}")


def _hmac(key: str, data: bytes) -> bytes:
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).digest()


def canonical_payload(body: dict[str, Any]) -> bytes:
    """Huawei's sample form: top-level keys sorted, top-level nulls dropped, compact, raw UTF-8."""
    ordered = {k: body[k] for k in sorted(body) if body[k] is not None}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def request_signature(key: str, payload: bytes, nonce: str, timestamp: str) -> str:
    """The upper-case hex `signature` query parameter the marketplace sends for this payload."""
    inner = _hmac(key, payload).hex()
    canonical = (key + nonce + timestamp + inner).encode("utf-8")
    return _hmac(key, canonical).hex().upper()


def matching_key(
    keys: Sequence[str],
    signature: str,
    nonce: str,
    timestamp: str,
    raw_body: bytes,
    parsed_body: dict[str, Any] | None,
) -> str | None:
    """The key whose signature over the raw body (or else its canonical form) equals `signature`."""
    if not SIGNATURE_FORMAT.fullmatch(signature):
        return None
    received = signature.lower().encode("ascii")
    payloads = [raw_body]
    if parsed_body is not None:
        try:
            canonical = canonical_payload(parsed_body)
        except (ValueError, RecursionError):  # a lone surrogate has no UTF-8 form; absurd nesting
            canonical = raw_body
        if canonical != raw_body:
            payloads.append(canonical)
    for payload in payloads:
        for key in keys:
            expected = request_signature(key, payload, nonce, timestamp).lower().encode("ascii")
            if hmac.compare_digest(expected, received):
                return key
    return None


__all__ = [  # Body-Sign (spec §3) is shared by every generation: the core holds it, V2 signs with it
    "BODY_SIGN_FORMAT",
    "body_sign",
    "body_sign_valid",
    "canonical_payload",
    "matching_key",
    "request_signature",
]
