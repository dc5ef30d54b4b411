"""Text that no column can hold as sent (NUL, lone surrogates) is escaped, then cut to its column."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from isvserver.db import connected
from isvserver.models import CallLog

NUL_IDS = "\u0000" * 64
SURROGATE_IDS = "\ud800" * 64


def rows() -> list[dict[str, Any]]:
    with connected():
        return list(CallLog.select().order_by(CallLog.id).dicts())


def wire(body: dict[str, Any]) -> bytes:
    """The body as JSON with every non-ASCII character (lone surrogates too) escaped."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@pytest.fixture
def warnings_logged(caplog, app):
    """caplog, attached to the `isvserver` logger too (the app set it not to propagate)."""
    logger = logging.getLogger("isvserver")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        pytest.param(NUL_IDS, "\\x00" * 16, id="64 NULs"),
        pytest.param(SURROGATE_IDS, ("\\ud800" * 11)[:64], id="64 lone surrogates"),
        pytest.param("\ud800" * 20, ("\\ud800" * 11)[:64], id="20 lone surrogates"),
    ],
)
@pytest.mark.parametrize("field", ["orderId", "orderLineId", "businessId"])
def test_unstorable_ids_at_the_length_limit_are_stored_within_their_column(
    marketplace, warnings_logged, field: str, sent: str, stored: str
) -> None:
    """The call is refused as invalid text (000002), not answered 000005, and its row is written."""
    body = {"activity": "newInstance", "orderId": "CS1", "orderLineId": "CS1-1", "businessId": "b-1"}
    body[field] = sent
    answer = marketplace.send(wire(body))
    assert answer.code == "000002"
    [row] = rows()
    column = {"orderId": "order_id", "orderLineId": "order_line_id", "businessId": "business_id"}[field]
    assert row[column] == stored
    assert row["request_id"] == answer.headers["X-Request-Id"]
    assert row["result_code"] == "000002"
    assert row["reason"] == "body holds a NUL character or a lone surrogate"
    assert not [r for r in warnings_logged.records if "callback log not written" in r.getMessage()]


def test_unstorable_activity_and_instance_ids_are_stored_within_their_columns(marketplace) -> None:
    """A NUL-filled activity (32) and a surrogate-filled instanceId list (text) fit once escaped."""
    answer = marketplace.send(wire({"activity": "\u0000" * 32, "instanceId": "\ud800" * 6500}))
    assert answer.code == "000002"
    [row] = rows()
    assert row["activity"] == "\\x00" * 8
    assert len(row["instance_id"]) == 6500
    assert row["instance_id"].startswith("\\ud800\\ud800")
