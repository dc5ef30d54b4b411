"""`isvserver vcloud register TEMPLATE.yaml [--dry-run]` and `isvserver vcloud orders`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from isvserver.adapters import Section
from isvserver.cli.helpers import (
    DEFAULT_LIMIT,
    JSON_OPTION,
    LIMIT,
    bound_database,
    more,
    print_json,
    print_table,
    row,
    settings_or_exit,
)
from isvserver.marketplaces.vcloud.client import PlatformClient, PlatformError
from isvserver.marketplaces.vcloud.config import MARKETPLACE, VCloudSettings
from isvserver.marketplaces.vcloud.models import VCloudOrder
from isvserver.marketplaces.vcloud.register import Registration, RegistrationError, Step
from isvserver.marketplaces.vcloud.template import TemplateError, load
from isvserver.models import Instance
from isvserver.settings import Settings

ORDER_FIELDS = (
    "order_id",
    "status",
    "service_status",
    "outcome",
    "instance_id",
    "end_at",
    "note",
    "first_seen_at",
    "changed_at",
    "last_seen_at",
)


@click.group()
def vcloud() -> None:
    """The V Cloud market: register services from a template, see the orders followed."""


def _settings() -> VCloudSettings:
    settings = settings_or_exit()
    vcloud_settings: VCloudSettings = settings.of(MARKETPLACE)
    if not vcloud_settings.api_url:
        raise click.ClickException("ISV_VCLOUD_API_URL is not set (the V Cloud platform's URL)")
    return vcloud_settings


@vcloud.command()
@click.argument("template_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Look up only and print the plan; create nothing.")
def register(template_file: Path, dry_run: bool) -> None:
    """Register the template's provider, categories and services (what exists is left as it is)."""
    settings = _settings()
    try:
        template = load(template_file.read_text(encoding="utf-8"))
    except (TemplateError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{template_file}: {exc}") from None

    def report(step: Step) -> None:
        click.echo(step.line(dry_run))

    if dry_run:
        click.echo(f"plan for {template_file} on {settings.api_url} (dry run: nothing is created)")
    try:
        steps = Registration(PlatformClient(settings), settings, dry_run, report).run(template)
    except (TemplateError, PlatformError, RegistrationError) as exc:
        raise click.ClickException(str(exc)) from None
    counts = {action: sum(1 for s in steps if s.action == action) for action in ("create", "same", "differs")}
    verb = "to create" if dry_run else "created"
    click.echo(
        f"{counts['create']} {verb}, {counts['same']} as the template says, {counts['differs']} differ"
    )


@vcloud.command()
@click.option("--status", help="Only orders whose outcome (waiting, active, frozen, …) or status is this.")
@click.option("--limit", type=LIMIT, default=DEFAULT_LIMIT, show_default=True)
@JSON_OPTION
def orders(status: str | None, limit: int, as_json: bool) -> None:
    """Every order seen, its last status and what it became, most recently changed first."""
    settings = settings_or_exit()
    with bound_database(settings):
        query = VCloudOrder.select().order_by(VCloudOrder.changed_at.desc(), VCloudOrder.id.desc())
        if status:
            query = query.where((VCloudOrder.outcome == status) | (VCloudOrder.status == status))
        found: list[dict[str, Any]] = [row(order, ORDER_FIELDS) for order in query.limit(limit + 1)]
    if as_json:
        print_json(found[:limit])
    else:
        print_table(
            ("order", "status", "service", "became", "instance", "endAt", "changed", "note"),
            (
                (
                    o["order_id"],
                    o["status"],
                    o["service_status"],
                    o["outcome"],
                    o["instance_id"],
                    o["end_at"],
                    o["changed_at"],
                    o["note"],
                )
                for o in found[:limit]
            ),
        )
    more(len(found), limit)


def _order_table(rows: list[dict[str, Any]]) -> None:
    print_table(
        ("order", "status", "service", "became", "endAt", "first seen", "changed", "note"),
        (
            (
                o["order_id"],
                o["status"],
                o["service_status"],
                o["outcome"],
                o["end_at"],
                o["first_seen_at"],
                o["changed_at"],
                o["note"],
            )
            for o in rows
        ),
    )


def instance_sections(instance: Instance, settings: Settings) -> tuple[Section, ...]:
    """The V Cloud order an instance of this marketplace became (`isvserver instances show`)."""
    if instance.marketplace != MARKETPLACE:
        return ()
    rows = [
        row(order, ORDER_FIELDS)
        for order in VCloudOrder.select().where(VCloudOrder.instance_id == instance.instance_id)
    ]
    return (Section("vcloud_order", "V Cloud order", rows, _order_table),)
