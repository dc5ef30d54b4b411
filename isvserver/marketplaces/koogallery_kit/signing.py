"""Request authentication of the Kit sync interfaces (spec §2.2): headers `x-sign`, `x-timestamp`, `x-nonce`.

`x-sign = hex(HMAC_SHA256(key=kitKey, data=kitKey + nonce + timestamp + payload))`, with no inner hash
(the basic interface's inner HMAC is what sets the two apart), over the raw body or else its canonical form.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from isvserver import freshness
from isvserver.freshness import MAX_NONCE_LENGTH, Verdict, precheck
from isvserver.marketplaces.koogallery_kit.results import AUTH_FAILED, INVALID_PARAMETERS, SUCCESS

SIGN_FORMAT = re.compile(r"[0-9A-Fa-f]{64}")
SIGN_HEADER = "x-sign"
TIMESTAMP_HEADER = "x-timestamp"
NONCE_HEADER = "x-nonce"


def canonical_payload(body: dict[str, Any]) -> bytes:
    """Top-level keys sorted, top-level nulls dropped, compact, raw UTF-8; integers stay numbers."""
    ordered = {k: body[k] for k in sorted(body) if body[k] is not None}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def kit_signature(key: str, nonce: str, timestamp: str, payload: bytes) -> str:
    """The upper-case hex `x-sign` the marketplace sends for this payload."""
    data = (key + nonce + timestamp).encode("utf-8") + payload
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest().upper()


def _payloads(raw: bytes, body: dict[str, Any] | None) -> list[bytes]:
    payloads = [raw]
    if isinstance(body, dict):
        try:
            canonical = canonical_payload(body)
        except (ValueError, RecursionError):  # a lone surrogate has no UTF-8 form; absurd nesting
            return payloads
        if canonical != raw:
            payloads.append(canonical)
    return payloads


def matching_key(
    keys: Sequence[str], sign: str, nonce: str, timestamp: str, raw: bytes, body: dict[str, Any] | None
) -> str | None:
    """The key whose signature over the raw body (or else its canonical form) equals `sign`."""
    if not SIGN_FORMAT.fullmatch(sign):
        return None
    received = sign.lower().encode("ascii")
    for payload in _payloads(raw, body):
        for key in keys:
            expected = kit_signature(key, nonce, timestamp, payload).lower().encode("ascii")
            if hmac.compare_digest(expected, received):
                return key
    return None


MESSAGES = {
    Verdict.VERIFIED: "success",
    Verdict.MISSING_TIMESTAMP: "x-timestamp is missing",
    Verdict.MISSING_NONCE: "x-nonce is missing",
    Verdict.MISSING_SIGNATURE: "authentication failed: x-sign is missing",
    Verdict.BAD_TIMESTAMP: "x-timestamp must be UNIX time in milliseconds (13 digits) or seconds (10 digits)",
    Verdict.BAD_NONCE: f"x-nonce must be 1 to {MAX_NONCE_LENGTH} printable ASCII characters",
    Verdict.STALE_TIMESTAMP: "x-timestamp is outside the accepted window; check the clock",
    Verdict.NO_KEY: "authentication failed: no Kit key is configured",
    Verdict.BAD_SIGNATURE: "authentication failed: x-sign does not match",
}


class Verification(freshness.Verification):
    """The verdict on a call, answered with this interface's messages and result codes."""

    MESSAGES = MESSAGES
    CODES = (SUCCESS, AUTH_FAILED, INVALID_PARAMETERS)


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value whatever the case of its name (a plain dict is not case-insensitive)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value


def verify(
    headers: Mapping[str, str],
    raw: bytes,
    body: dict[str, Any] | None,
    keys: Sequence[str],
    now_ms: float,
    tolerance_s: int,
) -> Verification:
    """Check `x-sign`, `x-timestamp`, `x-nonce` against the body and the Kit keys."""
    timestamp = _header(headers, TIMESTAMP_HEADER)
    nonce = _header(headers, NONCE_HEADER)
    sign = _header(headers, SIGN_HEADER)
    rejected, timestamp_ms = precheck(timestamp, nonce, sign, bool(keys), now_ms, tolerance_s)
    if rejected is not None:
        return Verification(rejected, timestamp_ms=timestamp_ms)
    key = matching_key(keys, sign, nonce, timestamp, raw, body)
    if key is None:
        return Verification(Verdict.BAD_SIGNATURE, timestamp_ms=timestamp_ms)
    return Verification(Verdict.VERIFIED, key=key, nonce=nonce, timestamp_ms=timestamp_ms)
