"""V1 request authentication (spec §2.3): the `authToken` of a GET's query string, and its freshness.

authToken = Base64(HMAC-SHA256(key = access key + timeStamp, data = k1=v1&k2=v2&…)) over every query
parameter but authToken, URL-decoded, sorted by name in Java's (UTF-16) order, the first value of each
name. A `+` the marketplace did not percent-encode is a space once decoded: when the raw query string
holds one and the decoded form fails, the form with `+` kept is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from isvserver.authtoken import (
    TIMESTAMP,
    TOKEN,
    auth_token,
    format_timestamp,
    joined,
    matching_key,
    outside_window,
    parse_timestamp,
)
from isvserver.freshness import Verdict

MESSAGES = {
    Verdict.VERIFIED: "success",
    Verdict.MISSING_TIMESTAMP: "timeStamp is missing",
    Verdict.MISSING_SIGNATURE: "authentication failed: authToken is missing",
    Verdict.BAD_TIMESTAMP: "timeStamp must be yyyyMMddHHmmssSSS (UTC)",
    Verdict.STALE_TIMESTAMP: "timeStamp is outside the accepted window; check the clock",
    Verdict.NO_KEY: "authentication failed: no access key is configured for this interface",
    Verdict.BAD_SIGNATURE: "authentication failed: authToken does not match",
    Verdict.REPLAYED_NONCE: "authentication failed: authToken was already used",
}


def parse_query(raw: str, keep_plus: bool = False) -> dict[str, str]:
    """The query string's parameters, URL-decoded (UTF-8), the first value of each name.

    With `keep_plus`, a `+` stays a `+` instead of becoming a space.
    """
    decode = unquote if keep_plus else unquote_plus
    params: dict[str, str] = {}
    for pair in raw.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        params.setdefault(decode(name, errors="replace"), decode(value, errors="replace"))
    return params


@dataclass(frozen=True)
class Checked:
    """The verdict on a V1 call: the key that verified it and the parameters as verified."""

    verdict: Verdict
    key: str | None = None
    params: dict[str, str] | None = None
    token: str = ""

    @property
    def message(self) -> str:
        """The message that answers this verdict."""
        return MESSAGES[self.verdict]


def verify(raw_query: str, keys: Sequence[str], now_ms: float, window_s: int) -> Checked:
    """Check a V1 query string: timeStamp present, well formed and (unless `window_s` is 0) within the
    window of now, and authToken made with one of `keys` (decoded, then with `+` kept)."""
    params = parse_query(raw_query)
    timestamp = params.get(TIMESTAMP, "")
    token = params.get(TOKEN, "")
    if not timestamp:
        return Checked(Verdict.MISSING_TIMESTAMP)
    if not token:
        return Checked(Verdict.MISSING_SIGNATURE)
    moment = parse_timestamp(timestamp)
    if moment is None:
        return Checked(Verdict.BAD_TIMESTAMP)
    if outside_window(moment, now_ms, window_s):
        return Checked(Verdict.STALE_TIMESTAMP)
    if not keys:
        return Checked(Verdict.NO_KEY)
    candidates = [params]
    if "+" in raw_query:
        candidates.append(parse_query(raw_query, keep_plus=True))
    for candidate in candidates:
        sent = candidate.get(TOKEN, "")
        key = matching_key(keys, candidate, sent) if candidate.get(TIMESTAMP) == timestamp else None
        if key is not None:
            return Checked(Verdict.VERIFIED, key, candidate, sent)
    return Checked(Verdict.BAD_SIGNATURE)


__all__ = [  # the formula lives in the core (V1 basic and V1 Kit share it); V1 basic verifies with it
    "TIMESTAMP",
    "TOKEN",
    "Checked",
    "auth_token",
    "format_timestamp",
    "joined",
    "parse_query",
    "parse_timestamp",
    "verify",
]
