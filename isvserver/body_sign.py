"""The `Body-Sign` reply header every KooGallery generation uses (spec §3), and the marketplace's side of
a signed call: POST exact bytes, read the reply, check its Body-Sign."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

BODY_SIGN_FORMAT = re.compile(r'sign_type="HMAC-SHA256", signature="([A-Za-z0-9+/=]{44})"')
JSON_HEADERS = {"Content-Type": "application/json;charset=utf8", "Accept": "application/json"}


def _digest(key: str, body: bytes) -> bytes:
    return base64.b64encode(hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest())


def body_sign(key: str, body: bytes) -> str:
    """The `Body-Sign` header value for exactly these response bytes."""
    return f'sign_type="HMAC-SHA256", signature="{_digest(key, body).decode("ascii")}"'


def body_sign_valid(key: str, body: bytes, header: str | None) -> bool:
    """Whether a `Body-Sign` header value signs exactly these bytes with this key (constant time)."""
    match = BODY_SIGN_FORMAT.fullmatch(header or "")
    if match is None:
        return False
    return hmac.compare_digest(_digest(key, body), match.group(1).encode("ascii"))


@dataclass(frozen=True)
class Answer:
    """A reply as received: HTTP status, raw bytes, parsed JSON and whether Body-Sign checked out."""

    status: int
    raw: bytes
    body_sign_ok: bool
    json: dict[str, Any] | None = field(default=None)

    @property
    def code(self) -> str | None:
        """The resultCode, if the reply had one."""
        return (self.json or {}).get("resultCode")


def post(
    url: str, payload: bytes, key: str, headers: Mapping[str, str] | None = None, timeout: float = 20.0
) -> Answer:
    """POST `payload` to an http(s) `url` as the marketplace does; the reply, Body-Sign checked with `key`."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("the URL must be http:// or https://")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=payload, method="POST", headers={**JSON_HEADERS, **(headers or {})}
    )
    return exchange(request, key, timeout)


def exchange(request: urllib.request.Request, key: str, timeout: float = 20.0) -> Answer:
    """Send `request` (its URL's scheme checked by the caller); the reply, Body-Sign checked with `key`."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status, raw, header = response.status, response.read(), response.headers.get("Body-Sign")
    except urllib.error.HTTPError as error:
        status, raw, header = error.code, error.read(), error.headers.get("Body-Sign")
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return Answer(
        status, raw, body_sign_valid(key, raw, header), parsed if isinstance(parsed, dict) else None
    )
