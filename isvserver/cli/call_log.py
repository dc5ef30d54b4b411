"""`isvserver log list/show`: the call log, one row per marketplace call."""

from __future__ import annotations

from collections.abc import Sequence

import click

from isvserver.cli.helpers import (
    DEFAULT_LIMIT,
    JSON_OPTION,
    LIMIT,
    bound_database,
    clean,
    more,
    print_fields,
    print_json,
    print_table,
    row,
    settings_or_exit,
    short,
)
from isvserver.models import CallLog

CALL_FIELDS = tuple(f.name for f in CallLog._meta.sorted_fields)


def names_instance(call: CallLog, instance_id: str) -> bool:
    """Whether the call's instanceId (one id or a comma-separated list) names this instance."""
    return instance_id in {i.strip() for i in (call.instance_id or "").split(",")}


@click.group("log")
def log_group() -> None:
    """The callback log: every call the marketplace made (read only)."""


def call_table(calls: Sequence[CallLog]) -> None:
    print_table(
        ("time", "request_id", "activity", "verdict", "code", "latency", "ids"),
        (
            (
                c.received_at,
                c.request_id,
                (c.activity or "-") + (" [test]" if c.test_flag else ""),
                c.verdict,
                c.result_code if c.delivery == "sent" else f"{c.result_code}/{c.delivery}",
                f"{c.latency_ms:.1f} ms",
                " ".join(
                    f"{label}={short(value)}"
                    for label, value in (
                        ("instance", c.instance_id),
                        ("order", c.order_id),
                        ("line", c.order_line_id),
                    )
                    if value
                ),
            )
            for c in calls
        ),
    )


@log_group.command("list")
@click.option("--instance", "instance_id", help="Only calls naming this instance.")
@click.option("--order", "order_id", help="Only calls of this order.")
@click.option("--code", help="Only calls answered with this result code (e.g. 000001).")
@click.option("--activity", help="Only calls of this activity (e.g. newInstance).")
@click.option("--limit", default=DEFAULT_LIMIT, show_default=True, type=LIMIT, help="At most this many.")
@JSON_OPTION
def log_list(
    instance_id: str | None,
    order_id: str | None,
    code: str | None,
    activity: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List calls, newest first (times in UTC)."""
    settings = settings_or_exit()
    with bound_database(settings):
        query = CallLog.select().order_by(CallLog.received_at.desc(), CallLog.id.desc())
        for column, value in (
            (CallLog.order_id, order_id),
            (CallLog.result_code, code),
            (CallLog.activity, activity),
        ):
            if value:
                query = query.where(column == value)
        if instance_id:
            query = query.where(CallLog.instance_id.contains(instance_id))
            calls = [c for c in query.iterator() if names_instance(c, instance_id)][: limit + 1]
        else:
            calls = list(query.limit(limit + 1))
    more(len(calls), limit)
    calls = calls[:limit]
    if as_json:
        print_json([row(c, CALL_FIELDS) for c in calls])
    elif calls:
        call_table(calls)
    else:
        click.echo("no calls match")


@log_group.command("show")
@click.argument("request_id")
@JSON_OPTION
def log_show(request_id: str, as_json: bool) -> None:
    """Show every column of one call (the X-Request-Id of its reply)."""
    settings = settings_or_exit()
    with bound_database(settings):
        call = CallLog.select().where(CallLog.request_id == request_id).first()
    if call is None:
        raise click.ClickException(f"no call with request id {clean(request_id)}")
    if as_json:
        print_json(row(call, CALL_FIELDS))
    else:
        print_fields((name, getattr(call, name)) for name in CALL_FIELDS)


@log_group.command("prune")
@click.option(
    "--days",
    type=click.IntRange(1, 36500),
    show_default="ISV_LOG_RETENTION_DAYS, else 90",
    help="Delete calls older than this many days.",
)
def log_prune(days: int | None) -> None:
    """Delete callback-log rows and rejection counts past the retention period (the consumer: hourly)."""
    from isvserver.jobs.retention import prune

    settings = settings_or_exit()
    days = days or settings.log_retention_days
    with bound_database(settings):
        pruned = prune(days)
    click.echo(
        f"pruned {pruned.calls} calls and {pruned.counts} rejection counts older than {days} days "
        f"(received before {pruned.before:%Y-%m-%d %H:%M:%S} UTC)"
    )
