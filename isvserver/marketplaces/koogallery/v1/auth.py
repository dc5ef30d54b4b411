"""V1 request authentication (spec §2.3): the `authToken` of a GET's query string, and its freshness.

authToken = Base64(HMAC-SHA256(key = access key + timeStamp, data = k1=v1&k2=v2&…)) over every query
parameter but authToken, URL-decoded, sorted by name in Java's (UTF-16) order, the first value of each
name. A `+` the marketplace did not percent-encode is a space once decoded: when the raw query string
holds one and the decoded form fails, the form with `+` kept is tried.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, unquote_plus

from isvserver.freshness import Verdict

TOKEN = "authToken"  # noqa: S105 (a parameter name)
TIMESTAMP = "timeStamp"
TIMESTAMP_FORMAT = re.compile(r"[0-9]{17}")  # yyyyMMddHHmmssSSS, UTC
MAX_TOKEN_LENGTH = 128

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


def _java_order(name: str) -> bytes:
    """A sort key giving Java String.compareTo's order (UTF-16 code units)."""
    return name.encode("utf-16-be", errors="surrogatepass")


def joined(params: Mapping[str, str]) -> str:
    """`k1=v1&k2=v2&…` of every parameter but authToken, sorted by name (ordinal)."""
    names = sorted((n for n in params if n != TOKEN), key=_java_order)
    return "&".join(f"{name}={params[name]}" for name in names)


def auth_token(key: str, params: Mapping[str, str]) -> str:
    """The authToken the marketplace sends for these (decoded) parameters, keyed with `key` + timeStamp."""
    secret = (key + params.get(TIMESTAMP, "")).encode("utf-8")
    data = joined(params).encode("utf-8", errors="surrogatepass")
    return base64.b64encode(hmac.new(secret, data, hashlib.sha256).digest()).decode("ascii")


def parse_timestamp(value: str) -> datetime | None:
    """A `yyyyMMddHHmmssSSS` UTC timeStamp as an aware datetime; None when it is not one."""
    if not value.isascii() or not TIMESTAMP_FORMAT.fullmatch(value):
        return None
    try:
        moment = datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment.replace(microsecond=int(value[14:]) * 1000)


def format_timestamp(moment: datetime) -> str:
    """`yyyyMMddHHmmssSSS` of an aware datetime, in UTC."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%d%H%M%S") + f"{moment.microsecond // 1000:03d}"


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


def _matches(keys: Sequence[str], params: Mapping[str, str], token: str) -> str | None:
    received = token.encode("ascii")
    for key in keys:
        if hmac.compare_digest(auth_token(key, params).encode("ascii"), received):
            return key
    return None


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
    if window_s and abs(now_ms - moment.timestamp() * 1000) > window_s * 1000:
        return Checked(Verdict.STALE_TIMESTAMP)
    if not keys:
        return Checked(Verdict.NO_KEY)
    candidates = [params]
    if "+" in raw_query:
        candidates.append(parse_query(raw_query, keep_plus=True))
    for candidate in candidates:
        sent = candidate.get(TOKEN, "")
        if len(sent) > MAX_TOKEN_LENGTH or not sent.isascii() or candidate.get(TIMESTAMP) != timestamp:
            continue
        key = _matches(keys, candidate, sent)
        if key is not None:
            return Checked(Verdict.VERIFIED, key, candidate, sent)
    return Checked(Verdict.BAD_SIGNATURE)
