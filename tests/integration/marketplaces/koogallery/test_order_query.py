"""The order-query client and `isvserver order` against a local marketplace that checks AK/SK signatures.

The marketplace here is a real HTTP server on 127.0.0.1 that implements the order-query contract of
spec §10 (tests/support/order_api.py): it verifies the `SDK-HMAC-SHA256` signature with its own small
implementation (not the signer under test), rejects stale `X-Sdk-Date`s, and serves the documented mock
orders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from isvserver.marketplaces.koogallery.orders import (
    DEFAULT_API_URL,
    QUERY_PATH,
    OrderQueryClient,
    OrderQueryError,
    client_from_env,
)
from isvserver.marketplaces.koogallery.orders_cli import order as order_command
from isvserver.settings import SettingsError

from support.order_api import AK, BUYER, MOCK_ORDERS, PRODUCT, SK, WRONG_SK, mock_order, serving
from support.order_api import OrderApi as Marketplace

# --- the marketplace -------------------------------------------------------------------------------


@pytest.fixture
def marketplace() -> Iterator[Marketplace]:
    """The marketplace, serving in a thread for one test."""
    with serving() as server:
        yield server


@pytest.fixture
def client(marketplace: Marketplace) -> OrderQueryClient:
    """A client with the right AK/SK."""
    return OrderQueryClient(marketplace.url, AK, SK, timeout=5)


# --- the client ------------------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", sorted(MOCK_ORDERS))
def test_each_mock_order_parses(client: OrderQueryClient, order_id: str) -> None:
    order_type, mode, period_type, period_number, expire, linear = MOCK_ORDERS[order_id]
    found = client.query(order_id)
    assert (found.order_id, found.order_type) == (order_id, order_type)
    assert found.create_time == datetime(2024, 3, 17, 6, 42, 37, tzinfo=UTC)
    [line] = found.lines
    assert line.order_line_id == f"{order_id}-000001"
    assert (line.charging_mode, line.period_type, line.period_number) == (mode, period_type, period_number)
    if expire is None:
        assert line.expire_time is None
    else:
        assert line.expire_time == datetime.strptime(expire[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    [product] = line.products
    assert (product.product_id, product.sku_code, product.product_name) == tuple(PRODUCT.values())
    assert product.linear_value == linear
    assert found.buyer is not None
    assert (found.buyer.customer_id, found.buyer.user_name) == (BUYER["customerId"], BUYER["userName"])
    assert BUYER["customerName"] not in repr(found)


def test_extend_params_are_kept(client: OrderQueryClient) -> None:
    assert client.query("MOCKPERIODYEARNEW").extend_params == (("emailDomainName", "acme.example"),)


def test_one_order_line_is_asked_for_in_the_signed_query(
    client: OrderQueryClient, marketplace: Marketplace
) -> None:
    found = client.query("MOCKONDEMAND", "MOCKONDEMAND-000001")
    assert [line.order_line_id for line in found.lines] == ["MOCKONDEMAND-000001"]
    [request] = marketplace.received
    assert request["target"] == f"{QUERY_PATH}?orderId=MOCKONDEMAND&orderLineId=MOCKONDEMAND-000001"
    authorization = request["headers"]["Authorization"]
    assert authorization.startswith(f"SDK-HMAC-SHA256 Access={AK}, SignedHeaders=")
    assert "host;x-sdk-date" in authorization
    assert SK not in json.dumps(request)


def test_the_spec_success_code_is_accepted_too(client: OrderQueryClient, marketplace: Marketplace) -> None:
    marketplace.success_code = "000000"
    assert client.query("MOCKONETIMENEW").order_id == "MOCKONETIMENEW"


def test_a_wrong_sk_is_rejected_without_showing_it(marketplace: Marketplace) -> None:
    with pytest.raises(OrderQueryError) as caught:
        OrderQueryClient(marketplace.url, AK, WRONG_SK, timeout=5).query("MOCKPERIODYEARNEW")
    message = str(caught.value)
    assert "HTTP 401, APIG.0301" in message
    assert "verify aksk signature fail" in message
    assert "ISV_MARKET_SK" in message  # what to check
    assert WRONG_SK not in message
    assert marketplace.received[0]["headers"]["Authorization"].split("Signature=")[1] not in message
    assert (caught.value.status, caught.value.result_code) == (401, "APIG.0301")


def test_an_unknown_ak_is_rejected(marketplace: Marketplace) -> None:
    with pytest.raises(OrderQueryError, match=r"HTTP 401, MKT\.0154: Illegal token"):
        OrderQueryClient(marketplace.url, "UNKNOWNAK", SK, timeout=5).query("MOCKPERIODYEARNEW")


def test_a_stale_sdk_date_is_rejected(marketplace: Marketplace) -> None:
    late = OrderQueryClient(
        marketplace.url, AK, SK, timeout=5, clock=lambda: datetime.now(UTC) - timedelta(minutes=20)
    )
    with pytest.raises(OrderQueryError, match="x-sdk-date expired"):
        late.query("MOCKPERIODYEARNEW")
    slightly = OrderQueryClient(
        marketplace.url, AK, SK, timeout=5, clock=lambda: datetime.now(UTC) - timedelta(minutes=5)
    )
    assert slightly.query("MOCKPERIODYEARNEW").order_id == "MOCKPERIODYEARNEW"


def test_an_unknown_order_is_the_contracts_error(client: OrderQueryClient) -> None:
    with pytest.raises(OrderQueryError) as caught:
        client.query("CS2403171442NOSUCH")
    assert (caught.value.result_code, caught.value.status) == ("MKT.0100", 500)
    assert str(caught.value) == (
        "order query for CS2403171442NOSUCH failed: "
        "HTTP 500, MKT.0100: Failure of input parameter: no such order"
    )


def test_an_unknown_order_line_is_the_contracts_error(client: OrderQueryClient) -> None:
    with pytest.raises(OrderQueryError, match="no such order line"):
        client.query("MOCKONDEMAND", "MOCKONDEMAND-000002")


@pytest.mark.parametrize("bad", ["", "x" * 65, "a\nb"])
def test_ids_are_checked_before_anything_is_sent(
    client: OrderQueryClient, marketplace: Marketplace, bad: str
) -> None:
    with pytest.raises(ValueError, match="orderId must be 1 to 64 printable characters"):
        client.query(bad)
    assert marketplace.received == []


def test_no_answer_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(OrderQueryError) as caught:
            OrderQueryClient(f"http://127.0.0.1:{port}", AK, SK, timeout=0.3).query("MOCKONDEMAND")
    assert time.monotonic() - started < 3
    assert str(caught.value) == f"order query to 127.0.0.1:{port} failed: no answer within 0.3 s"


def test_nothing_listening_is_reported() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with pytest.raises(OrderQueryError, match=f"order query to 127.0.0.1:{port} failed: .*refused"):
        OrderQueryClient(f"http://127.0.0.1:{port}", AK, SK, timeout=2).query("MOCKONDEMAND")


def test_a_reply_that_is_not_json_is_reported(client: OrderQueryClient, marketplace: Marketplace) -> None:
    marketplace.canned = (502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>")
    with pytest.raises(OrderQueryError, match=r"HTTP 502, the reply is not a JSON object"):
        client.query("MOCKONDEMAND")


def test_a_redirect_is_not_followed(client: OrderQueryClient, marketplace: Marketplace) -> None:
    marketplace.canned = (302, {"Location": f"{marketplace.url}/elsewhere"}, b"")
    with pytest.raises(OrderQueryError, match="HTTP 302"):
        client.query("MOCKONDEMAND")
    assert len(marketplace.received) == 1  # the signed headers went nowhere else


def test_a_malformed_order_is_reported(client: OrderQueryClient, marketplace: Marketplace) -> None:
    info = mock_order("MOCKONDEMAND")
    info["orderLine"][0]["expireTime"] = "2024-03-17"
    reply = {"resultCode": "MKT.0000", "resultMsg": "Success", "orderInfo": info}
    marketplace.canned = (200, {"Content-Type": "application/json"}, json.dumps(reply).encode())
    with pytest.raises(OrderQueryError, match="invalid reply: expireTime is not a yyyyMMddHHmmss"):
        client.query("MOCKONDEMAND")
    del info["orderLine"]
    marketplace.canned = (200, {}, json.dumps(reply).encode())
    with pytest.raises(OrderQueryError, match="invalid reply: orderLine is missing"):
        client.query("MOCKONDEMAND")


def test_logs_carry_neither_secrets_nor_buyer(
    client: OrderQueryClient, marketplace: Marketplace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client.query("MOCKPERIODYEARNEW")
    with pytest.raises(OrderQueryError):
        OrderQueryClient(marketplace.url, AK, WRONG_SK, timeout=5).query("MOCKPERIODYEARNEW")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "order query MOCKPERIODYEARNEW: MKT.0000, 1 line(s)" in logged
    assert "order query MOCKPERIODYEARNEW failed: HTTP 401, APIG.0301" in logged
    signatures = [r["headers"]["Authorization"].split("Signature=")[1] for r in marketplace.received]
    for secret in (SK, WRONG_SK, *signatures, *BUYER.values()):
        assert secret not in logged


# --- settings --------------------------------------------------------------------------------------


def test_client_from_env_needs_both_keys(tmp_path: Path) -> None:
    assert client_from_env({}) is None
    assert client_from_env({"ISV_MARKET_AK": AK}) is None
    sk_file = tmp_path / "sk"
    sk_file.write_text(SK + "\n", encoding="utf-8")
    client = client_from_env({"ISV_MARKET_AK": AK, "ISV_MARKET_SK_FILE": str(sk_file)})
    assert client is not None
    assert client.api_url == DEFAULT_API_URL
    assert SK not in repr(client)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISV_MARKET_API_URL": "http://mkt.example.com"}, "ISV_MARKET_API_URL must be https://"),
        ({"ISV_MARKET_API_URL": "ftp://mkt.example.com"}, "ISV_MARKET_API_URL must be an https:// URL"),
        ({"ISV_MARKET_API_URL": "https://u:secretpw@mkt.example.com"}, "without credentials"),
        ({"ISV_MARKET_SK": "has space inside"}, "ISV_MARKET_SK must be printable ASCII without spaces"),
        ({"ISV_MARKET_SK_FILE": "/nonexistent/sk"}, "ISV_MARKET_SK_FILE: cannot read"),
    ],
)
def test_invalid_settings_are_named_without_their_value(env: dict[str, str], message: str) -> None:
    base = {
        name: value
        for name, value in (("ISV_MARKET_AK", AK), ("ISV_MARKET_SK", SK))
        if f"{name}_FILE" not in env
    }
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        client_from_env({**base, **env})
    assert "secretpw" not in str(caught.value)
    assert "has space" not in str(caught.value)


# --- isvserver order -------------------------------------------------------------------------------


def run_order(env: dict[str, str], *args: str) -> Result:
    """`isvserver order ARGS` in-process with exactly `env` as its ISV_* settings."""
    isolated: dict[str, str | None] = {name: None for name in os.environ if name.startswith("ISV_")}
    isolated.update(env)
    return CliRunner().invoke(order_command, list(args), env=isolated, catch_exceptions=False)


@pytest.fixture
def market_env(marketplace: Marketplace) -> dict[str, str]:
    """The settings that point `isvserver order` at the local marketplace."""
    return {"ISV_MARKET_API_URL": marketplace.url, "ISV_MARKET_AK": AK, "ISV_MARKET_SK": SK}


def test_cli_prints_the_order_and_masks_the_buyer(market_env: dict[str, str]) -> None:
    result = run_order(market_env, "MOCKPERIODYEARNEW")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "orderId         MOCKPERIODYEARNEW",
        "orderType       NEW",
        "createTime      2024-03-17T06:42:37Z",
        "customerId      ***",
        "customerName    ***",
        "userId          ***",
        "userName        ***",
        "extendParam     emailDomainName=acme.example",
        "orderLine       MOCKPERIODYEARNEW-000001",
        "  chargingMode  PERIOD",
        "  periodType    year",
        "  periodNumber  1",
        "  expireTime    2025-03-17T15:59:59Z",
        "  productId     OFFI821356904436965376",
        "  skuCode       3a7c6e28-5f0e-4a4b-9a34-91d0d1f7e3b2",
        "  productName   isvserver 测试商品",
        "  linearValue   10",
    ]


def test_cli_shows_the_buyer_when_asked(market_env: dict[str, str]) -> None:
    result = run_order(market_env, "MOCKONDEMAND", "MOCKONDEMAND-000001", "--show-buyer")
    assert result.exit_code == 0, result.output
    assert "customerName    Acme 买家 Ltd" in result.output
    assert "userName        alice.buyer" in result.output


def test_cli_json(market_env: dict[str, str]) -> None:
    result = run_order(market_env, "MOCKONDEMANDPKG", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["buyerInfo"] == dict.fromkeys(BUYER, "***")
    assert document["orderLine"] == [
        {
            "orderLineId": "MOCKONDEMANDPKG-000001",
            "chargingMode": "ON_DEMAND_PKG",
            "expireTime": "2025-03-17T15:59:59Z",
            "periodType": None,
            "periodNumber": None,
            "productInfo": [{**PRODUCT, "linearValue": 100}],
        }
    ]
    shown = json.loads(run_order(market_env, "MOCKONDEMANDPKG", "--json", "--show-buyer").output)
    assert shown["buyerInfo"] == BUYER


def test_cli_without_keys_says_which_are_missing(marketplace: Marketplace) -> None:
    result = run_order({"ISV_MARKET_API_URL": marketplace.url, "ISV_MARKET_AK": AK}, "MOCKONDEMAND")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert "ISV_MARKET_AK and ISV_MARKET_SK" in line
    assert line.endswith("not set: ISV_MARKET_SK")
    assert marketplace.received == []
    assert run_order({}, "MOCKONDEMAND").output.rstrip().endswith("not set: ISV_MARKET_AK, ISV_MARKET_SK")


def test_cli_failure_is_one_line_without_the_sk(market_env: dict[str, str]) -> None:
    result = run_order({**market_env, "ISV_MARKET_SK": WRONG_SK}, "MOCKONDEMAND")
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: order query for MOCKONDEMAND failed: HTTP 401, APIG.0301")
    assert WRONG_SK not in result.output


def test_cli_unknown_order(market_env: dict[str, str]) -> None:
    result = run_order(market_env, "NOSUCHORDER")
    assert result.exit_code == 1
    assert "MKT.0100" in result.output
    assert BUYER["userName"] not in result.output
