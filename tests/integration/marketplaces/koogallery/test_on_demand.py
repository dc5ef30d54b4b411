"""On-demand orders: one instance per product of an order line, marked on-demand by the order line's
charging mode, and the latest usage in queryInstance's usageInfo."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from flask import Flask

from isvserver import db, usage
from isvserver.marketplaces.koogallery import order_lines
from isvserver.marketplaces.koogallery.orders import OrderQueryClient
from isvserver.models import Instance, utcnow
from isvserver.settings import Settings, load_settings
from isvserver.usage import Report

from support.harness import Marketplace, instance_row
from support.order_api import AK, SK, OrderApi, serving

ONDEMAND = ("MOCKONDEMAND", "MOCKONDEMAND-000001")
PACKAGE = ("MOCKONDEMANDPKG", "MOCKONDEMANDPKG-000001")
YEAR = ("MOCKPERIODYEARNEW", "MOCKPERIODYEARNEW-000001")


@pytest.fixture
def order_api() -> Iterator[OrderApi]:
    with serving() as server:
        yield server


def new(marketplace: Marketplace, line: tuple[str, str], business_id: str, **extra: str) -> str:
    answer = marketplace.new_instance(line[0], line[1], business_id, **extra)
    assert answer.code == "000000", answer.json
    return answer.json["instanceId"]


def fetch(settings: Settings, order_api: OrderApi, line: tuple[str, str]) -> str:
    client = OrderQueryClient(order_api.url, AK, SK, timeout=5)
    return order_lines.fetch(settings, "koogallery", *line, client)


def test_a_product_id_makes_one_instance_per_product_of_an_order_line(
    app: Flask, marketplace: Marketplace
) -> None:
    first = new(marketplace, ONDEMAND, "biz-a", productId="OFFI-SMS")
    second = new(marketplace, ONDEMAND, "biz-b", productId="OFFI-MMS")
    again = new(marketplace, ONDEMAND, "biz-c", productId="OFFI-SMS")  # a resend: the same instance
    plain = new(marketplace, ONDEMAND, "biz-d")  # no productId: the order line's own key
    assert plain == new(marketplace, ONDEMAND, "biz-e")
    assert (first, second, again) == ("biz-a", "biz-b", "biz-a")
    assert len({first, second, plain}) == 3
    with db.connected():
        assert Instance.select().where(Instance.order_id == ONDEMAND[0]).count() == 3


def test_the_charging_mode_marks_the_order_lines_instances_on_demand(
    app: Flask, marketplace: Marketplace, settings: Settings, order_api: OrderApi
) -> None:
    before = new(marketplace, ONDEMAND, "od-1", productId="P1")  # created, then the line fetched
    yearly = new(marketplace, YEAR, "year-1")
    assert fetch(settings, order_api, ONDEMAND) == "fetched"
    assert fetch(settings, order_api, YEAR) == "fetched"
    assert fetch(settings, order_api, PACKAGE) == "fetched"  # fetched (orderNotify) before newInstance
    after = new(marketplace, PACKAGE, "pkg-1")
    assert instance_row(before).on_demand and instance_row(after).on_demand
    assert not instance_row(yearly).on_demand
    assert order_lines.mark_on_demand("koogallery", *ONDEMAND) == 0  # already marked


def test_query_instance_carries_the_latest_usage_of_on_demand_instances(
    env: dict[str, str], app: Flask, marketplace: Marketplace
) -> None:
    settings = load_settings(
        {**env, "ISV_USAGE_DASHBOARD_URL_TEMPLATE": "https://app.example.com/u/{instance_id}"}
    )
    metered = new(marketplace, ONDEMAND, "m-1", productId="P1")
    periodic = new(marketplace, YEAR, "p-1")
    usage.mark_on_demand(metered)
    end = utcnow().replace(microsecond=0) - timedelta(hours=1)
    reports = [
        Report(metered, "u-1", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", "1"),
        Report(metered, "u-2", (end - timedelta(hours=1)).isoformat(), end.isoformat(), "12.3456"),
        Report(
            metered, "u-3", (end - timedelta(hours=3)).isoformat(), (end - timedelta(hours=2)).isoformat(), 5
        ),
    ]
    (old,) = usage.record_many(settings, reports[:1], "cli", now=datetime(2026, 1, 1, 2))  # taken then
    assert old.status == "accepted"
    assert {o.status for o in usage.record_many(settings, reports[1:], "cli")} == {"accepted"}
    answer = marketplace.query(metered, periodic)
    assert answer.code == "000000"
    info = {item["instanceId"]: item for item in answer.json["info"]}
    assert "usageInfo" not in info[periodic]
    assert info[metered]["usageInfo"] == [
        {"usageValue": 12.3456, "statisticalTime": end.strftime("%Y%m%d%H%M%S") + "000"}
    ]
    assert b'"usageValue":12.3456' in answer.raw  # a JSON number, Double(12,4)


def test_the_dashboard_url_comes_from_its_template(env: dict[str, str], tmp_path, clock) -> None:
    from isvserver import create_app

    settings = load_settings(
        {**env, "ISV_USAGE_DASHBOARD_URL_TEMPLATE": "https://app.example.com/u/{instance_id}"}
    )
    application = create_app(settings, clock=clock)
    marketplace = Marketplace(application.test_client())
    metered = new(marketplace, ONDEMAND, "dash-1")
    usage.mark_on_demand(metered)
    end = utcnow().replace(microsecond=0) - timedelta(hours=1)
    usage.record_many(
        settings,
        [Report(metered, "d-1", (end - timedelta(hours=1)).isoformat(), end.isoformat(), 2, "pkg-9")],
        "cli",
    )
    (item,) = marketplace.query(metered).json["info"]
    assert item["usageInfo"][0]["dashboardUrl"] == "https://app.example.com/u/dash-1"
    assert item["usageInfo"][0]["usageValue"] == 2
    assert item["usageInfo"][0]["relatedInstanceId"] == "pkg-9"  # a package product's record
    db.close_all()


@pytest.mark.parametrize(
    ("value", "message"),
    [("{order_id}", "only use the placeholder"), ("ftp://x/{instance_id}", r"http\(s\) URL")],
)
def test_a_bad_dashboard_template_is_named(env: dict[str, str], value: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        load_settings({**env, "ISV_USAGE_DASHBOARD_URL_TEMPLATE": value})
