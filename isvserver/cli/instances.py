"""`isvserver instances list/show`: instances, their history, what adapters know of them, their calls."""

from __future__ import annotations

from typing import Any

import click
from peewee import fn

from isvserver import usage
from isvserver.adapters import load
from isvserver.cli.call_log import CALL_FIELDS, call_table, names_instance
from isvserver.cli.helpers import (
    DEFAULT_LIMIT,
    JSON_OPTION,
    LIMIT,
    bound_database,
    clean,
    json_value,
    more,
    print_fields,
    print_json,
    print_table,
    row,
    settings_or_exit,
)
from isvserver.lifecycle import State
from isvserver.models import CallLog, Delivery, Instance, InstanceEvent, UsageRecord

INSTANCE_FIELDS = (
    "instance_id",
    "marketplace",
    "state",
    "is_trial",
    "on_demand",
    "order_id",
    "order_line_id",
    "business_id",
    "product_id",
    "expire_at",
    "front_end_url",
    "admin_url",
    "user_name",
    "memo",
    "created_at",
    "updated_at",
    "released_at",
)  # never password_encrypted


@click.group()
def instances() -> None:
    """Instances and their history (read only)."""


def _order_condition(order_id: str) -> Any:
    """Instances of this order: created by it, or changed by it (renewal, upgrade, release)."""
    changed = InstanceEvent.select(InstanceEvent.instance).where(InstanceEvent.order_id == order_id)
    return (Instance.order_id == order_id) | Instance.id.in_(changed)


@instances.command("list")
@click.option("--state", type=click.Choice([s.value for s in State]), help="Only instances in this state.")
@click.option("--order", "order_id", help="Only instances created or changed by this order.")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=LIMIT, help="At most this many.")
@JSON_OPTION
def instances_list(state: str | None, order_id: str | None, limit: int, as_json: bool) -> None:
    """List instances, newest first (times in UTC)."""
    settings = settings_or_exit()
    with bound_database(settings):
        query = Instance.select().order_by(Instance.created_at.desc(), Instance.id.desc())
        if state:
            query = query.where(Instance.state == state)
        if order_id:
            query = query.where(_order_condition(order_id))
        rows = list(query.limit(limit + 1))
    more(len(rows), limit)
    rows = rows[:limit]
    if as_json:
        print_json([row(r, INSTANCE_FIELDS) for r in rows])
        return
    if not rows:
        click.echo("no instances match")
        return
    print_table(
        ("instance_id", "state", "order/line", "expiry", "created", "updated"),
        (
            (
                r.instance_id,
                r.state + (" (trial)" if r.is_trial else ""),
                f"{r.order_id}/{r.order_line_id}",
                r.expire_at,
                r.created_at,
                r.updated_at,
            )
            for r in rows
        ),
    )


def _event_out(event: InstanceEvent) -> dict[str, Any]:
    return row(event, ("created_at", "kind", "from_state", "to_state", "order_id", "order_line_id", "detail"))


def _delivery_out(delivery: Delivery) -> dict[str, Any]:
    return row(
        delivery, ("event_type", "status", "attempts", "next_attempt_at", "last_error", "delivered_at")
    )


def _delivery_text(delivery: dict[str, Any] | None) -> str | None:
    """How far the change got to the product: delivered, or pending/failed with attempts and last error."""
    if delivery is None:
        return None
    if delivery["status"] == "delivered":
        return "delivered"
    text = f"{delivery['status']} ({delivery['attempts']} failed attempts"
    if delivery["status"] == "pending" and delivery["attempts"]:
        text += f", next at {delivery['next_attempt_at']}"
    return text + (f": {delivery['last_error']})" if delivery["last_error"] else ")")


def _instance_calls(instance: Instance, orders: set[str], limit: int) -> list[CallLog]:
    """The calls about this instance (alone or in a list of ids) or one of its orders, newest first."""
    query = (
        CallLog.select()
        .where(CallLog.instance_id.contains(instance.instance_id) | CallLog.order_id.in_(orders))
        .order_by(CallLog.received_at.desc(), CallLog.id.desc())
    )
    calls = []
    for call in query.iterator():
        if call.order_id in orders or names_instance(call, instance.instance_id):
            calls.append(call)
            if len(calls) > limit:
                break
    return calls


@instances.command("show")
@click.argument("instance_id")
@click.option(
    "--limit", default=DEFAULT_LIMIT, show_default=True, type=LIMIT, help="At most this many calls."
)
@JSON_OPTION
def instances_show(instance_id: str, limit: int, as_json: bool) -> None:
    """Show an instance (never its password), its lifecycle history and the calls about it."""
    settings = settings_or_exit()
    with bound_database(settings):
        instance = Instance.select().where(Instance.instance_id == instance_id).first()
        if instance is None:
            raise click.ClickException(f"no instance {clean(instance_id)}")
        events = list(instance.events.order_by(InstanceEvent.created_at, InstanceEvent.id))
        orders = {instance.order_id} | {e.order_id for e in events if e.order_id}
        calls = _instance_calls(instance, orders, limit)
        sections = [
            section
            for adapter in map(load, settings.marketplaces)
            if adapter.instance_sections is not None
            for section in adapter.instance_sections(instance, settings)
        ]
        handed_over = {
            d.event_id: _delivery_out(d) for d in Delivery.select().where(Delivery.instance == instance)
        }
        metered = _usage_out(instance)
    more(len(calls), limit)
    calls = calls[:limit]
    password = "stored encrypted (not shown)" if instance.password_encrypted else None
    if as_json:
        print_json(
            {
                "instance": {**row(instance, INSTANCE_FIELDS), "password_stored": password is not None},
                "events": [{**_event_out(e), "delivery": handed_over.get(e.id)} for e in events],
                **{section.name: section.rows for section in sections},
                "usage": metered,
                "calls": [row(c, CALL_FIELDS) for c in calls],
            }
        )
        return
    print_fields(
        [
            *((name, getattr(instance, name)) for name in INSTANCE_FIELDS if name != "memo"),
            ("password", password),
            ("memo", instance.memo),
        ]
    )
    click.echo(f"\nlifecycle history ({len(events)} events)")
    print_table(
        ("time", "kind", "from → to", "order line", "detail", "to the product"),
        (
            (
                e.created_at,
                e.kind,
                f"{e.from_state or '-'} → {e.to_state or '-'}",
                f"{e.order_id}/{e.order_line_id}" if e.order_id else None,
                e.detail,
                _delivery_text(handed_over.get(e.id)),
            )
            for e in events
        ),
    )
    for section in sections:
        click.echo(f"\n{section.title}")
        section.render(section.rows)
    if metered["records"]:
        by_state = ", ".join(f"{state} {count}" for state, count in metered["by_state"].items())
        latest = metered["latest"]
        click.echo(f"\nusage ({metered['records']} records: {by_state}; `isvserver usage list --instance …`)")
        print_fields([("latest value", latest["value"]), ("latest end", latest["end_at"])])
    click.echo(f"\ncallback log ({len(calls)} calls, newest first)")
    call_table(calls)


def _usage_out(instance: Instance) -> dict[str, Any]:
    """The instance's usage records by state, and its latest (what queryInstance's usageInfo says)."""
    query = (
        UsageRecord.select(UsageRecord.state, fn.COUNT(UsageRecord.id))
        .where(UsageRecord.instance == instance.id)
        .group_by(UsageRecord.state)
        .tuples()
    )
    by_state = dict(sorted(query))
    latest = usage.latest([instance.id]).get(instance.id)
    return {
        "records": sum(by_state.values()),
        "by_state": by_state,
        "latest": None
        if latest is None
        else {"value": format(latest.value, "f"), "end_at": json_value(latest.end_at)},
    }
