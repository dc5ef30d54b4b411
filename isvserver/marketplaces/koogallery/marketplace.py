"""The marketplace's side of the V2 basic interface: sign a call, send it, check the signed reply."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from isvserver.body_sign import Answer, post
from isvserver.marketplaces.koogallery.signing import request_signature


def signed_query(key: str, payload: bytes, timestamp: str | None = None, nonce: str | None = None) -> str:
    """`signature=…&timestamp=…&nonce=…` for `payload`, with a fresh ms timestamp and nonce by default."""
    timestamp = timestamp or str(int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(32).upper()
    signature = request_signature(key, payload, nonce, timestamp)
    return urlencode({"signature": signature, "timestamp": timestamp, "nonce": nonce})


def encode_body(body: dict[str, Any]) -> bytes:
    """The body as the marketplace sends it: compact, keys sorted, raw UTF-8."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def call(
    url: str, key: str, body: dict[str, Any] | bytes, timeout: float = 20.0, query: str | None = None
) -> Answer:
    """POST a signed call to `url` (a produce endpoint) and check the reply's Body-Sign with `key`."""
    payload = body if isinstance(body, bytes) else encode_body(body)
    query = query or signed_query(key, payload)
    return post(f"{url}{'&' if '?' in url else '?'}{query}", payload, key, timeout=timeout)
