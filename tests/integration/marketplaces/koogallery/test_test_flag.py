"""testFlag: "0", "1", the numbers 0 and 1, or absent; anything else is an invalid request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isvserver.db import connected
from isvserver.marketplaces.koogallery import handlers
from isvserver.models import CallLog, Instance

NEW = {"activity": "newInstance", "orderId": "CSF1", "orderLineId": "CSF1-000001", "businessId": "b-f1"}
ABSENT = object()


def send(marketplace, flag: Any) -> tuple[Any, dict[str, Any]]:
    """newInstance with this testFlag (or none); the answer and the call's callback_log row."""
    body = dict(NEW) if flag is ABSENT else {**NEW, "testFlag": flag}
    answer = marketplace.send(json.dumps(body, separators=(",", ":")).encode())
    with connected():
        [row] = CallLog.select().dicts()
    return answer, row


def instances() -> int:
    with connected():
        return Instance.select().count()


@pytest.mark.parametrize("flag", ["1", 1], ids=["string", "number"])
def test_a_debug_flag_as_string_or_number_is_a_debug_call(marketplace, flag: Any) -> None:
    """Answered with the debug instance id, nothing created, test_flag in the call log."""
    answer, row = send(marketplace, flag)
    assert answer.code == "000000"
    assert answer.json["instanceId"] == handlers.test_instance_id(NEW["orderId"], NEW["orderLineId"])
    assert instances() == 0
    assert row["test_flag"] is True


@pytest.mark.parametrize("flag", ["0", 0, ABSENT, None], ids=["string", "number", "absent", "null"])
def test_a_real_flag_as_string_or_number_or_none_is_a_real_call(marketplace, flag: Any) -> None:
    """The instance is created and the call is not logged as a debug call."""
    answer, row = send(marketplace, flag)
    assert answer.code == "000000"
    assert not answer.json["instanceId"].startswith("test-")
    assert instances() == 1
    assert row["test_flag"] is False


@pytest.mark.parametrize("flag", [True, False, "", "2", 2, -1, 1.0, 0.0, "01", " 1", "true", [1], {"v": 1}])
def test_any_other_flag_is_an_invalid_request(marketplace, flag: Any) -> None:
    """000002 naming testFlag, nothing created, not logged as a debug call."""
    answer, row = send(marketplace, flag)
    assert answer.code == "000002"
    assert "testFlag" in answer.json["resultMsg"]
    assert instances() == 0
    assert row["test_flag"] is False
