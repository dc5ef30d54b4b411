"""Request authentication of the V2 basic interface (spec §2.1): parameters, window, signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from isvserver import freshness
from isvserver.freshness import MAX_NONCE_LENGTH, Verdict, precheck
from isvserver.marketplaces.koogallery.results import AUTH_FAILED, INVALID_PARAMETERS, SUCCESS
from isvserver.marketplaces.koogallery.signing import matching_key

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


class Verification(freshness.Verification):
    """The verdict on a call, answered with this interface's messages and result codes."""

    MESSAGES = MESSAGES
    CODES = (SUCCESS, AUTH_FAILED, INVALID_PARAMETERS)


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
    rejected, timestamp_ms = precheck(timestamp, nonce, signature, bool(keys), now_ms, tolerance_s)
    if rejected is not None:
        return Verification(rejected, timestamp_ms=timestamp_ms)
    key = matching_key(keys, signature, nonce, timestamp, raw_body, parsed_body)
    if key is None:
        return Verification(Verdict.BAD_SIGNATURE)
    return Verification(Verdict.VERIFIED, key=key, timestamp_ms=timestamp_ms)
