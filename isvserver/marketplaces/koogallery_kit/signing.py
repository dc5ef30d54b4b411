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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from isvserver.marketplaces.koogallery_kit.results import AUTH_FAILED, INVALID_PARAMETERS, SUCCESS

SIGN_FORMAT = re.compile(r"[0-9A-Fa-f]{64}")
MAX_NONCE_LENGTH = 128
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


class Verdict(StrEnum):
    """Why a call was accepted or rejected; logged and stored, never with the values themselves."""

    VERIFIED = "verified"
    MISSING_TIMESTAMP = "missing_timestamp"
    MISSING_NONCE = "missing_nonce"
    MISSING_SIGNATURE = "missing_signature"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_NONCE = "bad_nonce"
    STALE_TIMESTAMP = "stale_timestamp"
    NO_KEY = "no_key_configured"
    BAD_SIGNATURE = "bad_signature"


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
CODES = {
    Verdict.VERIFIED: SUCCESS,
    Verdict.MISSING_SIGNATURE: AUTH_FAILED,
    Verdict.NO_KEY: AUTH_FAILED,
    Verdict.BAD_SIGNATURE: AUTH_FAILED,
}


@dataclass(frozen=True)
class Verification:
    """The verdict on a call; `key` verified it, `nonce` is what to record against replay."""

    verdict: Verdict
    key: str | None = field(default=None, repr=False)
    nonce: str | None = field(default=None, repr=False)
    timestamp_ms: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the call is authentic and fresh."""
        return self.verdict == Verdict.VERIFIED

    @property
    def code(self) -> str:
        """The result code that answers this verdict."""
        return CODES.get(self.verdict, INVALID_PARAMETERS)

    @property
    def message(self) -> str:
        """The resultMsg that answers this verdict."""
        return MESSAGES[self.verdict]


def parse_timestamp(value: str) -> int | None:
    """Milliseconds from a 13-digit (ms) or 10-digit (s) UNIX timestamp; None for anything else."""
    if not value.isascii() or not value.isdigit():
        return None
    if len(value) == 13:
        return int(value)
    if len(value) == 10:
        return int(value) * 1000
    return None


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
    if not timestamp:
        return Verification(Verdict.MISSING_TIMESTAMP)
    if not nonce:
        return Verification(Verdict.MISSING_NONCE)
    if not sign:
        return Verification(Verdict.MISSING_SIGNATURE)
    timestamp_ms = parse_timestamp(timestamp)
    if timestamp_ms is None:
        return Verification(Verdict.BAD_TIMESTAMP)
    if len(nonce) > MAX_NONCE_LENGTH or not nonce.isascii() or not nonce.isprintable():
        return Verification(Verdict.BAD_NONCE)
    if abs(now_ms - timestamp_ms) > tolerance_s * 1000:
        return Verification(Verdict.STALE_TIMESTAMP, timestamp_ms=timestamp_ms)
    if not keys:
        return Verification(Verdict.NO_KEY)
    key = matching_key(keys, sign, nonce, timestamp, raw, body)
    if key is None:
        return Verification(Verdict.BAD_SIGNATURE, timestamp_ms=timestamp_ms)
    return Verification(Verdict.VERIFIED, key=key, nonce=nonce, timestamp_ms=timestamp_ms)
