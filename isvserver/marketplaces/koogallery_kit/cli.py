"""`isvserver kit keygen` and `isvserver tenants list/show`: the Kit key pair and what Kit sync stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from isvserver.cli.helpers import (
    bound_database,
    clean,
    print_fields,
    print_json,
    print_table,
    settings_or_exit,
)
from isvserver.marketplaces.koogallery_kit import reads
from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair, public_key_base64

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@click.group()
def kit() -> None:
    """The joint-operation Kit interfaces."""


@kit.command("keygen")
@click.argument("private_key_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bits", default=3072, show_default=True, type=click.IntRange(3072, 8192), help="RSA size.")
def keygen(private_key_file: Path, bits: int) -> None:
    """Write a new RSA key pair's private key to PRIVATE_KEY_FILE (mode 0600); print the public key.

    Upload the public key in the seller console; point ISV_KIT_PRIVATE_KEY_FILE at the file.
    """
    if private_key_file.exists():
        raise click.ClickException(
            f"{private_key_file} exists: choose a new file (a key is never overwritten)"
        )
    private_pem, public_pem = generate_key_pair(bits)
    fd = os.open(private_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    os.chmod(private_key_file, 0o600)
    click.echo(
        f"private key written to {private_key_file} (mode 0600): set ISV_KIT_PRIVATE_KEY_FILE to it", err=True
    )
    click.echo("public key to upload in the seller console:", err=True)
    click.echo(public_key_base64(public_pem))


@click.group()
def tenants() -> None:
    """Tenants, applications, users and organisations the Kit sync stored (PII masked)."""


@tenants.command("list")
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="At most this many."
)
@JSON_OPTION
def tenants_list(limit: int, as_json: bool) -> None:
    """The most recently changed tenants with their counts."""
    settings = settings_or_exit()
    with bound_database(settings):
        rows = reads.tenants(limit)
    if as_json:
        print_json(rows)
        return
    headers = ("instance_id", "tenant_id", "tenant_code", "domain", "apps", "users", "orgs", "deleted")
    print_table(
        headers,
        [
            (
                r["instance_id"],
                r["tenant_id"],
                r["tenant_code"],
                r["domain_name"],
                r["applications"],
                r["users"],
                r["orgs"],
                r["deleted_at"],
            )
            for r in rows
        ],
    )


@tenants.command("show")
@click.argument("instance_id")
@click.option("--show-pii", is_flag=True, help="Print buyers' names, mobiles and emails instead of masks.")
@JSON_OPTION
def tenants_show(instance_id: str, show_pii: bool, as_json: bool) -> None:
    """One tenant: its applications (never a secret), users and organisation tree."""
    settings = settings_or_exit()
    with bound_database(settings):
        detail = reads.tenant_detail(instance_id, settings.data_keys, show_pii)
    if detail is None:
        raise click.ClickException(f"no Kit tenant has instance id {instance_id!r}")
    if as_json:
        print_json(detail)
        return
    print_fields((name, value) for name, value in detail.items() if not isinstance(value, list))
    for name, value in detail.items():
        if name == "orgs" and value:
            click.echo("\norgs:")
            print_table(("org_code", "org_name"), tree_rows(value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"\n{name}:")
            keys = [k for k in value[0] if not isinstance(value[0][k], list | dict)]
            print_table(keys, [[item.get(k) for k in keys] for item in value])


def tree_rows(nodes: list[dict[str, Any]], depth: int = 0) -> list[tuple[str, Any]]:
    """The org tree as table rows, each child indented under its parent, depth first."""
    rows: list[tuple[str, Any]] = []
    for node in nodes:
        rows.append(("  " * depth + clean(node["org_code"]), node["org_name"]))
        rows.extend(tree_rows(node.get("children") or [], depth + 1))
    return rows
