"""`isvserver broker client add/remove/list`: the platforms allowed to call the broker."""

from __future__ import annotations

import click

from isvserver.cli.helpers import bound_database, print_json, print_table, settings_or_exit
from isvserver.marketplaces.broker import clients

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@click.group()
def broker() -> None:
    """The service broker (AppCube, Open Service Broker platforms)."""


@broker.group()
def client() -> None:
    """Platform clients: their id and secret (the secret is shown once, stored as a slow hash)."""


@client.command("add")
@click.argument("name")
def add(name: str) -> None:
    """Add a client named NAME; print its client_id and client_secret (shown this once only)."""
    settings = settings_or_exit()
    with bound_database(settings):
        try:
            credentials = clients.add(name)
        except clients.ClientError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo("type these into the platform; the secret is not shown again", err=True)
    click.echo(f"client_id={credentials.client_id}")
    click.echo(f"client_secret={credentials.client_secret}")


@client.command("remove")
@click.argument("client_id")
def remove(client_id: str) -> None:
    """Revoke CLIENT_ID: its tokens stop working at once (the record is kept)."""
    settings = settings_or_exit()
    with bound_database(settings):
        if not clients.remove(client_id):
            raise click.ClickException("no active client has this id")
    click.echo(f"revoked {client_id}")


@client.command("list")
@JSON_OPTION
def list_clients(as_json: bool) -> None:
    """Every client: id, name, created, revoked (never a secret)."""
    settings = settings_or_exit()
    with bound_database(settings):
        rows = clients.listed()
    if as_json:
        print_json(rows)
        return
    print_table(
        ("client_id", "name", "created_at", "revoked_at"),
        ((r["client_id"], r["name"], r["created_at"], r["revoked_at"] or "") for r in rows),
    )
