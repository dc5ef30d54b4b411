"""KooGallery's background work: order lines fetched from the order-query API, and added to events.

Registered on the app's job queue by `init_jobs`: a `fetch_order` task, a sweep for order lines still
pending, and the enricher that gives each change its order line before the product hears of it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from isvserver.db import connected, database
from isvserver.jobs import DetailsPending, Jobs
from isvserver.lifecycle import LIFECYCLE_EVENT_TYPES
from isvserver.marketplaces.koogallery import order_lines
from isvserver.marketplaces.koogallery.orders import OrderQueryClient, client_from_env
from isvserver.provisioning import LifecycleEvent

MARKETPLACE = "koogallery"
ORDER_EVENTS = frozenset(
    {"created", "renewed", "trial_converted", "renewal_unsubscribed", "renewal_changed", "upgraded"}
)

log = logging.getLogger("isvserver.jobs")


class OrderDetailsPending(DetailsPending):
    """The change's order line could not be fetched yet; the delivery is retried."""


class OrderJobs:
    """The order-line tasks of one app's job queue (nothing is fetched without ISV_MARKET_AK/SK)."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.settings = jobs.settings
        self.client: OrderQueryClient | None = client_from_env(os.environ)
        self._fetch = jobs.huey.task(name="fetch_order")(self.fetch_order)

    def fetch_soon(self, order_id: str, order_line_id: str) -> None:
        """Ask a consumer to fetch an order line (nothing when no AK/SK is configured)."""
        if self.client is not None:
            self._fetch(MARKETPLACE, order_id, order_line_id)

    def fetch_order(self, marketplace: str, order_id: str, order_line_id: str) -> None:
        """Fetch and store one order line (retried by the sweeper while it stays pending)."""
        with connected():
            with database.atomic():
                order_lines.want(marketplace, order_id, order_line_id)
            order_lines.fetch(self.settings, marketplace, order_id, order_line_id, self.client)

    def sweep(self) -> None:
        """Fetch the order lines still pending."""
        if self.client is None:
            return
        with connected():
            lines = order_lines.due()
        for line in lines:
            self._fetch(*line)
        if lines:
            log.info("sweep: %d order lines to fetch", len(lines))

    def consumer_started(self) -> None:
        """Say at the consumer's start when order details will not be fetched."""
        if self.client is None:
            log.info("order details are not fetched: ISV_MARKET_AK and ISV_MARKET_SK are not set")

    def enrich(self, event: LifecycleEvent) -> LifecycleEvent:
        """The event with its order line's details, fetched first when not stored yet."""
        if self.client is None:
            return event
        change, instance = event.change, event.instance
        line = (
            instance.marketplace,
            change.get("order_id") or instance.order_id,
            change.get("order_line_id") or instance.order_line_id,
        )
        if not line[1] or not line[2]:
            return event  # no order line (a V1 order: its call carried the order's details itself)
        details = order_lines.details(*line, self.settings.data_keys)
        if details is None and change.get("kind") in ORDER_EVENTS:
            with database.atomic():
                order_lines.want(*line)
            if order_lines.fetch(self.settings, *line, self.client) == order_lines.PENDING:
                raise OrderDetailsPending(f"order line {line[1]}/{line[2]} could not be fetched yet")
            details = order_lines.details(*line, self.settings.data_keys)
        return replace(event, order=details)


def init_jobs(jobs: Jobs) -> None:
    """Register the order-line tasks, their sweep and the enricher on the app's job queue."""
    own = jobs.extensions[MARKETPLACE] = OrderJobs(jobs)
    jobs.add_enricher(own.enrich, marketplace=MARKETPLACE, event_types=LIFECYCLE_EVENT_TYPES)
    jobs.sweeps.append(own.sweep)
    jobs.starts.append(own.consumer_started)


def fetch_soon(jobs: Jobs, order_id: str, order_line_id: str) -> None:
    """Have this order line fetched (after the call's commit, by a consumer)."""
    jobs.extensions[MARKETPLACE].fetch_soon(order_id, order_line_id)
