"""`isvserver order ORDER_ID [ORDER_LINE_ID]`: what the marketplace's order-query API says about an order."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import click

from isvserver.marketplaces.koogallery.orders import (
    Buyer,
    OrderInfo,
    OrderQueryError,
    client_from_env,
    missing_credentials,
)
from isvserver.settings import SettingsError

MASK = "***"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _buyer(buyer: Buyer | None, show: bool) -> dict[str, str | None] | None:
    if buyer is None:
        return None
    fields = {
        "customerId": buyer.customer_id,
        "customerName": buyer.customer_name,
        "userId": buyer.user_id,
        "userName": buyer.user_name,
    }
    return {name: value if show or value is None else MASK for name, value in fields.items()}


def order_document(order: OrderInfo, show_buyer: bool = False) -> dict[str, Any]:
    """The order under the API's field names, times in ISO 8601 UTC, buyer fields masked unless asked."""
    return {
        "orderId": order.order_id,
        "orderType": order.order_type,
        "createTime": _time(order.create_time),
        "buyerInfo": _buyer(order.buyer, show_buyer),
        "extendParams": [{"name": name, "value": value} for name, value in order.extend_params],
        "orderLine": [
            {
                "orderLineId": line.order_line_id,
                "chargingMode": line.charging_mode,
                "expireTime": _time(line.expire_time),
                "periodType": line.period_type,
                "periodNumber": line.period_number,
                "productInfo": [
                    {
                        "productId": product.product_id,
                        "skuCode": product.sku_code,
                        "productName": product.product_name,
                        "linearValue": product.linear_value,
                    }
                    for product in line.products
                ],
            }
            for line in order.lines
        ],
    }


def _rows(document: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(indent, name, value) rows of the text form, empty values left out."""
    rows: list[tuple[str, str, Any]] = [
        ("", name, document[name]) for name in ("orderId", "orderType", "createTime")
    ]
    rows += [("", name, value) for name, value in (document["buyerInfo"] or {}).items()]
    rows += [("", "extendParam", f"{p['name']}={p['value']}") for p in document["extendParams"]]
    for line in document["orderLine"]:
        rows.append(("", "orderLine", line["orderLineId"]))
        rows += [("  ", name, line[name]) for name in ("chargingMode", "periodType", "periodNumber")]
        rows.append(("  ", "expireTime", line["expireTime"]))
        for product in line["productInfo"]:
            rows += [("  ", name, value) for name, value in product.items()]
    return [row for row in rows if row[2] is not None]


def render_text(document: dict[str, Any]) -> str:
    """The order as aligned `name  value` lines, its lines indented under each orderLine."""
    rows = _rows(document)
    width = max(len(indent + name) for indent, name, _ in rows)
    return "\n".join(f"{(indent + name).ljust(width)}  {value}" for indent, name, value in rows)


@click.command("order")
@click.argument("order_id")
@click.argument("order_line_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the order as one JSON object.")
@click.option("--show-buyer", is_flag=True, help="Print the buyer's ids and names instead of ***.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the marketplace.",
)
def order(order_id: str, order_line_id: str | None, as_json: bool, show_buyer: bool, timeout: float) -> None:
    """Query an order from KooGallery [ISV_MARKET_API_URL, ISV_MARKET_AK, ISV_MARKET_SK]."""
    try:
        client = client_from_env(os.environ, timeout=timeout)
        missing = missing_credentials(os.environ) if client is None else ()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    if client is None:
        raise click.ClickException(
            "the order query needs the API-Gateway AK/SK from the seller console: set ISV_MARKET_AK and "
            f"ISV_MARKET_SK (or *_FILE); not set: {', '.join(missing)}"
        )
    try:
        found = client.query(order_id, order_line_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except OrderQueryError as exc:
        raise click.ClickException(str(exc)) from None
    document = order_document(found, show_buyer)
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        click.echo(render_text(document))
