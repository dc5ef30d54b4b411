"""Request authentication of the V2 basic interface (spec §2.1): parameters, window, signature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isvserver.freshness import AUTH_FAILURES, MAX_NONCE_LENGTH, Verdict, precheck
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
        if self.verdict == Verdict.VERIFIED:
            return SUCCESS
        return AUTH_FAILED if self.verdict in AUTH_FAILURES else INVALID_PARAMETERS

    @property
    def message(self) -> str:
        """The resultMsg that answers this verdict."""
        return MESSAGES[self.verdict]


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
