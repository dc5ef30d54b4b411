"""`isvserver keys list/add/retire`: access keys added and retired while every worker runs."""

from __future__ import annotations

import sys
import uuid

import click

from isvserver import keystore
from isvserver.cli.helpers import (
    JSON_OPTION,
    bound_database,
    json_value,
    print_json,
    print_table,
    settings_or_exit,
)


@click.group()
def keys() -> None:
    """Access keys of the interfaces: add and retire them while the server runs (no restart)."""


@keys.command("list")
@JSON_OPTION
def keys_list(as_json: bool) -> None:
    """List the keys by fingerprint (never the keys), in the order they are tried."""
    settings = settings_or_exit()
    with bound_database(settings):
        infos = keystore.list_keys(settings)
    if as_json:
        print_json(
            [
                {
                    "interface": k.interface,
                    "fingerprint": k.fingerprint,
                    "source": k.source,
                    "active": k.active,
                    "created_at": json_value(k.created_at),
                    "retired_at": json_value(k.retired_at),
                    "note": k.note,
                }
                for k in infos
            ]
        )
        return
    print_table(
        ("interface", "fingerprint", "source", "status", "added", "retired", "note"),
        (
            (
                k.interface,
                k.fingerprint,
                k.source,
                "active" if k.active else "retired",
                k.created_at,
                k.retired_at,
                k.note,
            )
            for k in infos
        ),
    )


def _interactive() -> bool:
    """Whether standard input is a terminal (then the key is asked for, hidden, twice)."""
    return sys.stdin.isatty()


def _read_key() -> str:
    """The key from a hidden prompt, or the first line of standard input."""
    if _interactive():
        return click.prompt("Key", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    if not line.strip():
        raise click.ClickException(
            "no key: type it at the prompt, pipe it on standard input or use --generate"
        )
    return line


@keys.command("add")
@click.argument("interface")
@click.option("--generate", is_flag=True, help="Generate a random key (UUID4) and print it, once.")
@click.option("--note", help="A reminder stored with the key (at most 100 characters).")
def keys_add(interface: str, generate: bool, note: str | None) -> None:
    """Add a key to INTERFACE (one the enabled adapters declare: basic, notify; kit with koogallery_kit);
    every worker accepts it at once."""
    settings = settings_or_exit()
    key = str(uuid.uuid4()) if generate else _read_key()
    with bound_database(settings):
        try:
            fp = keystore.add_key(settings, interface, key, note)
        except keystore.KeyStoreError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"added {interface} key {fp}: every worker accepts it now")
    if generate:
        click.echo(f"key (shown only now; enter it in the seller console): {key}")


@keys.command("retire")
@click.argument("fingerprint")
@click.option("--note", help="Why (at most 100 characters).")
def keys_retire(fingerprint: str, note: str | None) -> None:
    """Stop accepting the key with FINGERPRINT (stored or from the environment) in every worker at once."""
    settings = settings_or_exit()
    with bound_database(settings):
        try:
            keystore.retire_key(settings, fingerprint, note)
        except keystore.KeyStoreError as exc:
            raise click.ClickException(str(exc)) from None
        infos = keystore.list_keys(settings)
    info = next(k for k in infos if k.fingerprint == fingerprint.strip().lower())
    click.echo(
        f"retired {info.interface} key {info.fingerprint} ({info.source}): every worker refuses it now"
    )
    if info.source == keystore.ENV:
        declared = keystore.interfaces(settings).get(info.interface)
        click.echo(
            f"remove it from {declared.env_var if declared else 'the environment'} at the next restart"
        )
    if not any(k.active for k in infos if k.interface == info.interface):
        click.echo(f"the {info.interface} interface has no active key left: its calls now fail with 000001")
