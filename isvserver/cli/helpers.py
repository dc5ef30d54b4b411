"""What every `isvserver` command shares: settings, the database, and output safe for a terminal."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from peewee import DatabaseError

from isvserver import db
from isvserver.adapters import load
from isvserver.settings import DEV_KEYS_FILE, Settings, SettingsError, load_settings, read, redacted_url

DEFAULT_LIMIT = 50
LIMIT = click.IntRange(1, 100_000)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
MASK = "***"


def settings_or_exit() -> Settings:
    """The settings, or exit 1 with the SettingsError message."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None


@contextmanager
def bound_database(settings: Settings) -> Iterator[None]:
    """Bind and connect the database for the block; a database error ends the command in one line."""
    bound = db.bind(settings.database_url)
    try:
        with db.connected():
            yield
    except DatabaseError as exc:
        reason = " ".join(str(exc).split())
        hint = " (run `isvserver migrate`)" if "no such table" in reason or "does not exist" in reason else ""
        raise click.ClickException(
            f"database error on {redacted_url(settings.database_url)}: {type(exc).__name__}: {reason}{hint}"
        ) from None
    finally:
        db.close_all(bound)


def clean(value: Any) -> str:
    """A value as safe one-line text: '-' for none, control characters escaped (ids come from callers)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def short(value: Any, width: int = 40) -> str:
    text = clean(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as plain columns aligned under their headers."""
    cells = [list(headers), *([clean(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """Print name/value lines with the values aligned."""
    pairs = list(pairs)
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name.ljust(width)}  {clean(value)}")


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    return value


def print_json(value: Any) -> None:
    """Print JSON; every non-ASCII or control character escaped, so nothing reaches the terminal raw."""
    click.echo(json.dumps(value, default=json_value, indent=2, ensure_ascii=True))


def row(model: Any, names: Sequence[str]) -> dict[str, Any]:
    return {name: json_value(getattr(model, name)) for name in names}


def more(count: int, limit: int) -> None:
    if count > limit:
        click.echo(f"(only the first {limit} shown; raise --limit for more)", err=True)


def announced_settings() -> Settings:
    """Load the settings; in development, say where the keys are and print each key just made (the data
    key only by name: it never leaves the file; a private key by its public half)."""
    keys_path = Path(os.environ.get("ISV_INSTANCE_DIR") or "instance").resolve() / DEV_KEYS_FILE
    before = _stored(keys_path)
    settings = settings_or_exit()
    if settings.env != "development" or not keys_path.exists():
        return settings
    keys = _stored(keys_path)
    made = [name for name in keys if name not in before]
    if not made:
        click.echo(f"development mode: keys from {keys_path}", err=True)
        return settings
    click.echo(f"development mode: generated keys, saved in {keys_path}", err=True)
    shown: list[tuple[str, str, str]] = [("data key", "ISV_DATA_KEY", "kept in that file only")]
    for name in settings.marketplaces:
        adapter = load(name)
        for interface in adapter.key_interfaces:
            shown.append(
                (f"{interface.name} interface key", interface.env_var, keys.get(interface.env_var, ""))
            )
        for secret in adapter.development_secrets:
            value = keys.get(secret.env_var, "")
            shown.append(
                (secret.description or secret.env_var, secret.env_var, value and secret.shown(value))
            )
    for label, variable, value in shown:
        if variable in made and value and not read(os.environ, variable):  # a set variable wins: unused
            click.echo(f"  {label} ({variable}): {value}", err=True)
    return settings


def _stored(path: Path) -> dict[str, str]:
    """The development keys file's names and values (empty when there is none)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def run_migrations(settings: Settings) -> None:
    from isvserver.db import close_all, make_database
    from isvserver.migrations import migrate

    database = make_database(settings.database_url)
    try:
        applied = migrate(database)
    except Exception as exc:
        reason = " ".join(str(exc).split())  # one line: drivers' messages span several
        raise click.ClickException(
            f"migration failed on {redacted_url(settings.database_url)}: {type(exc).__name__}: {reason}"
        ) from None
    finally:
        close_all(database)  # nothing open may cross into gunicorn (serve execs it next)
    names = ", ".join(m.label for m in applied) or "none (schema is current)"
    click.echo(f"migrations applied: {names}", err=True)
