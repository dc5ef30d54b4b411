"""HMAC signatures of the V2 basic interface: request signature (spec §2.1) and Body-Sign (spec §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any

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


def body_sign(key: str, body: bytes) -> str:
    """The `Body-Sign` header value for exactly these response bytes."""
    sig = base64.b64encode(_hmac(key, body)).decode("ascii")
    return f'sign_type="HMAC-SHA256", signature="{sig}"'


BODY_SIGN_FORMAT = re.compile(r'sign_type="HMAC-SHA256", signature="([A-Za-z0-9+/=]{44})"')


def body_sign_valid(key: str, body: bytes, header: str | None) -> bool:
    """Whether a `Body-Sign` header value signs exactly these bytes with this key."""
    match = BODY_SIGN_FORMAT.fullmatch(header or "")
    if match is None:
        return False
    expected = base64.b64encode(_hmac(key, body))
    return hmac.compare_digest(expected, match.group(1).encode("ascii"))
