"""Following the wallet's orders: a periodic job (Jobs.every) reading the order listing from a stored
cursor, page by page, each order through orders.follow.

A sweep reads every page of `GET /api/v1/order?recipient=<wallet>&startFrom=<since>`; the page reached
is stored after each page, so a consumer that dies mid-sweep (or a platform that goes away) resumes at
that page, and reading an order again changes nothing. `startFrom` [decision: the platform's
`updatedAt`] moves on only after a clean sweep (no order read twice, the total never fell: nothing can
have shifted past a page boundary), to the sweep's start less an overlap that covers clock skew.
"""

from __future__ import annotations

import logging
import time

from isvserver.db import database
from isvserver.jobs import Jobs
from isvserver.marketplaces.vcloud.client import PlatformClient
from isvserver.marketplaces.vcloud.config import MARKETPLACE, VCloudSettings
from isvserver.marketplaces.vcloud.models import VCloudCursor
from isvserver.marketplaces.vcloud.orders import BadPage, Order, follow, freeze_due, parse
from isvserver.models import utcnow
from isvserver.runtime import Runtime

log = logging.getLogger("isvserver.vcloud")

JOB = "vcloud.orders"
OVERLAP_S = 600  # startFrom stays this far behind the last clean sweep's start (clock skew, late writes)


def cursor_name(settings: VCloudSettings) -> str:
    """The cursor of the configured wallet (another wallet starts from the beginning)."""
    return f"orders:{settings.wallet}"[:100]


def _cursor(name: str, now_s: int) -> VCloudCursor:
    """The cursor, with a sweep under way (a new one started when none is)."""
    with database.atomic():
        VCloudCursor.insert(name=name, updated_at=utcnow()).on_conflict_ignore().execute()
        query = VCloudCursor.select().where(VCloudCursor.name == name)
        cursor = (query.for_update() if database.for_update else query).get()
        if cursor.sweep_started is None:
            cursor.sweep += 1
            cursor.page = 1
            cursor.sweep_started = now_s
            cursor.sweep_max_updated = cursor.sweep_total = None
            cursor.sweep_clean = True
            cursor.updated_at = utcnow()
            cursor.save()
        return cursor


def _orders(items: list[dict]) -> tuple[list[Order], int]:
    """The orders of a page's items, and how many items had no usable id."""
    orders = []
    for item in items:
        try:
            orders.append(parse(item))
        except BadPage:
            continue
    return orders, len(items) - len(orders)


def poll(rt: Runtime, now: float | None = None) -> int:
    """Read the orders changed since the cursor, page by page, and follow each; how many were read."""
    settings: VCloudSettings = rt.settings.of(MARKETPLACE)
    client = PlatformClient(settings)
    now_s = int(now if now is not None else time.time())
    name = cursor_name(settings)
    cursor = _cursor(name, now_s)
    read = 0
    number = cursor.page
    while True:
        page = client.orders_page(number, recipient=settings.wallet, startFrom=cursor.since or None)
        orders, unusable = _orders(page.items)
        clean = cursor.sweep_clean and (cursor.sweep_total is None or page.total >= cursor.sweep_total)
        if unusable:  # kept out, and startFrom stays: read again until the platform lists it whole
            log.warning("vcloud poll: page %d: %d orders without a usable id skipped", number, unusable)
            clean = False
        for order in orders:
            if follow(rt, order, cursor.sweep, now_s):
                clean = False
        updated = [o.updated_at for o in orders if o.updated_at is not None]
        cursor.sweep_max_updated = max([*updated, cursor.sweep_max_updated or 0]) or None
        cursor.sweep_total = page.total if cursor.sweep_total is None else cursor.sweep_total
        cursor.sweep_clean, cursor.page = clean, number + 1
        cursor.orders_read += len(orders)
        cursor.updated_at = utcnow()
        read += len(orders)
        if page.last:
            break
        cursor.save()  # the page is done: a restart goes on from the next one
        number += 1
    if cursor.sweep_clean:
        cursor.since = max(cursor.since, (cursor.sweep_started or now_s) - OVERLAP_S)
    cursor.sweep_started, cursor.page, cursor.sweeps = None, 1, cursor.sweeps + 1
    cursor.last_success_at = utcnow()
    cursor.save()
    freeze_due(rt, now_s)
    log.debug("vcloud poll: %d orders read, startFrom=%d", read, cursor.since)
    return read


def init_jobs(jobs: Jobs) -> None:
    """Follow the wallet's orders every ISV_VCLOUD_POLL_INTERVAL_S (once the platform is configured)."""
    settings: VCloudSettings = jobs.settings.of(MARKETPLACE)
    if not settings.configured:
        jobs.starts.append(
            lambda: log.warning(
                "vcloud: ISV_VCLOUD_API_URL and ISV_VCLOUD_WALLET are not both set; orders are not followed"
            )
        )
        return
    jobs.every(JOB, settings.poll_interval_s, poll)
