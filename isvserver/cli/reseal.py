"""`isvserver reseal`: every stored secret re-encrypted with the first ISV_DATA_KEY key."""

from __future__ import annotations

import click

from isvserver.cli.helpers import bound_database, clean, settings_or_exit
from isvserver.rotation import BATCH_SIZE, reseal_all


@click.command("reseal")
@click.option(
    "--batch-size",
    default=BATCH_SIZE,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows per transaction.",
)
def rotate_data_key(batch_size: int) -> None:
    """Re-encrypt every stored secret with the first ISV_DATA_KEY: every sealed column of every table in
    the database, whether its adapter is enabled or not."""
    settings = settings_or_exit()
    with bound_database(settings):
        report = reseal_all(settings, batch_size)
    for column in report.columns:
        line = (
            f"{column.table}.{column.column}: {column.resealed} resealed, {column.current} already current, "
            f"{len(column.unreadable)} unreadable"
        )
        if column.changed_meanwhile:
            line += f", {column.changed_meanwhile} changed meanwhile (run again)"
        click.echo(line)
    for row in report.unreadable:
        click.echo(
            f"unreadable: {row.table} row {row.row_id} ({row.name_column} {clean(row.name)}): "
            "no ISV_DATA_KEY key opens it; left as it is"
        )
    if report.unknown_adapters:
        raise click.ClickException(
            f"the database holds tables of adapter(s) {', '.join(report.unknown_adapters)}, which this "
            "installation lacks: their secrets were not resealed; keep every ISV_DATA_KEY key and run "
            "`isvserver reseal` from an installation that has them"
        )
    if report.unreadable:
        raise click.ClickException(
            f"{len(report.unreadable)} stored secret(s) cannot be decrypted with any ISV_DATA_KEY key: "
            "add the key that sealed them to ISV_DATA_KEY (after the first) and run `isvserver reseal` again"
        )
    if not report.changed_meanwhile:
        click.echo(
            f"done: every stored secret is sealed with the first ISV_DATA_KEY key "
            f"({len(settings.data_keys)} configured)"
        )
