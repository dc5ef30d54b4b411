"""Huawei API-Gateway AK/SK signing (`SDK-HMAC-SHA256`) of the seller's outbound calls, spec §10."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_HEADER = "X-Sdk-Date"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def _encode(text: str) -> str:
    """Percent-encode everything but the unreserved characters A-Z a-z 0-9 - _ . ~ (UTF-8, upper-case hex)."""
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """The path decoded, each segment re-encoded, always ending with "/"."""
    encoded = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(query: str) -> str:
    """The query's pairs decoded, sorted by name then value, re-encoded as `name=value` joined by "&"."""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name:
            pairs.append((unquote(name), unquote(value)))
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in sorted(pairs))


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """(`name:value\\n` lines, `name;name`) over the headers by lower-case name, values trimmed."""
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in lowered:
            raise ValueError(f"header {name!r} is given twice")
        lowered[key] = value.strip()
    names = sorted(lowered)
    return "".join(f"{name}:{lowered[name]}\n" for name in names), ";".join(names)


def body_hash(body: bytes | str) -> str:
    """Hex SHA-256 of the body (a str is taken as UTF-8)."""
    return hashlib.sha256(body.encode("utf-8") if isinstance(body, str) else body).hexdigest()


def canonical_request(method: str, url: str, headers: Mapping[str, str], body: bytes | str) -> str:
    """The canonical request over every header in `headers` (which must hold Host and X-Sdk-Date)."""
    parts = urlsplit(url)
    header_lines, signed = canonical_headers(headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(parts.path),
            canonical_query(parts.query),
            header_lines,
            signed,
            body_hash(body),
        )
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    """`SDK-HMAC-SHA256\\n<X-Sdk-Date>\\n<hex sha256 of the canonical request>`."""
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def signature(sk: str, to_sign: str) -> str:
    """Hex HMAC-SHA256 of the string to sign, keyed with the secret key."""
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | str,
    ak: str,
    sk: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to send: `headers` plus Host, X-Sdk-Date (from `now` unless given) and Authorization."""
    # Every header passed in is signed: pass exactly the headers that will be sent. A naive `now` is UTC.
    signed = {name: value for name, value in headers.items() if name.lower() != "authorization"}
    present = {name.lower() for name in signed}
    if "host" not in present:
        host = urlsplit(url).netloc.rpartition("@")[2]
        if not host:
            raise ValueError("the URL has no host")
        signed["Host"] = host
    if DATE_HEADER.lower() not in present:
        moment = now or datetime.now(UTC)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        signed[DATE_HEADER] = moment.strftime(DATE_FORMAT)
    sdk_date = next(value for name, value in signed.items() if name.lower() == DATE_HEADER.lower())
    canonical = canonical_request(method, url, signed, body)
    _, signed_names = canonical_headers(signed)
    value = signature(sk, string_to_sign(canonical, sdk_date.strip()))
    signed["Authorization"] = f"{ALGORITHM} Access={ak}, SignedHeaders={signed_names}, Signature={value}"
    return signed
