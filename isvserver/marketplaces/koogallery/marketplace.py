"""The marketplace's side of the V2 basic interface: sign a call, send it, check the signed reply."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from isvserver.marketplaces.koogallery.signing import body_sign_valid, request_signature


def signed_query(key: str, payload: bytes, timestamp: str | None = None, nonce: str | None = None) -> str:
    """`signature=…&timestamp=…&nonce=…` for `payload`, with a fresh ms timestamp and nonce by default."""
    timestamp = timestamp or str(int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(32).upper()
    signature = request_signature(key, payload, nonce, timestamp)
    return urlencode({"signature": signature, "timestamp": timestamp, "nonce": nonce})


def encode_body(body: dict[str, Any]) -> bytes:
    """The body as the marketplace sends it: compact, keys sorted, raw UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


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


def call(
    url: str, key: str, body: dict[str, Any] | bytes, timeout: float = 20.0, query: str | None = None
) -> Answer:
    """POST a signed call to `url` (a produce endpoint) and check the reply's Body-Sign with `key`."""
    payload = body if isinstance(body, bytes) else encode_body(body)
    query = query or signed_query(key, payload)
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("the URL must be http:// or https://")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        f"{url}{'&' if '?' in url else '?'}{query}",
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json;charset=utf8", "Accept": "application/json"},
    )
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
