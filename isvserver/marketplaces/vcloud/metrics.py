"""The V Cloud gauges read at scrape time: orders by status and outcome, reads, the last good poll."""

from __future__ import annotations

from collections.abc import Iterator

from peewee import fn
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from isvserver.marketplaces.vcloud.models import VCloudCursor, VCloudOrder
from isvserver.models import utcnow

MAX_STATUSES = 50  # unknown statuses are kept as given: the label's values stay bounded


def collect() -> Iterator[object]:
    """The families (a database connection is open)."""
    now = utcnow()
    by_status = GaugeMetricFamily(
        "isv_vcloud_orders", "V Cloud orders seen, by their last platform status", labels=["status"]
    )
    for status, count in (
        VCloudOrder.select(VCloudOrder.status, fn.COUNT(VCloudOrder.id))
        .group_by(VCloudOrder.status)
        .order_by(fn.COUNT(VCloudOrder.id).desc())
        .limit(MAX_STATUSES)
        .tuples()
    ):
        by_status.add_metric([status], count)
    yield by_status
    by_outcome = GaugeMetricFamily(
        "isv_vcloud_orders_by_outcome",
        "V Cloud orders seen, by what they became (waiting, active, frozen, released, unknown_status…)",
        labels=["outcome"],
    )
    for outcome, count in (
        VCloudOrder.select(VCloudOrder.outcome, fn.COUNT(VCloudOrder.id))
        .group_by(VCloudOrder.outcome)
        .tuples()
    ):
        by_outcome.add_metric([outcome], count)
    yield by_outcome
    read = VCloudCursor.select(fn.SUM(VCloudCursor.orders_read), fn.SUM(VCloudCursor.sweeps)).tuples().first()
    yield CounterMetricFamily(
        "isv_vcloud_polls", "Complete polls of the order listing", value=(read or (0, 0))[1] or 0
    )
    yield CounterMetricFamily(
        "isv_vcloud_orders_read", "Orders read from the platform", value=(read or (0, 0))[0] or 0
    )
    last = VCloudCursor.select(fn.MAX(VCloudCursor.last_success_at)).scalar()
    if last is not None:
        yield GaugeMetricFamily(
            "isv_vcloud_last_poll_age_seconds",
            "Seconds since the last complete poll of the order listing",
            value=max(0.0, (now - last).total_seconds()),
        )
