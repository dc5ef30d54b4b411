"""`isvserver product-token add/revoke/list`: the tokens the seller's product reports usage with."""

from __future__ import annotations

import click

from isvserver.cli.helpers import (
    JSON_OPTION,
    bound_database,
    json_value,
    print_json,
    print_table,
    settings_or_exit,
)
from isvserver.parts.product_api import tokens


@click.group("product-token")
def product_token() -> None:
    """Tokens of the product API (POST /v1/usage): printed once, stored as digests."""


@product_token.command("add")
@click.argument("name")
def token_add(name: str) -> None:
    """Add a token NAME and print it once (only its digest is kept)."""
    settings = settings_or_exit()
    with bound_database(settings):
        try:
            token = tokens.add(name)
        except tokens.TokenError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"token {name} added; it is shown this once, keep it in the product's secret store:", err=True)
    click.echo(token)


@product_token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke the token NAME (its calls are refused from now on)."""
    settings = settings_or_exit()
    with bound_database(settings):
        try:
            changed = tokens.revoke(name)
        except tokens.TokenError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"token {name} {'revoked' if changed else 'was revoked already'}")


@product_token.command("list")
@JSON_OPTION
def token_list(as_json: bool) -> None:
    """List the tokens (names and first characters, never the tokens)."""
    settings = settings_or_exit()
    with bound_database(settings):
        rows = tokens.listing()
    if as_json:
        names = ("name", "hint", "created_at", "revoked_at", "last_used_at")
        print_json([{n: json_value(getattr(r, n)) for n in names} for r in rows])
        return
    print_table(
        ("name", "starts with", "status", "added", "last used", "revoked"),
        (
            (
                r.name,
                r.hint + "…",
                "revoked" if r.revoked_at else "active",
                r.created_at,
                r.last_used_at,
                r.revoked_at,
            )
            for r in rows
        ),
    )
