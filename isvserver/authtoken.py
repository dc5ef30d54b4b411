"""The `authToken` KooGallery's V1 interfaces share (spec §2.3 basic, §2.4 Kit): an HMAC-SHA256, keyed
with the access key followed by the call's `timeStamp`, over its parameters sorted by name in Java's
(UTF-16) order and joined `k1=v1&k2=v2&…`, in standard Base64; and the `yyyyMMddHHmmssSSS` UTC time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

TOKEN = "authToken"  # noqa: S105 (a parameter name)
TIMESTAMP = "timeStamp"
TIMESTAMP_FORMAT = re.compile(r"[0-9]{17}")
MAX_TOKEN_LENGTH = 128


def _java_order(name: str) -> bytes:
    """A sort key giving Java String.compareTo's order (UTF-16 code units)."""
    return name.encode("utf-16-be", errors="surrogatepass")


def joined(params: Mapping[str, str]) -> str:
    """`k1=v1&k2=v2&…` of every parameter but authToken, sorted by name (ordinal)."""
    names = sorted((n for n in params if n != TOKEN), key=_java_order)
    return "&".join(f"{name}={params[name]}" for name in names)


def auth_token(key: str, params: Mapping[str, str]) -> str:
    """The authToken of these parameters, keyed with `key` + their timeStamp."""
    secret = (key + params.get(TIMESTAMP, "")).encode("utf-8")
    data = joined(params).encode("utf-8", errors="surrogatepass")
    return base64.b64encode(hmac.new(secret, data, hashlib.sha256).digest()).decode("ascii")


def matching_key(keys: Sequence[str], params: Mapping[str, str], token: str) -> str | None:
    """The key among `keys` whose authToken of `params` is `token` (constant-time compare), or None."""
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    received = token.encode("ascii")
    for key in keys:
        if hmac.compare_digest(auth_token(key, params).encode("ascii"), received):
            return key
    return None


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


def outside_window(moment: datetime, now_ms: float, window_s: int) -> bool:
    """Whether `moment` is more than `window_s` seconds from now (never, when `window_s` is 0)."""
    return bool(window_s) and abs(now_ms - moment.timestamp() * 1000) > window_s * 1000
