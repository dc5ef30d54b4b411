"""Every bad input is a signed 000002: broken bodies, deep nesting, blank fields, unsafe ids, HEAD."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from isvserver.db import connected
from isvserver.marketplaces.koogallery.marketplace import signed_query
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.models import CallLog, Instance

from support.harness import ACCESS_KEY, NOTIFY_KEY


def last_call() -> CallLog:
    with connected():
        return CallLog.select().order_by(CallLog.id.desc()).get()


def instance_count() -> int:
    with connected():
        return Instance.select().count()


class BrokenStream(io.RawIOBase):
    """A request body whose chunked encoding breaks after a few bytes (as gunicorn's parser raises)."""

    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.sent:
            self.sent = True
            buffer[:2] = b'{"'
            return 2
        raise OSError("Invalid chunk size")


def test_a_body_that_breaks_while_read_is_a_signed_000002(client, settings) -> None:
    path = settings.of("koogallery").produce_path
    query = signed_query(ACCESS_KEY, b"{}")
    response = client.post(
        f"{path}?{query}",
        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
        environ_overrides={"wsgi.input": BrokenStream(), "wsgi.input_terminated": True},
    )
    assert response.status_code == 200
    assert response.get_json()["resultCode"] == "000002"
    assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
    assert last_call().verdict == "malformed_body"


DEEP = 40_000  # deeper than Python's recursion limit, still within the 64 kB body limit


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"activity":"newInstance","x":' + b"[" * DEEP + b"]" * DEEP + b"}", id="recursion"),
        pytest.param(
            b'{"activity":"newInstance","x":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}", id="40 levels"
        ),
    ],
)
def test_a_deeply_nested_body_is_a_signed_000002(marketplace, raw: bytes) -> None:
    answer = marketplace.send(raw)
    assert answer.code == "000002", answer.json


@pytest.mark.parametrize("depth", [40, 20_000])
def test_a_deeply_nested_product_info_string_is_a_signed_000002(marketplace, depth: int) -> None:
    marketplace.new_instance("CSDEEP")
    info = "[" * depth + "]" * depth
    answer = marketplace.send({"activity": "changeInstanceCheck", "instanceId": "biz-1", "productInfo": info})
    assert answer.code == "000002", answer.json
    assert "productInfo" in answer.json["resultMsg"]


BLANK_CASES = [
    ("newInstance", {"orderId": "CS1", "orderLineId": "CS1-1", "businessId": "b-1"}, "orderId"),
    ("newInstance", {"orderId": "CS1", "orderLineId": "CS1-1", "businessId": "b-1"}, "businessId"),
    ("refreshInstance", {"instanceId": "i-1", "orderId": "CS1", "orderLineId": "CS1-1",
                         "scene": "RENEWAL", "expireTime": "20300101000000"}, "orderLineId"),
    ("updateInstanceStatus", {"instanceId": "i-1", "status": "FREEZE"}, "instanceId"),
    ("upgradeInstance", {"instanceId": "i-1", "orderId": "CS1", "orderLineId": "CS1-1"}, "orderId"),
    ("orderNotify", {"orderId": "CS1", "orderLineId": "CS1-1"}, "orderLineId"),
]  # fmt: skip


@pytest.mark.parametrize("blank", [" ", "\t\n  "])
@pytest.mark.parametrize(("activity", "fields", "name"), BLANK_CASES)
def test_a_whitespace_only_mandatory_field_is_000002(
    marketplace, activity: str, fields: dict[str, str], name: str, blank: str
) -> None:
    key = NOTIFY_KEY if activity == "orderNotify" else ACCESS_KEY
    answer = marketplace.send({"activity": activity, **fields, name: blank}, key)
    assert answer.code == "000002", answer.json
    assert name in answer.json["resultMsg"]
    assert instance_count() == 0


@pytest.mark.parametrize("business_id", [".", "..", " .. "])
def test_a_dot_segment_business_id_never_becomes_an_instance_id(marketplace, business_id: str) -> None:
    answer = marketplace.new_instance("CSDOT", business_id=business_id)
    assert answer.code == "000002", answer.json
    assert "businessId" in answer.json["resultMsg"]
    assert instance_count() == 0


@pytest.mark.parametrize("field", ["orderId", "orderLineId"])
def test_dot_segment_order_ids_are_000002(marketplace, field: str) -> None:
    body = {
        "activity": "newInstance",
        "orderId": "CS9",
        "orderLineId": "CS9-1",
        "businessId": "b-9",
        field: "..",
    }
    assert marketplace.send(body).code == "000002"


@pytest.mark.parametrize("ids", ["..", "ok-1,.", "a/b", "a b", "x?y=1"])
def test_instance_ids_unsafe_in_a_url_are_000002(marketplace, ids: str) -> None:
    assert marketplace.query(ids).code == "000002"
    refresh = {"activity": "updateInstanceStatus", "instanceId": ids.split(",")[-1], "status": "FREEZE"}
    assert marketplace.send(refresh).code == "000002"


def test_a_business_id_unusable_as_an_instance_id_gets_a_uuid(marketplace) -> None:
    answer = marketplace.new_instance("CSUUID", business_id="a/b?c")
    assert answer.code == "000000"
    assert len(answer.json["instanceId"]) == 36


@pytest.mark.parametrize("path", ["/saasproduce", "/saasproduce/", "/nowhere"])
def test_head_is_405_with_no_body_sign(client, path: str) -> None:
    response = client.head(path)
    assert response.status_code in (404, 405)
    assert response.data == b""
    assert "Body-Sign" not in response.headers


def test_a_method_no_generation_uses_is_405_with_a_signed_body(client) -> None:
    # GET is KooGallery V1 on the same path (its own signed answers: tests of koogallery/test_v1_*).
    response = client.put("/saasproduce")
    assert response.status_code == 405
    assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
    assert json.loads(response.data)["resultCode"] == "000002"


@pytest.mark.parametrize(
    ("problem", "status", "verdict"),
    [("too_large", 413, "body_too_large"), ("malformed", 200, "malformed_body")],
)
def test_what_the_web_worker_found_in_the_framing_is_answered_without_reading(
    client, settings, problem: str, status: int, verdict: str
) -> None:
    """The worker's mark (isvserver/web/wire.py) decides; the body stream is never read."""
    path = settings.of("koogallery").produce_path
    body = b'{"activity":"queryInstance","instanceId":"x"}'
    stream = BrokenStream()
    response = client.post(
        f"{path}?{signed_query(ACCESS_KEY, body)}",
        data=body,
        content_type="application/json",
        environ_overrides={"wsgi.input": stream, "isvserver.body_problem": problem},
    )
    assert response.status_code == status
    assert response.get_json()["resultCode"] == "000002"
    assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
    assert last_call().verdict == verdict
    assert not stream.sent
