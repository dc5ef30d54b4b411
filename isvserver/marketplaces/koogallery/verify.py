"""Request authentication of the V2 basic interface (spec §2.1): parameters, window, signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from isvserver.marketplaces.koogallery.results import AUTH_FAILED, INVALID_PARAMETERS, SUCCESS
from isvserver.marketplaces.koogallery.signing import matching_key

MAX_NONCE_LENGTH = 128


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
    REPLAYED_NONCE = "replayed_nonce"


MESSAGES = {
    Verdict.VERIFIED: "success",
    Verdict.MISSING_TIMESTAMP: "timestamp is missing",
    Verdict.MISSING_NONCE: "nonce is missing",
    Verdict.MISSING_SIGNATURE: "authentication failed: signature is missing",
    Verdict.BAD_TIMESTAMP: "timestamp must be UNIX time in milliseconds (13 digits) or seconds (10 digits)",
    Verdict.BAD_NONCE: f"nonce must be 1 to {MAX_NONCE_LENGTH} printable ASCII characters",
    Verdict.STALE_TIMESTAMP: "timestamp is outside the accepted window; check the clock",
    Verdict.NO_KEY: "authentication failed: no access key is configured for this interface",
    Verdict.BAD_SIGNATURE: "authentication failed: signature does not match",
    Verdict.REPLAYED_NONCE: "authentication failed: nonce was already used",
}
CODES = {
    Verdict.VERIFIED: SUCCESS,
    Verdict.MISSING_SIGNATURE: AUTH_FAILED,
    Verdict.NO_KEY: AUTH_FAILED,
    Verdict.BAD_SIGNATURE: AUTH_FAILED,
    Verdict.REPLAYED_NONCE: AUTH_FAILED,
}


@dataclass(frozen=True)
class Verification:
    """The verdict on a call; `key` is the access key that verified it."""

    verdict: Verdict
    key: str | None = field(default=None, repr=False)
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


def verify(
    params: Mapping[str, str],
    raw_body: bytes,
    parsed_body: dict[str, Any] | None,
    keys: Sequence[str],
    now_ms: float,
    tolerance_s: int,
) -> Verification:
    """Check the query parameters `signature`, `timestamp`, `nonce` against the body and keys."""
    timestamp = params.get("timestamp", "")
    nonce = params.get("nonce", "")
    signature = params.get("signature", "")
    if not timestamp:
        return Verification(Verdict.MISSING_TIMESTAMP)
    if not nonce:
        return Verification(Verdict.MISSING_NONCE)
    if not signature:
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
    key = matching_key(keys, signature, nonce, timestamp, raw_body, parsed_body)
    if key is None:
        return Verification(Verdict.BAD_SIGNATURE)
    return Verification(Verdict.VERIFIED, key=key, timestamp_ms=timestamp_ms)
