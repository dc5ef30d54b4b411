"""The marketplace's side of V1: sign a GET (spec §2.3), send it, check the reply's Body-Sign, decrypt
the appInfo credentials (spec §4)."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from isvserver.body_sign import Answer, exchange
from isvserver.marketplaces.koogallery.credentials import decrypt_credential
from isvserver.marketplaces.koogallery.v1.auth import TIMESTAMP, TOKEN, auth_token, format_timestamp


def signed_query(key: str, params: dict[str, str], timestamp: str | None = None) -> str:
    """The query string of a V1 call: every parameter percent-encoded, timeStamp and authToken added."""
    full = {**params, TIMESTAMP: timestamp or format_timestamp(datetime.now(UTC))}
    full[TOKEN] = auth_token(key, full)
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in full.items())


def get(url: str, key: str, query: str, timeout: float = 20.0) -> Answer:
    """GET `url?query` as the marketplace does; the reply, its Body-Sign checked with `key`."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("the URL must be http:// or https://")
    request = urllib.request.Request(f"{url}{'&' if '?' in url else '?'}{query}", method="GET")  # noqa: S310
    return exchange(request, key, timeout)


def call(url: str, key: str, params: dict[str, str], timeout: float = 20.0) -> Answer:
    """A signed V1 call of `params` (activity included) to `url`."""
    return get(url, key, signed_query(key, params), timeout)


def decrypted_app_info(app_info: dict[str, Any], key: str, encrypt_type: int) -> dict[str, Any]:
    """An appInfo with userName and password decrypted (ValueError when one does not decrypt)."""
    return {
        name: decrypt_credential(key, value, encrypt_type) if name in ("userName", "password") else value
        for name, value in app_info.items()
    }
