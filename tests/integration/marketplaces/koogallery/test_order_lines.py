"""Order lines fetched from a local order-query API that checks AK/SK signatures, stored on SQLite and
PostgreSQL: plaintext columns, the document sealed, retries with backoff, data-key rotation, and what
`isvserver instances show` prints of them."""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from click.testing import Result

from isvserver import db
from isvserver.cli import instances, reseal
from isvserver.marketplaces.koogallery import order_lines
from isvserver.marketplaces.koogallery.models import OrderLineRecord
from isvserver.marketplaces.koogallery.orders import OrderQueryClient
from isvserver.models import Instance, InstanceEvent, utcnow
from isvserver.sealing import seal, sealed_with_first, unseal
from isvserver.settings import Settings, load_settings

from support.cli import invoke_cli
from support.harness import DATA_KEY
from support.order_api import AK, BUYER, PRODUCT, SK, WRONG_SK, OrderApi, mock_order, serving

# The operator's command groups, as the tests call them.
admin = SimpleNamespace(instances=instances.instances)

KOO = "koogallery"
KEY_B = "0dkqMcI6nHuWJ6nEvS3h8GZ4a4nJm1C9tLz0Q2pX7yE="
KEY_UNKNOWN = "u5aC0bS2L0mDkX9fR4o1HqWn3ZyT7eVgJ8iP6sQ2w0k="
YEAR = ("MOCKPERIODYEARNEW", "MOCKPERIODYEARNEW-000001")
RENEW = ("MOCKMONTYRENEW", "MOCKMONTYRENEW-000001")
ONDEMAND = ("MOCKONDEMAND", "MOCKONDEMAND-000001")


@pytest.fixture
def order_api() -> Iterator[OrderApi]:
    """The marketplace's order-query API on a loopback port."""
    with serving() as server:
        yield server


@pytest.fixture
def market(order_api: OrderApi) -> OrderQueryClient:
    """A client with the right AK/SK."""
    return OrderQueryClient(order_api.url, AK, SK, timeout=5)


@pytest.fixture(autouse=True)
def bound(settings: Settings) -> Iterator[None]:
    """The models bound to the test database, no connection left open."""
    database = db.bind(settings.database_url)
    yield
    db.close_all(database)


def settings_with(env: dict[str, str], **overrides: str) -> Settings:
    return load_settings({**env, **overrides})


def row(order_id: str, order_line_id: str) -> OrderLineRecord:
    with db.connected():
        return OrderLineRecord.get(
            (OrderLineRecord.order_id == order_id) & (OrderLineRecord.order_line_id == order_line_id)
        )


def row_count() -> int:
    with db.connected():
        return OrderLineRecord.select().count()


def dead_end() -> OrderQueryClient:
    """A client for a port where nothing listens."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    return OrderQueryClient(f"http://127.0.0.1:{port}", AK, SK, timeout=2)


def seconds_until(moment: datetime) -> float:
    return (moment - utcnow()).total_seconds()


def fetch_backing_off(settings: Settings, client: OrderQueryClient, low: float, high: float) -> str:
    """fetch(YEAR) with a failing client, checking the next attempt is `low` to `high` seconds later."""
    before = utcnow()
    status = order_lines.fetch(settings, KOO, *YEAR, client)
    after = utcnow()
    moment = row(*YEAR).next_attempt_at
    assert before + timedelta(seconds=low) <= moment <= after + timedelta(seconds=high)
    return status


def canned_order(order_api: OrderApi, info: dict) -> None:
    """Make the API answer every (correctly signed) query with this order."""
    reply = {"resultCode": "MKT.0000", "resultMsg": "Success", "orderInfo": info}
    order_api.canned = (200, {"Content-Type": "application/json"}, json.dumps(reply).encode())


# --- fetch ----------------------------------------------------------------------------------------------


def test_fetch_stores_the_line_in_columns_and_the_whole_document_sealed(
    settings: Settings, market: OrderQueryClient, order_api: OrderApi
) -> None:
    assert order_lines.fetch(settings, KOO, *YEAR, market) == "fetched"

    stored = row(*YEAR)
    assert (stored.status, stored.attempts, stored.last_error) == ("fetched", 0, None)
    assert (stored.order_type, stored.product_id, stored.sku_code) == (
        "NEW", PRODUCT["productId"], PRODUCT["skuCode"]
    )  # fmt: skip
    assert (stored.charging_mode, stored.period_type, stored.period_number) == ("PERIOD", "year", 1)
    assert stored.expire_at == datetime(2025, 3, 17, 15, 59, 59)
    assert abs(seconds_until(stored.fetched_at)) < 60
    [request] = order_api.received
    assert request["target"].endswith("?orderId=MOCKPERIODYEARNEW&orderLineId=MOCKPERIODYEARNEW-000001")

    for value in (*BUYER.values(), "alice", "Acme"):
        assert value not in stored.details_sealed
    assert order_lines.details(KOO, *YEAR, DATA_KEY) == {
        "orderId": "MOCKPERIODYEARNEW",
        "orderType": "NEW",
        "createTime": "2024-03-17T06:42:37Z",
        "buyerInfo": BUYER,
        "extendParams": [{"name": "emailDomainName", "value": "acme.example"}],
        "orderLine": [
            {
                "orderLineId": "MOCKPERIODYEARNEW-000001",
                "chargingMode": "PERIOD",
                "expireTime": "2025-03-17T15:59:59Z",
                "periodType": "year",
                "periodNumber": 1,
                "productInfo": [{**PRODUCT, "linearValue": 10}],
            }
        ],
    }


def test_the_document_holds_only_the_line_asked_for(
    settings: Settings, market: OrderQueryClient, order_api: OrderApi
) -> None:
    info = mock_order("MOCKONDEMAND")
    other = {**info["orderLine"][0], "orderLineId": "MOCKONDEMAND-000002", "chargingMode": "ONE_TIME"}
    info["orderLine"] = [other, info["orderLine"][0]]
    canned_order(order_api, info)

    assert order_lines.fetch(settings, KOO, *ONDEMAND, market) == "fetched"

    assert row(*ONDEMAND).charging_mode == "ON_DEMAND"
    document = order_lines.details(KOO, *ONDEMAND, DATA_KEY)
    assert [line["orderLineId"] for line in document["orderLine"]] == ["MOCKONDEMAND-000001"]


def test_fetching_again_refreshes_the_line(
    settings: Settings, market: OrderQueryClient, order_api: OrderApi
) -> None:
    assert order_lines.fetch(settings, KOO, *RENEW, market) == "fetched"
    first = row(*RENEW)
    renewed = mock_order("MOCKMONTYRENEW")
    renewed["orderLine"][0].update(expireTime="20241017155959", periodNumber="6")
    canned_order(order_api, renewed)

    assert order_lines.fetch(settings, KOO, *RENEW, market) == "fetched"

    again = row(*RENEW)
    assert row_count() == 1
    assert (first.period_number, first.expire_at) == (3, datetime(2024, 7, 17, 15, 59, 59))
    assert (again.period_number, again.expire_at) == (6, datetime(2024, 10, 17, 15, 59, 59))
    assert again.details_sealed != first.details_sealed
    assert order_lines.details(KOO, *RENEW, DATA_KEY)["orderLine"][0]["periodNumber"] == 6


def test_without_ak_sk_the_fetch_is_skipped_with_one_log_line(
    settings: Settings, order_api: OrderApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="isvserver")

    assert order_lines.fetch(settings, KOO, *YEAR, None) == "skipped"

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "INFO",
            "order details skipped order=MOCKPERIODYEARNEW/MOCKPERIODYEARNEW-000001: "
            "ISV_MARKET_AK and ISV_MARKET_SK are not set",
        )
    ]
    stored = row(*YEAR)
    assert (stored.status, stored.attempts, stored.details_sealed) == ("skipped", 0, None)
    assert stored.sku_code is None
    assert order_lines.details(KOO, *YEAR, DATA_KEY) is None
    assert order_lines.due() == []
    assert order_api.received == []


def test_without_ak_sk_details_fetched_before_are_kept(settings: Settings, market: OrderQueryClient) -> None:
    order_lines.fetch(settings, KOO, *YEAR, market)

    assert order_lines.fetch(settings, KOO, *YEAR, None) == "fetched"

    assert order_lines.details(KOO, *YEAR, DATA_KEY)["buyerInfo"] == BUYER


@pytest.mark.parametrize("failure", ["wrong_sk", "server_error"])
def test_a_failed_query_is_retried_later_without_leaking_secrets(
    settings: Settings, order_api: OrderApi, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    if failure == "wrong_sk":
        client = OrderQueryClient(order_api.url, AK, WRONG_SK, timeout=5)
        expected = "HTTP 401, APIG.0301"
    else:
        client = OrderQueryClient(order_api.url, AK, SK, timeout=5)
        order_api.canned = (503, {}, json.dumps({"resultCode": "MKT.0199", "resultMsg": "busy"}).encode())
        expected = "HTTP 503, MKT.0199: busy"
    caplog.set_level(logging.DEBUG, logger="isvserver")

    assert fetch_backing_off(settings, client, 1, 2) == "pending"  # ISV_JOB_RETRY_BASE_S 2, jitter to half

    stored = row(*YEAR)
    assert (stored.status, stored.attempts, stored.details_sealed) == ("pending", 1, None)
    assert expected in stored.last_error
    assert "\n" not in stored.last_error and len(stored.last_error) <= 255
    assert order_lines.due() == []
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "order details order=MOCKPERIODYEARNEW/MOCKPERIODYEARNEW-000001: attempt 1 of 8 failed" in logged
    signatures = [r["headers"]["Authorization"].split("Signature=")[1] for r in order_api.received]
    for secret in (SK, WRONG_SK, *signatures, *BUYER.values()):
        assert secret not in stored.last_error
        assert secret not in logged


def test_after_the_last_attempt_the_line_is_failed(env: dict[str, str]) -> None:
    settings = settings_with(env, ISV_JOB_MAX_ATTEMPTS="3", ISV_JOB_RETRY_BASE_S="2", ISV_JOB_RETRY_MAX_S="3")
    client = dead_end()

    assert fetch_backing_off(settings, client, 1, 2) == "pending"
    assert fetch_backing_off(settings, client, 1.5, 3) == "pending"  # 4 s, capped at ISV_JOB_RETRY_MAX_S
    assert order_lines.fetch(settings, KOO, *YEAR, client) == "failed"

    stored = row(*YEAR)
    assert (stored.status, stored.attempts) == ("failed", 3)
    assert re.fullmatch(r"order query to 127\.0\.0\.1:\d+ failed: .*refused.*", stored.last_error)
    with db.connected():
        OrderLineRecord.update(next_attempt_at=utcnow() - timedelta(hours=1)).execute()
    assert order_lines.due() == []


def test_an_order_without_the_line_fails_at_once(
    settings: Settings, market: OrderQueryClient, order_api: OrderApi
) -> None:
    canned_order(order_api, mock_order("MOCKONDEMAND"))

    assert order_lines.fetch(settings, KOO, "MOCKONDEMAND", "MOCKONDEMAND-000009", market) == "failed"

    stored = row("MOCKONDEMAND", "MOCKONDEMAND-000009")
    assert (stored.status, stored.attempts, stored.details_sealed) == ("failed", 1, None)
    assert stored.last_error == (
        "order MOCKONDEMAND has no order line MOCKONDEMAND-000009 (it has: MOCKONDEMAND-000001)"
    )


def test_the_apis_no_such_line_error_is_retried(settings: Settings, market: OrderQueryClient) -> None:
    """The marketplace may not answer for a line it just notified; max attempts bound the retries."""
    assert order_lines.fetch(settings, KOO, "MOCKONDEMAND", "MOCKONDEMAND-000009", market) == "pending"

    assert (
        "MKT.0100: Failure of input parameter: no such order line"
        in row("MOCKONDEMAND", "MOCKONDEMAND-000009").last_error
    )


def test_invalid_ids_fail_at_once_without_a_query(
    settings: Settings, market: OrderQueryClient, order_api: OrderApi
) -> None:
    assert order_lines.fetch(settings, KOO, "MOCKONDEMAND", "MOCKONDEMAND-\x01", market) == "failed"

    stored = row("MOCKONDEMAND", "MOCKONDEMAND-\x01")
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert "orderLineId must be 1 to 64 printable characters" in stored.last_error
    with pytest.raises(ValueError, match="order_line_id is longer than 64 characters"):
        order_lines.fetch(settings, KOO, "MOCKONDEMAND", "x" * 65, market)
    assert row_count() == 1
    assert order_api.received == []


# --- want and due ---------------------------------------------------------------------------------------


def test_want_inserts_one_pending_row_and_leaves_existing_rows_alone(
    settings: Settings, market: OrderQueryClient
) -> None:
    order_lines.want(KOO, *YEAR)
    order_lines.want(KOO, *YEAR)

    assert row_count() == 1
    assert (row(*YEAR).status, row(*YEAR).attempts) == ("pending", 0)
    assert order_lines.due() == [(KOO, *YEAR)]

    order_lines.fetch(settings, KOO, *YEAR, market)
    with db.connected(), db.database.atomic():  # as the produce endpoint calls it
        order_lines.want(KOO, *YEAR)

    assert row_count() == 1
    assert row(*YEAR).status == "fetched"
    assert order_lines.due() == []


def test_due_lists_only_pending_lines_whose_time_has_come(
    settings: Settings, market: OrderQueryClient
) -> None:
    order_lines.want(KOO, *YEAR)  # due now
    order_lines.want(KOO, "OVERDUE", "OVERDUE-1")
    with db.connected():
        OrderLineRecord.update(next_attempt_at=utcnow() - timedelta(minutes=5)).where(
            OrderLineRecord.order_id == "OVERDUE"
        ).execute()
    order_lines.fetch(settings, KOO, "BACKINGOFF", "BACKINGOFF-1", dead_end())  # pending, later
    order_lines.fetch(settings, KOO, *ONDEMAND, market)  # fetched
    order_lines.fetch(settings, KOO, *RENEW, None)  # skipped
    order_lines.fetch(settings, KOO, "MOCKONDEMAND", "MOCKONDEMAND-\x01", market)  # failed
    with db.connected():
        OrderLineRecord.update(next_attempt_at=utcnow() - timedelta(hours=1)).where(
            OrderLineRecord.order_id != "OVERDUE"
        ).where(OrderLineRecord.status != "pending").execute()

    assert order_lines.due() == [(KOO, "OVERDUE", "OVERDUE-1"), (KOO, *YEAR)]
    assert order_lines.due(limit=1) == [(KOO, "OVERDUE", "OVERDUE-1")]


# --- data-key rotation ------------------------------------------------------------------------------------


def run_cli(env: dict[str, str], command: object, *args: str) -> Result:
    """An isvserver command in-process with exactly `env` as its ISV_* settings, the test binding kept."""
    return invoke_cli(env, command, *args)


def test_reseal_moves_order_details_to_the_first_key(
    env: dict[str, str], settings: Settings, market: OrderQueryClient
) -> None:
    order_lines.fetch(settings, KOO, *YEAR, market)
    order_lines.fetch(settings, KOO, *RENEW, market)
    before = {key: order_lines.details(KOO, *key, DATA_KEY) for key in (YEAR, RENEW)}

    result = run_cli({**env, "ISV_DATA_KEY": f"{KEY_B},{DATA_KEY}"}, reseal.rotate_data_key)

    assert result.exit_code == 0, result.output
    assert "order_line.details_sealed: 2 resealed, 0 already current, 0 unreadable\n" in result.output
    assert BUYER["userName"] not in result.output
    for key in (YEAR, RENEW):
        assert sealed_with_first(KEY_B.encode(), row(*key).details_sealed)
        assert order_lines.details(KOO, *key, KEY_B) == before[key]

    again = run_cli({**env, "ISV_DATA_KEY": f"{KEY_B},{DATA_KEY}"}, reseal.rotate_data_key)
    assert "order_line.details_sealed: 0 resealed, 2 already current, 0 unreadable\n" in again.output


def test_reseal_names_order_details_no_key_opens(
    env: dict[str, str], settings: Settings, market: OrderQueryClient
) -> None:
    order_lines.fetch(settings, KOO, *YEAR, market)
    lost = row(*YEAR)
    with db.connected():
        OrderLineRecord.update(details_sealed=seal(KEY_UNKNOWN.encode(), "{}")).execute()

    result = run_cli({**env, "ISV_DATA_KEY": f"{KEY_B},{DATA_KEY}"}, reseal.rotate_data_key)

    assert result.exit_code == 1
    assert (
        f"unreadable: order_line row {lost.id} (order_line_id MOCKPERIODYEARNEW-000001): "
        "no ISV_DATA_KEY key opens it; left as it is\n"
    ) in result.output
    assert unseal(KEY_UNKNOWN.encode(), row(*YEAR).details_sealed) == "{}"


# --- isvserver instances show ----------------------------------------------------------------------------


def table_rows(section: str) -> list[list[str]]:
    """The rows under the header of a plain table (cells split on runs of 2+ spaces)."""
    lines = [line for line in section.splitlines() if line.strip()]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


@pytest.fixture
def renewed_instance(settings: Settings, market: OrderQueryClient) -> Instance:
    """An instance bought with MOCKPERIODYEARNEW, renewed with MOCKMONTYRENEW, upgraded by a failing order."""
    with db.connected():
        instance = Instance.create(
            instance_id="inst-orders-1",
            marketplace=KOO,
            creation_key=f"order:{YEAR[0]}:{YEAR[1]}",
            order_id=YEAR[0],
            order_line_id=YEAR[1],
            business_id="biz-1",
            state="active",
        )
        for kind, key in (("created", YEAR), ("renewed", RENEW), ("upgraded", ("CSUPGRADE", "CSUPGRADE-1"))):
            InstanceEvent.create(instance=instance, kind=kind, order_id=key[0], order_line_id=key[1])
        InstanceEvent.create(instance=instance, kind="frozen")
    order_lines.fetch(settings, KOO, *YEAR, market)
    order_lines.fetch(settings, KOO, *RENEW, market)
    order_lines.fetch(settings, KOO, "CSUPGRADE", "CSUPGRADE-1", market)
    order_lines.fetch(settings, KOO, "OTHERORDER", "OTHERORDER-1", None)  # another instance's
    return instance


def test_for_instance_lists_its_own_line_then_its_renewals_and_upgrades(renewed_instance: Instance) -> None:
    found = order_lines.for_instance(renewed_instance)

    assert [(r.order_id, r.status) for r in found] == [
        ("MOCKPERIODYEARNEW", "fetched"),
        ("MOCKMONTYRENEW", "fetched"),
        ("CSUPGRADE", "pending"),
    ]


def test_instances_show_prints_order_details_with_the_buyer_masked(
    env: dict[str, str], renewed_instance: Instance
) -> None:
    sealed = [row(*key).details_sealed for key in (YEAR, RENEW)]

    result = run_cli(env, admin.instances, "show", "inst-orders-1")

    assert result.exit_code == 0, result.output
    output = result.output
    for secret in (*BUYER.values(), *sealed):
        assert secret not in output
    section = output.split("order details (3 order lines)\n")[1].split("\n\n")[0]
    assert section.splitlines()[0].split("  ")[0] == "order line"
    masked = "customerId=*** customerName=*** userId=*** userName=***"
    year, renew, upgrade = table_rows(section)
    assert year[:2] == ["MOCKPERIODYEARNEW/MOCKPERIODYEARNEW-000001", "fetched"]
    assert year[2:7] == [PRODUCT["skuCode"], PRODUCT["productId"], "PERIOD", "1 year", "2025-03-17 15:59:59"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", year[7])
    assert year[8:] == [masked, "-"]
    assert renew[1] == "fetched" and renew[5:7] == ["3 month", "2024-07-17 15:59:59"]
    assert upgrade[:2] == ["CSUPGRADE/CSUPGRADE-1", "pending, 1 failed attempt(s)"]
    assert "MKT.0100: Failure of input parameter: no such order" in upgrade[-1]

    shown = json.loads(run_cli(env, admin.instances, "show", "inst-orders-1", "--json").output)
    for secret in (*BUYER.values(), *sealed):
        assert secret not in json.dumps(shown)
    [first, _, pending] = shown["order_lines"]
    assert "details_sealed" not in first
    assert first["buyerInfo"] == dict.fromkeys(BUYER, "***")
    assert (first["status"], first["sku_code"], first["details"]) == ("fetched", PRODUCT["skuCode"], "stored")
    assert first["expire_at"] == "2025-03-17T15:59:59.000Z"
    assert (pending["status"], pending["attempts"], pending["details"], pending["buyerInfo"]) == (
        "pending", 1, None, None
    )  # fmt: skip


def test_instances_show_says_when_order_details_cannot_be_opened(
    env: dict[str, str], renewed_instance: Instance
) -> None:
    result = run_cli({**env, "ISV_DATA_KEY": KEY_B}, admin.instances, "show", "inst-orders-1")

    assert result.exit_code == 0, result.output
    section = result.output.split("order details (3 order lines)\n")[1]
    assert table_rows(section)[0][8] == "unreadable (check ISV_DATA_KEY)"
