"""`POST /v1/usage`: the seller's product reports usage records into the ledger (Bearer product token).

Body `{"records": [{"instanceId", "meteringSn", "beginTime", "endTime", "value", "relatedInstanceId"?}]}`,
1 to 1000 records. The reply says, per record in the order sent, accepted / duplicate / refused with a
code and a reason; a 200 means every accepted record is stored (one transaction), any other status
that nothing was.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client import Counter

from isvserver import usage
from isvserver.calls import MalformedBody, read_body
from isvserver.db import held_for_call
from isvserver.parts.product_api.tokens import authenticate
from isvserver.runtime import runtime
from isvserver.usage import MAX_RECORDS, Report

MAX_BODY_BYTES = 1 << 20  # 1000 records of the longest fields fit well within it
RECORD_FIELDS = ("instanceId", "meteringSn", "beginTime", "endTime", "value", "relatedInstanceId")

RECORDS = Counter("isv_usage_reported", "Usage records the product reported, by status", ["status"])
log = logging.getLogger("isvserver.usage")

bp = Blueprint("product_api", __name__)


def problem(status: int, message: str, **headers: str) -> Response:
    """An error answer: nothing was stored."""
    response = jsonify(error=message, status=status)
    response.status_code = status
    response.headers.update(headers)
    return response


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _records(raw: bytes) -> list[Any] | str:
    """The body's record list, or why the body is not one."""
    try:
        body = json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return "the body is not JSON (UTF-8)"
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        return 'the body must be a JSON object {"records": [...]}'
    if not 1 <= len(records) <= MAX_RECORDS:
        return f"records must hold 1 to {MAX_RECORDS} records (it holds {len(records)})"
    return records


def _report(item: Any) -> Report:
    if not isinstance(item, dict):
        return Report(None, None, None, None, None)
    return Report(*(item.get(name) for name in RECORD_FIELDS))


@bp.route("/usage", methods=["POST"], provide_automatic_options=False)
def post_usage() -> Response:
    """Record usage: per record accepted, duplicate or refused (with a code and a reason)."""
    settings = runtime().settings
    request.max_content_length = MAX_BODY_BYTES + 1
    with held_for_call():
        try:
            caller = authenticate(request.headers.get("Authorization"))
        except Exception:
            log.exception("usage call: the token store cannot be read")
            return problem(503, "the ledger cannot be reached; nothing was stored, send again")
        if caller is None:
            return problem(
                401,
                "a valid product token is required (Authorization: Bearer …)",
                **{"WWW-Authenticate": 'Bearer realm="isvserver"'},
            )
        try:
            raw = read_body(MAX_BODY_BYTES)
        except MalformedBody:
            return problem(400, "the body could not be read")
        if raw is None:
            return problem(413, f"the body is over {MAX_BODY_BYTES} bytes")
        records = _records(raw)
        if isinstance(records, str):
            return problem(400, records)
        try:
            outcomes = usage.record_safely(settings, [_report(item) for item in records], "http", caller.name)
        except Exception:
            log.exception("usage call token=%s: the ledger cannot be written", caller.name)
            return problem(503, "the ledger cannot be written; nothing was stored, send again")
    counts = {status.value: 0 for status in usage.Status}
    for outcome in outcomes:
        counts[outcome.status.value] += 1
    for status, count in counts.items():
        if count:
            RECORDS.labels(status).inc(count)
    log.info(
        "usage call token=%s records=%d accepted=%d duplicate=%d refused=%d",
        caller.name, len(outcomes), counts["accepted"], counts["duplicate"], counts["refused"],
    )  # fmt: skip
    return jsonify(**counts, records=[outcome.as_json() for outcome in outcomes])
