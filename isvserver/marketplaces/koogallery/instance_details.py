"""What `isvserver instances show` tells of a KooGallery instance: its order lines, the buyer masked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from isvserver.adapters import Section
from isvserver.cli.helpers import MASK, print_table
from isvserver.marketplaces.koogallery import order_lines
from isvserver.marketplaces.koogallery.models import OrderLineRecord
from isvserver.marketplaces.koogallery.v1.details import v1_sections
from isvserver.models import Instance
from isvserver.sealing import DataKeys, UnsealError
from isvserver.settings import Settings

ORDER_LINE_FIELDS = (
    "order_id",
    "order_line_id",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "order_type",
    "product_id",
    "sku_code",
    "charging_mode",
    "period_type",
    "period_number",
    "expire_at",
    "fetched_at",
)  # never details_sealed; the buyer only masked


def order_line_out(record: OrderLineRecord, data_keys: DataKeys) -> dict[str, Any]:
    """The order line's columns, whether its details are stored and readable, and its buyer masked."""
    try:
        document = order_lines.record_details(record, data_keys)
        details = None if document is None else "stored"
    except UnsealError:
        document, details = None, "unreadable"
    buyer = (document or {}).get("buyerInfo")
    return {
        **{name: getattr(record, name) for name in ORDER_LINE_FIELDS},  # times as _print_json writes them
        "details": details,
        "buyerInfo": buyer and {name: None if value is None else MASK for name, value in buyer.items()},
    }


def order_line_table(lines: Sequence[dict[str, Any]]) -> None:
    def period(line: dict[str, Any]) -> str | None:
        return " ".join(str(v) for v in (line["period_number"], line["period_type"]) if v is not None) or None

    def buyer(line: dict[str, Any]) -> str | None:
        if line["details"] == "unreadable":
            return "unreadable (check ISV_DATA_KEY)"
        return " ".join(f"{name}={value}" for name, value in (line["buyerInfo"] or {}).items() if value)

    headers = ("order line", "status", "sku", "product", "charging", "period", "expiry", "fetched", "buyer")
    print_table(
        (*headers, "error"),
        (
            (
                f"{line['order_id']}/{line['order_line_id']}",
                line["status"] + (f", {line['attempts']} failed attempt(s)" if line["attempts"] else ""),
                line["sku_code"],
                line["product_id"],
                line["charging_mode"],
                period(line),
                line["expire_at"],
                line["fetched_at"],
                buyer(line),
                line["last_error"],
            )
            for line in lines
        ),
    )


def instance_sections(instance: Instance, settings: Settings) -> tuple[Section, ...]:
    """The instance's order lines as read from the order-query API; a V1 instance's buyer and license."""
    lines = [order_line_out(record, settings.data_keys) for record in order_lines.for_instance(instance)]
    own = Section("order_lines", f"order details ({len(lines)} order lines)", lines, order_line_table)
    return (own, *v1_sections(instance, settings))
