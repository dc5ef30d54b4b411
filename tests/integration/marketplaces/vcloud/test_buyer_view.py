"""`GET /vcloud/v1/orders/{orderId}`: the order's state and frontEndUrl; access details only sealed to the
order's publicKey; 404 for an order never seen."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from flask import Flask
from nacl.public import PrivateKey, SealedBox

from isvserver import db, lifecycle
from isvserver.marketplaces.vcloud.sealing import BASE58, public_key
from isvserver.models import Instance

from support.harness import FRONTEND_TEMPLATE
from support.vcloud_platform import VCloudPlatform

Poll = Callable[..., int]


def base58(raw: bytes) -> str:
    number, text = int.from_bytes(raw, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = BASE58[digit] + text
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + text


def app_info(app: Flask, instance_id: str):
    with db.connected():
        instance = Instance.get(Instance.instance_id == instance_id)
    return lifecycle.app_info(instance, app.extensions["isvserver"].settings.data_keys)


@pytest.mark.parametrize(
    "encode",
    [base58, lambda raw: base64.b64encode(raw).decode(), lambda raw: raw.hex()],
    ids=["base58", "base64", "hex"],
)
def test_the_buyer_gets_state_url_and_access_sealed_to_the_orders_key(
    app: Flask, platform: VCloudPlatform, run_poll: Poll, encode: Callable[[bytes], str]
) -> None:
    buyer = PrivateKey.generate()
    order = platform.add_order(publicKey=encode(bytes(buyer.public_key)))
    run_poll()

    response = app.test_client().get(f"/vcloud/v1/orders/{order['id']}")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    info = app_info(app, order["id"])
    assert body["orderId"] == order["id"]
    assert (body["state"], body["status"]) == ("active", "OrderPaid")
    assert body["frontEndUrl"] == FRONTEND_TEMPLATE.format(instance_id=order["id"]) == info.front_end_url
    opened = json.loads(SealedBox(buyer).decrypt(base64.b64decode(body["access"]["sealed"])))
    assert opened == {"userName": info.user_name, "password": info.password}
    assert info.password not in response.get_data(as_text=True)


def test_without_a_public_key_no_access_details_are_given(
    app: Flask, platform: VCloudPlatform, run_poll: Poll
) -> None:
    order = platform.add_order(publicKey="")
    odd = platform.add_order(publicKey="not-a-key-0OIl")
    run_poll()
    for order_id in (order["id"], odd["id"]):
        body = app.test_client().get(f"/vcloud/v1/orders/{order_id}").get_json()
        assert body["state"] == "active"
        assert "access" not in body


def test_an_order_waiting_for_payment_shows_its_state(
    app: Flask, platform: VCloudPlatform, run_poll: Poll
) -> None:
    order = platform.add_order(status="OrderPending", PaidTS=0)
    run_poll()
    body = app.test_client().get(f"/vcloud/v1/orders/{order['id']}").get_json()
    assert (body["state"], body["frontEndUrl"]) == ("waiting", None)


def test_an_order_never_seen_is_404(app: Flask) -> None:
    response = app.test_client().get("/vcloud/v1/orders/no-such-order")
    assert response.status_code == 404
    assert response.get_json() == {"error": "no such order", "status": 404}


@pytest.mark.parametrize("order_id", ["x%00y", "x" * 5000, "%E2%80%AE"])
def test_hostile_order_ids_are_404(app: Flask, order_id: str) -> None:
    response = app.test_client().get(f"/vcloud/v1/orders/{order_id}")
    assert response.status_code == 404
    assert response.get_json() == {"error": "no such order", "status": 404}


def test_other_methods_get_the_adapters_error(app: Flask) -> None:
    response = app.test_client().post("/vcloud/v1/orders/x")
    assert response.status_code == 405
    assert response.get_json() == {"error": "method not allowed", "status": 405}


def test_public_keys_of_the_wrong_size_or_alphabet_are_refused() -> None:
    key = bytes(PrivateKey.generate().public_key)
    assert public_key(base58(key)) is not None
    assert public_key(key[:31].hex()) is None and public_key(base64.b64encode(key[:30]).decode()) is None
    assert public_key("") is None and public_key("é" * 44) is None and public_key("x" * 300) is None


def test_the_openapi_document_describes_the_buyers_view(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").get_json()
    operation = document["paths"]["/vcloud/v1/orders/{orderId}"]["get"]
    assert set(operation["responses"]) == {"200", "404"}
    assert (
        "sealed" in document["components"]["schemas"]["VCloudOrderOut"]["properties"]["access"]["properties"]
    )
