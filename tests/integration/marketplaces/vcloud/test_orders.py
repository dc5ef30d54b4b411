"""Following V Cloud orders (spec §2) against the local platform, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask

from isvserver import db
from isvserver.marketplaces.vcloud.client import PlatformError
from isvserver.marketplaces.vcloud.models import VCloudCursor, VCloudOrder
from isvserver.marketplaces.vcloud.poller import JOB, OVERLAP_S
from isvserver.models import Instance, InstanceEvent

from support.vcloud_platform import VCloudPlatform

Poll = Callable[..., int]


def instances() -> dict[str, str]:
    with db.connected():
        return dict(
            Instance.select(Instance.instance_id, Instance.state)
            .where(Instance.marketplace == "vcloud")
            .tuples()
        )


def events(instance_id: str) -> list[str]:
    with db.connected():
        return [
            e.kind
            for e in InstanceEvent.select()
            .join(Instance)
            .where(Instance.instance_id == instance_id)
            .order_by(InstanceEvent.id)
        ]


def order_row(order_id: str) -> VCloudOrder:
    with db.connected():
        return VCloudOrder.get(VCloudOrder.order_id == order_id)


def cursor() -> VCloudCursor:
    with db.connected():
        return VCloudCursor.get()


def test_a_paid_order_becomes_one_instance_with_the_order_id(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    order = platform.add_order()

    assert run_poll() == 1
    assert run_poll() == 1  # read again (the overlap): nothing changes

    assert instances() == {order["id"]: "active"}
    assert events(order["id"]) == ["created", "provisioned", "renewed"]
    with db.connected():
        instance = Instance.get(Instance.instance_id == order["id"])
    assert instance.expire_at == datetime.fromtimestamp(order["endAt"], UTC).replace(tzinfo=None)
    assert (instance.order_id, instance.creation_key) == (order["id"], f"order:{order['id']}")
    row = order_row(order["id"])
    assert (row.status, row.outcome, row.instance_id) == ("OrderPaid", "active", order["id"])
    orders_requests = platform.requests("/api/v1/order")
    assert all(
        f"recipient={row and 'AT'}" in r["query"] or "recipient=AT" in r["query"] for r in orders_requests
    )


def test_an_unpaid_order_waits_then_its_payment_creates_the_instance(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    order = platform.add_order(status="OrderPending", PaidTS=0, serviceStatus="", endAt=0)
    run_poll()
    assert instances() == {}
    assert order_row(order["id"]).outcome == "waiting"

    platform.update_order(order["id"], status="OrderPaid", PaidTS=int(time.time()))
    run_poll()
    assert instances() == {order["id"]: "active"}


def test_the_instance_is_frozen_when_end_at_passes_though_the_platform_says_nothing(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    now = int(time.time())
    order = platform.add_order(endAt=now + 100)
    run_poll(now)
    assert instances() == {order["id"]: "active"}

    run_poll(now + 101)  # the order is not listed as changed: the stored endAt decides

    assert instances() == {order["id"]: "frozen"}
    assert order_row(order["id"]).outcome == "frozen"
    assert events(order["id"])[-1] == "frozen"


@pytest.mark.parametrize(
    "change",
    [
        {"serviceStatus": "ServiceDone", "serviceDoneTS": 1},
        {"serviceStatus": "ServiceAbort", "serviceAbortTS": 1},
        {"refundTS": 1},
        {"status": "OrderRefunded"},
    ],
    ids=["done", "aborted", "refund-time", "refunded"],
)
def test_done_aborted_or_refunded_releases_the_instance(
    platform: VCloudPlatform, run_poll: Poll, change: dict[str, object]
) -> None:
    order = platform.add_order()
    run_poll()
    platform.update_order(order["id"], **change)

    run_poll()
    run_poll()

    assert instances() == {order["id"]: "released"}
    assert events(order["id"]).count("released") == 1


def test_an_order_first_seen_already_done_is_created_then_released(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    order = platform.add_order(status="OrderFiled", serviceStatus="ServiceDone")
    run_poll()
    assert instances() == {order["id"]: "released"}
    assert events(order["id"])[0] == "created"


def test_a_refund_before_payment_creates_nothing(platform: VCloudPlatform, run_poll: Poll) -> None:
    order = platform.add_order(status="OrderRefunded", PaidTS=0)
    run_poll()
    assert instances() == {}
    assert order_row(order["id"]).outcome == "waiting"


def test_unknown_statuses_are_stored_and_logged_once_never_acted_on(
    platform: VCloudPlatform, run_poll: Poll, caplog: pytest.LogCaptureFixture
) -> None:
    odd = platform.add_order(status="OrderDisputed")
    odd_service = platform.add_order(serviceStatus="ServiceSuspended")
    with caplog.at_level(logging.WARNING, logger="isvserver.vcloud"):
        run_poll()
        run_poll()

    assert instances() == {}
    assert (order_row(odd["id"]).status, order_row(odd["id"]).outcome) == ("OrderDisputed", "unknown_status")
    assert order_row(odd_service["id"]).service_status == "ServiceSuspended"
    warnings = [r.getMessage() for r in caplog.records if r.name == "isvserver.vcloud"]
    assert len([w for w in warnings if odd["id"] in w]) == 1
    assert "unknown status 'OrderDisputed'" in warnings[0] or "unknown status 'OrderDisputed'" in warnings[1]


def test_fields_of_the_wrong_type_are_stored_as_unreadable(platform: VCloudPlatform, run_poll: Poll) -> None:
    order = platform.add_order(endAt="tomorrow")
    run_poll()
    row = order_row(order["id"])
    assert (row.outcome, row.note) == ("unreadable", "unreadable field(s): endAt")
    assert instances() == {}


def test_an_outage_delays_the_poll_and_loses_nothing(platform: VCloudPlatform, run_poll: Poll) -> None:
    orders = [platform.add_order() for _ in range(5)]  # three pages of two
    platform.fail_next(100, status=503)

    with pytest.raises(PlatformError, match=r"^V Cloud GET /api/v1/order: HTTP 503$"):
        run_poll()
    assert instances() == {}
    assert len(platform.requests("/api/v1/order")) == 2  # tried again once (ISV_VCLOUD_RETRIES=1)

    platform.fail_next(0)
    run_poll()
    assert sorted(instances()) == sorted(o["id"] for o in orders)


def _stop_after(platform: VCloudPlatform, orders_read: int, then: Callable[[], None]) -> Callable[[], None]:
    """Have the poller run `then` once it has followed `orders_read` orders; returns the undo."""
    import isvserver.marketplaces.vcloud.poller as poller

    real = poller.follow
    seen: list[str] = []

    def follow(rt, order, sweep, now_s):  # type: ignore[no-untyped-def]
        result = real(rt, order, sweep, now_s)
        seen.append(order.order_id)
        if len(seen) == orders_read:
            then()
        return result

    poller.follow = follow

    def undo() -> None:
        poller.follow = real

    return undo


def test_a_page_that_fails_mid_sweep_is_read_again_from_there(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    orders = [platform.add_order() for _ in range(5)]
    undo = _stop_after(platform, 2, lambda: platform.fail_next(100, status=502))
    try:
        with pytest.raises(PlatformError, match="HTTP 502"):
            run_poll()
    finally:
        undo()
    assert sorted(instances()) == sorted(o["id"] for o in orders[:2])
    assert cursor().page == 2  # stored: the next poll starts there

    platform.fail_next(0)
    before = len(platform.requests("/api/v1/order"))
    run_poll()
    pages = [r["query"] for r in platform.requests("/api/v1/order")[before:]]
    assert "current=2" in pages[0]
    assert sorted(instances()) == sorted(o["id"] for o in orders)
    with db.connected():
        assert Instance.select().count() == 5
        assert InstanceEvent.select().where(InstanceEvent.kind == "created").count() == 5


def test_a_listing_that_shifts_under_the_sweep_is_swept_again_from_the_same_start(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    orders = [platform.add_order(updatedAt=1000 + n) for n in range(5)]
    # After page 1 the platform changes its first order: it moves to the end, the rest shift left,
    # and page 2 skips the third order.
    undo = _stop_after(platform, 2, lambda: platform.update_order(orders[0]["id"], updatedAt=5000))
    try:
        run_poll()
    finally:
        undo()
    assert orders[2]["id"] not in instances()
    assert (cursor().since, cursor().sweep_clean) == (0, False)  # startFrom stays

    run_poll()
    assert sorted(instances()) == sorted(o["id"] for o in orders)
    assert cursor().since > 0


def test_orders_without_a_usable_id_are_skipped_and_keep_start_from(
    platform: VCloudPlatform, run_poll: Poll, caplog: pytest.LogCaptureFixture
) -> None:
    good = platform.add_order()
    for bad in (None, "", 7, "x\x00y", "x" * 201):
        platform.add_order(id=bad)
    with caplog.at_level(logging.WARNING, logger="isvserver.vcloud"):
        run_poll()
    assert instances() == {good["id"]: "active"}
    with db.connected():
        assert VCloudOrder.select().count() == 1
    assert (cursor().since, cursor().sweep_clean) == (0, False)  # read again at the next poll
    assert "orders without a usable id skipped" in caplog.text


def test_start_from_moves_on_after_a_clean_sweep_only(platform: VCloudPlatform, run_poll: Poll) -> None:
    now = int(time.time())
    platform.add_order()
    run_poll(now)
    assert cursor().since == now - OVERLAP_S
    assert cursor().sweeps == 1
    queries = [r["query"] for r in platform.requests("/api/v1/order")]
    run_poll(now + 1000)
    later = [r["query"] for r in platform.requests("/api/v1/order")][len(queries) :]
    assert f"startFrom={now - OVERLAP_S}" in later[0]
    assert cursor().since == now + 1000 - OVERLAP_S


def test_the_job_is_registered_at_the_poll_interval(app: Flask) -> None:
    jobs = app.extensions["isvserver"].jobs
    assert jobs.periodic[JOB].seconds == 30.0


def test_an_order_not_listed_again_is_frozen_when_its_end_at_passes(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    now = int(time.time())
    order = platform.add_order(updatedAt=now, endAt=now + 1500)
    run_poll(now)
    run_poll(now + 1000)  # startFrom moves past the order's updatedAt after this sweep
    before = len(platform.requests("/api/v1/order"))

    assert run_poll(now + 2000) == 0  # not listed any more…
    assert f"startFrom={now + 1000 - OVERLAP_S}" in platform.requests("/api/v1/order")[before]["query"]
    assert instances() == {order["id"]: "frozen"}  # …and frozen all the same
    assert order_row(order["id"]).outcome == "frozen"


def test_an_end_at_moved_later_unfreezes(platform: VCloudPlatform, run_poll: Poll) -> None:
    now = int(time.time())
    order = platform.add_order(endAt=now + 100)
    run_poll(now + 200)
    assert instances() == {order["id"]: "frozen"}

    platform.update_order(order["id"], endAt=now + 5000)
    run_poll(now + 300)

    assert instances() == {order["id"]: "active"}
    assert events(order["id"])[-2:] == ["renewed", "unfrozen"]


def test_an_order_id_taken_by_another_creation_creates_nothing_and_says_so(
    app: Flask, platform: VCloudPlatform, run_poll: Poll, caplog: pytest.LogCaptureFixture
) -> None:
    order = platform.add_order()
    with app.app_context(), db.connected():
        app.extensions["isvserver"].lifecycle.create("koogallery", "order:other", order["id"])
    with caplog.at_level(logging.WARNING, logger="isvserver.vcloud"):
        run_poll()
        run_poll()

    row = order_row(order["id"])
    assert (row.outcome, row.instance_id) == ("id_conflict", None)
    with db.connected():
        assert Instance.select().count() == 1
    assert len([r for r in caplog.records if "another instance has this order's id" in r.getMessage()]) == 1


def test_an_order_id_outside_the_charset_gets_a_derived_id_and_is_kept_beside_it(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    from isvserver.lifecycle import external_id_of

    order = platform.add_order(id="order/2024 #7")
    run_poll()
    [(instance_id, state)] = instances().items()
    assert state == "active" and instance_id != order["id"]
    with db.connected():
        assert external_id_of(instance_id) == "order/2024 #7"
    assert order_row("order/2024 #7").instance_id == instance_id


@pytest.mark.parametrize(
    ("field", "value"), [("status", 7), ("PaidTS", True), ("refundTS", -1), ("service", "x" * 300)]
)
def test_each_unreadable_field_is_named(
    platform: VCloudPlatform, run_poll: Poll, field: str, value: object
) -> None:
    order = platform.add_order(**{field: value})
    run_poll()
    assert order_row(order["id"]).note == f"unreadable field(s): {field}"


def test_an_order_read_again_unchanged_asks_the_lifecycle_nothing(
    platform: VCloudPlatform, run_poll: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = int(time.time())
    active = platform.add_order(endAt=now + 100)
    odd = platform.add_order(status="OrderDisputed")
    run_poll(now)

    def refuse(*args: object) -> None:
        raise AssertionError("the lifecycle was asked again")

    monkeypatch.setattr("isvserver.marketplaces.vcloud.orders._act", refuse)
    assert run_poll(now + 1) == 2
    assert cursor().sweeps == 2
    monkeypatch.undo()

    run_poll(now + 101)  # time alone moves the active one: it is not settled any more
    assert instances() == {active["id"]: "frozen"}
    assert order_row(odd["id"]).outcome == "unknown_status"


def test_a_poll_that_dies_mid_page_reads_that_page_again_and_repeats_nothing(
    platform: VCloudPlatform, run_poll: Poll
) -> None:
    orders = [platform.add_order() for _ in range(5)]

    def die() -> None:
        raise KeyboardInterrupt  # the process goes away after the page's first order

    undo = _stop_after(platform, 3, die)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_poll()
    finally:
        undo()
    assert sorted(instances()) == sorted(o["id"] for o in orders[:3])
    assert cursor().page == 2

    run_poll()

    assert sorted(instances()) == sorted(o["id"] for o in orders)
    with db.connected():
        assert InstanceEvent.select().where(InstanceEvent.kind == "created").count() == 5
        assert InstanceEvent.select().where(InstanceEvent.kind == "renewed").count() == 5
