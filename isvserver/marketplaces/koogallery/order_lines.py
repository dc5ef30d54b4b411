"""Order lines as the marketplace's order-query API describes them, stored per (marketplace, order, line).

A line is wanted (a `pending` row) when the marketplace tells us about it; `fetch` queries it outside any
transaction and stores the plaintext columns operators need, and the whole document, buyer included,
sealed with the data key.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from isvserver.db import connected, database, is_postgres
from isvserver.marketplaces.koogallery.models import OrderLineRecord
from isvserver.marketplaces.koogallery.orders import OrderInfo, OrderLine, OrderQueryClient, OrderQueryError
from isvserver.marketplaces.koogallery.orders_cli import order_document
from isvserver.models import Instance, InstanceEvent, utcnow
from isvserver.sealing import DataKeys, seal, unseal
from isvserver.settings import Settings

PENDING, FETCHED, FAILED, SKIPPED = "pending", "fetched", "failed", "skipped"
ON_DEMAND_MODES = frozenset({"ON_DEMAND", "ON_DEMAND_PKG"})  # chargingMode of pay-per-use order lines
ERROR_CHARS = OrderLineRecord.last_error.max_length

log = logging.getLogger(__name__)


class _Permanent(Exception):
    """A failure that asking again will not change."""


def _key(marketplace: str, order_id: str, order_line_id: str) -> Any:
    return (
        (OrderLineRecord.marketplace == marketplace)
        & (OrderLineRecord.order_id == order_id)
        & (OrderLineRecord.order_line_id == order_line_id)
    )


def _insert_pending(marketplace: str, order_id: str, order_line_id: str) -> None:
    now = utcnow()
    OrderLineRecord.insert(
        marketplace=marketplace,
        order_id=order_id,
        order_line_id=order_line_id,
        status=PENDING,
        next_attempt_at=now,
        created_at=now,
    ).on_conflict_ignore().execute()


def want(marketplace: str, order_id: str, order_line_id: str) -> None:
    """Ask for this order line to be fetched (a pending row) unless a row for it exists already."""
    with connected():
        _insert_pending(marketplace, order_id, order_line_id)


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before attempt `attempts` + 1: doubling from the base up to the maximum, less up to half."""
    delay = min(settings.job_retry_base_s * 2 ** min(attempts - 1, 62), settings.job_retry_max_s)
    return delay * random.uniform(0.5, 1.0)


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


def _naive_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)


def _columns(order: OrderInfo, line: OrderLine) -> dict[str, Any]:
    """The plaintext columns of `line` (its first product); OrderQueryError when one does not fit."""
    product = line.products[0] if line.products else None
    columns = {
        OrderLineRecord.order_type: ("orderType", order.order_type),
        OrderLineRecord.product_id: ("productId", product and product.product_id),
        OrderLineRecord.sku_code: ("skuCode", product and product.sku_code),
        OrderLineRecord.charging_mode: ("chargingMode", line.charging_mode),
        OrderLineRecord.period_type: ("periodType", line.period_type),
    }
    for column, (name, value) in columns.items():
        if value is not None and len(value) > column.max_length:
            raise OrderQueryError(f"invalid reply: {name} is longer than {column.max_length} characters")
    return {
        **{column: value for column, (_, value) in columns.items()},
        OrderLineRecord.period_number: line.period_number,
        OrderLineRecord.expire_at: _naive_utc(line.expire_time),
    }


def _query(client: OrderQueryClient, order_id: str, order_line_id: str) -> tuple[OrderInfo, OrderLine]:
    """The order and its line `order_line_id`; _Permanent when the ids are invalid or the line is absent."""
    try:
        order = client.query(order_id, order_line_id)
    except ValueError as exc:
        raise _Permanent(str(exc)) from None
    line = next((item for item in order.lines if item.order_line_id == order_line_id), None)
    if line is None:
        others = ", ".join(item.order_line_id for item in order.lines)
        raise _Permanent(f"order {order_id} has no order line {order_line_id} (it has: {others})")
    return order, line


def _store(marketplace: str, order_id: str, order_line_id: str, changes: dict[Any, Any]) -> None:
    """Write `changes` to the row, creating it first if needed, in one short transaction."""
    with connected(), database.atomic():
        _insert_pending(marketplace, order_id, order_line_id)
        OrderLineRecord.update(changes).where(_key(marketplace, order_id, order_line_id)).execute()


def _store_failure(
    settings: Settings, marketplace: str, order_id: str, order_line_id: str, error: str, permanent: bool
) -> str:
    """Count a failed attempt: `failed` when permanent or out of attempts, else `pending` with a backoff."""
    with connected(), database.atomic():
        _insert_pending(marketplace, order_id, order_line_id)
        query = OrderLineRecord.select().where(_key(marketplace, order_id, order_line_id))
        row = (query.for_update() if is_postgres() else query).get()
        attempts = row.attempts + 1
        status = FAILED if permanent or attempts >= settings.job_max_attempts else PENDING
        delay = retry_delay(settings, attempts)
        OrderLineRecord.update(
            {
                OrderLineRecord.attempts: attempts,
                OrderLineRecord.status: status,
                OrderLineRecord.last_error: error,
                OrderLineRecord.next_attempt_at: utcnow() + timedelta(seconds=delay),
            }
        ).where(OrderLineRecord.id == row.id).execute()
    if status == PENDING:
        log.warning(
            "order details order=%s/%s: attempt %d of %d failed, next in %.0f s: %s",
            order_id, order_line_id, attempts, settings.job_max_attempts, delay, error,
        )  # fmt: skip
    else:
        log.error(
            "order details order=%s/%s failed after %d attempt(s), not retried: %s",
            order_id, order_line_id, attempts, error,
        )  # fmt: skip
    return status


def fetch(
    settings: Settings,
    marketplace: str,
    order_id: str,
    order_line_id: str,
    client: OrderQueryClient | None,
) -> str:
    """Query one order line (outside any transaction) and store it; the row's resulting status.

    ValueError, with nothing stored, when an id is longer than its column.
    """
    for column, value in (
        (OrderLineRecord.order_id, order_id),
        (OrderLineRecord.order_line_id, order_line_id),
    ):
        if len(value) > column.max_length:
            raise ValueError(f"{column.name} is longer than {column.max_length} characters")
    if client is None:
        log.info(
            "order details skipped order=%s/%s: ISV_MARKET_AK and ISV_MARKET_SK are not set",
            order_id,
            order_line_id,
        )
        with connected(), database.atomic():
            _insert_pending(marketplace, order_id, order_line_id)
            key = _key(marketplace, order_id, order_line_id)
            # Details fetched before stay: they were true, and nothing newer can be had without AK/SK.
            OrderLineRecord.update(status=SKIPPED).where(key & (OrderLineRecord.status != FETCHED)).execute()
            return OrderLineRecord.select(OrderLineRecord.status).where(key).scalar()
    try:
        order, line = _query(client, order_id, order_line_id)
        columns = _columns(order, line)
    except _Permanent as exc:
        return _store_failure(settings, marketplace, order_id, order_line_id, _one_line(exc), True)
    except (OrderQueryError, OSError) as exc:
        return _store_failure(settings, marketplace, order_id, order_line_id, _one_line(exc), False)
    document = order_document(dataclasses.replace(order, lines=(line,)), show_buyer=True)
    now = utcnow()
    _store(
        marketplace,
        order_id,
        order_line_id,
        {
            **columns,
            OrderLineRecord.status: FETCHED,
            OrderLineRecord.attempts: 0,
            OrderLineRecord.last_error: None,
            OrderLineRecord.next_attempt_at: now,
            OrderLineRecord.details_sealed: seal(settings.data_key, json.dumps(document, ensure_ascii=False)),
            OrderLineRecord.fetched_at: now,
        },
    )
    if columns[OrderLineRecord.charging_mode] in ON_DEMAND_MODES:
        mark_on_demand(marketplace, order_id, order_line_id)
    log.info("order details fetched order=%s/%s", order_id, order_line_id)
    return FETCHED


def mark_on_demand(marketplace: str, order_id: str, order_line_id: str) -> int:
    """Mark the instances of an order line on-demand when its stored charging mode is; how many changed."""
    with connected(), database.atomic():
        mode = (
            OrderLineRecord.select(OrderLineRecord.charging_mode)
            .where(_key(marketplace, order_id, order_line_id))
            .scalar()
        )
        if mode not in ON_DEMAND_MODES:
            return 0
        changed = (
            Instance.update(on_demand=True, updated_at=utcnow())
            .where(
                (Instance.marketplace == marketplace)
                & (Instance.order_id == order_id)
                & (Instance.order_line_id == order_line_id)
                & (Instance.on_demand == False)  # noqa: E712 (a SQL comparison)
            )
            .execute()
        )
    if changed:
        log.info("on-demand order=%s/%s: %d instance(s) take usage records", order_id, order_line_id, changed)
    return changed


def due(limit: int = 100) -> list[tuple[str, str, str]]:
    """(marketplace, order_id, order_line_id) of pending lines due for an attempt, most overdue first."""
    with connected():
        query = (
            OrderLineRecord.select(
                OrderLineRecord.marketplace, OrderLineRecord.order_id, OrderLineRecord.order_line_id
            )
            .where((OrderLineRecord.status == PENDING) & (OrderLineRecord.next_attempt_at <= utcnow()))
            .order_by(OrderLineRecord.next_attempt_at, OrderLineRecord.id)
            .limit(limit)
        )
        return list(query.tuples())


def record_details(record: OrderLineRecord, data_keys: DataKeys) -> dict[str, Any] | None:
    """The record's unsealed order document, buyer included; None before it was fetched (UnsealError)."""
    return None if record.details_sealed is None else json.loads(unseal(data_keys, record.details_sealed))


def details(
    marketplace: str, order_id: str, order_line_id: str, data_keys: DataKeys
) -> dict[str, Any] | None:
    """The order line's unsealed document, buyer included; None when it was never fetched."""
    with connected():
        record = OrderLineRecord.select().where(_key(marketplace, order_id, order_line_id)).first()
    return None if record is None else record_details(record, data_keys)


def for_instance(instance: Instance) -> list[OrderLineRecord]:
    """The instance's order lines: its own, then those of its renewals and upgrades, oldest first."""
    with connected():
        events = (
            InstanceEvent.select(InstanceEvent.order_id, InstanceEvent.order_line_id)
            .where((InstanceEvent.instance == instance.id) & InstanceEvent.order_id.is_null(False))
            .order_by(InstanceEvent.created_at, InstanceEvent.id)
            .tuples()
        )
        keys = list(dict.fromkeys([(instance.order_id, instance.order_line_id), *events]))
        rows = OrderLineRecord.select().where(
            (OrderLineRecord.marketplace == instance.marketplace)
            & OrderLineRecord.order_id.in_({order_id for order_id, _ in keys})
        )
        found = {(row.order_id, row.order_line_id): row for row in rows}
    return [found[key] for key in keys if key in found]
