"""KooGallery's side of the usage push (spec §10): the upload body, its signature, the answer read.

`POST {ISV_MARKET_API_URL}/api/mkp-openapi-public/global/v1/isv/usage-data` with headers `ts` (ms),
`nonce` and `signature = base64(HMAC_SHA256(basic key, "ts={ts}&nonce={nonce}&body={body}"))` over the
exact body bytes. The body is a pure function of the ledger's rows (record_time is when the record was
stored, never "now"), so every attempt of an upload sends the same bytes.

[decision] §10: the answer only says whether the upload was taken (`MKT.0000`, or the generic `000000`).
Should it carry per-record problems, they are read from `failed_records`
([{metering_sn, error_code, error_msg}]); a code saying the meteringSn was received before
(DUPLICATE_CODES) counts as taken.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from isvserver import calls
from isvserver.marketplaces.koogallery.config import BASIC
from isvserver.marketplaces.koogallery.orders import SUCCESS_CODES
from isvserver.models import UsageRecord
from isvserver.settings import Settings
from isvserver.usage import MAX_RECORDS, Metering, UploadAnswer

USAGE_PATH = "/api/mkp-openapi-public/global/v1/isv/usage-data"
DUPLICATE_CODES = frozenset({"MKT.0409", "DUPLICATE_METERING_SN"})
TIME_FORMAT = "%Y%m%dT%H%M%SZ"  # yyyyMMdd'T'HHmmss'Z'
MAX_REPLY_BYTES = 1 << 20


def wire_time(moment: datetime) -> str:
    """A naive UTC time as the usage API writes it."""
    return moment.strftime(TIME_FORMAT)


def usage_body(records: Sequence[UsageRecord]) -> bytes:
    """The upload's exact bytes: the records in the order given, each field from the ledger."""
    items = []
    for record in records:
        item: dict[str, Any] = {
            "instance_id": record.instance.instance_id,
            "record_time": wire_time(record.recorded_at),
            "begin_time": wire_time(record.begin_at),
            "end_time": wire_time(record.end_at),
            "usage_value": format(record.usage_value, "f"),
            "metering_sn": record.metering_sn,
        }
        if record.related_instance_id:
            item["relate_pkg_instance"] = record.related_instance_id
        items.append(item)
    return json.dumps({"usage_records": items}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(key: str, ts: str, nonce: str, body: bytes) -> str:
    """The `signature` header: base64(HMAC_SHA256(key, "ts=…&nonce=…&body=…"))."""
    message = f"ts={ts}&nonce={nonce}&body=".encode() + body
    return base64.b64encode(hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()).decode("ascii")


def read_answer(status: int, raw: bytes) -> UploadAnswer:
    """Whether the upload was taken, and the per-record problems the answer names (if any)."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return UploadAnswer(False, status, None, f"HTTP {status}, the answer is not a JSON object")
    code = parsed.get("resultCode")
    code = code if isinstance(code, str) else None
    message = parsed.get("resultMsg")
    message = message if isinstance(message, str) else ""
    if status != 200 or code not in SUCCESS_CODES:
        return UploadAnswer(False, status, code, f"HTTP {status} {code}: {message}")
    refused: dict[str, tuple[str, str]] = {}
    failed = parsed.get("failed_records")
    for item in failed if isinstance(failed, list) else ():
        if not isinstance(item, dict) or not isinstance(item.get("metering_sn"), str):
            continue
        error_code = str(item.get("error_code") or "unknown")
        if error_code not in DUPLICATE_CODES:
            refused[item["metering_sn"]] = (error_code, str(item.get("error_msg") or ""))
    return UploadAnswer(True, status, code, message, refused)


class UsageSender:
    """Uploads batches of usage records to KooGallery's usage API, signed with the basic key."""

    batch_size = MAX_RECORDS

    def __init__(
        self,
        api_url: str,
        key: Callable[[], str],
        timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = api_url + USAGE_PATH
        self.key = key
        self.timeout = timeout
        self.clock = clock

    def body(self, records: Sequence[UsageRecord]) -> bytes:
        """The upload's exact bytes."""
        return usage_body(records)

    def send(self, body: bytes) -> UploadAnswer:
        """One signed POST of `body` (fresh ts and nonce: headers, never the body)."""
        ts = str(int(self.clock() * 1000))
        nonce = secrets.token_hex(16)
        headers = {
            "Content-Type": "application/json;charset=utf8",
            "Accept": "application/json",
            "ts": ts,
            "nonce": nonce,
            "signature": signature(self.key(), ts, nonce, body),
        }
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (https/loopback)
                status, raw = response.status, response.read(MAX_REPLY_BYTES)
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read(MAX_REPLY_BYTES)
        return read_answer(status, raw)


def sender(settings: Settings) -> UsageSender:
    """The sender of these settings (the first active basic key signs)."""
    own = settings.of("koogallery")
    return UsageSender(own.market_api_url, lambda: calls.signing_keys(settings, BASIC.name)[0])


def max_age(settings: Settings) -> timedelta:
    """How old a record KooGallery still takes (ISV_USAGE_MAX_AGE_H)."""
    return timedelta(hours=settings.of("koogallery").usage_max_age_h)


METERING = Metering(max_age=max_age, sender=sender)
