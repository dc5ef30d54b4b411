"""`isvserver reconcile`: instances past their expiry never frozen, and freezes never released."""

from __future__ import annotations

from dataclasses import asdict

import click

from isvserver.cli.helpers import JSON_OPTION, bound_database, print_json, print_table, settings_or_exit
from isvserver.jobs.reconcile import EXPIRED_NOT_FROZEN, FROZEN_NOT_RELEASED, Overdue, run
from isvserver.models import utcnow

HEADERS = ("instance_id", "order_id", "state", "expiry", "frozen since", "days overdue")


def _print_rows(title: str, rows: list[Overdue]) -> None:
    click.echo(f"{title} ({len(rows)})")
    if not rows:
        click.echo("none")
        return
    print_table(
        HEADERS,
        (
            (r.instance_id, r.order_id, r.state, r.expire_at, r.frozen_since, f"{r.days_overdue:.1f}")
            for r in rows
        ),
    )


@click.command("reconcile")
@click.option(
    "--freeze",
    is_flag=True,
    help="Freeze the expired, never-frozen instances now (through the lifecycle; the product is told).",
)
@click.option(
    "--freeze-days",
    type=click.IntRange(1, 365),
    show_default="ISV_FREEZE_DAYS, else 15",
    help="Days a freeze lasts before the release is overdue.",
)
@JSON_OPTION
def reconcile(freeze: bool, freeze_days: int | None, as_json: bool) -> None:
    """List instances past their expiry the marketplace never froze, and freezes it never released."""
    settings = settings_or_exit()
    with bound_database(settings):
        report = run(settings, utcnow(), act=freeze, freeze_days=freeze_days)
    totals = {
        EXPIRED_NOT_FROZEN: len(report.expired_not_frozen),
        FROZEN_NOT_RELEASED: len(report.frozen_not_released),
        "auto_frozen": report.auto_frozen,
    }
    if as_json:
        print_json(
            {
                "now": report.now,
                "freeze_days": report.freeze_days,
                EXPIRED_NOT_FROZEN: [asdict(r) for r in report.expired_not_frozen],
                FROZEN_NOT_RELEASED: [asdict(r) for r in report.frozen_not_released],
                "totals": totals,
            }
        )
        return
    _print_rows("expired, never frozen", report.expired_not_frozen)
    if freeze:
        skipped = len(report.expired_not_frozen) - report.auto_frozen
        note = f" ({skipped} changed meanwhile)" if skipped else ""
        click.echo(f"frozen now: {report.auto_frozen}{note}")
    click.echo()
    _print_rows(f"frozen more than {report.freeze_days} days, never released", report.frozen_not_released)
    click.echo()
    click.echo("totals: " + " ".join(f"{name}={count}" for name, count in totals.items()))
