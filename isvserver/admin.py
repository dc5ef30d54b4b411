"""The operator's commands: `isvserver instances`, `isvserver log` and `isvserver keys`."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from peewee import DatabaseError

from isvserver import db, keystore
from isvserver.lifecycle import State
from isvserver.marketplaces.koogallery import order_lines
from isvserver.marketplaces.koogallery.models import OrderLineRecord
from isvserver.marketplaces.koogallery.orders_cli import MASK
from isvserver.models import CallbackLog, Delivery, Instance, InstanceEvent
from isvserver.sealing import DataKeys, UnsealError
from isvserver.settings import Settings, SettingsError, load_settings, redacted_url

DEFAULT_LIMIT = 50
LIMIT = click.IntRange(1, 100_000)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
INSTANCE_FIELDS = (
    "instance_id",
    "marketplace",
    "state",
    "is_trial",
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
ORDER_LINE_FIELDS = (
    "order_id",
    "order_line_id",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "order_type",
    "product_id",
    "sku_code",
    "charging_mode",
    "period_type",
    "period_number",
    "expire_at",
    "fetched_at",
)  # never details_sealed; the buyer only masked
CALL_FIELDS = tuple(f.name for f in CallbackLog._meta.sorted_fields)


# --- settings, database, output ---------------------------------------------------------------------


def _settings() -> Settings:
    """The settings, or exit 1 with the SettingsError message."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None


@contextmanager
def _database(settings: Settings) -> Iterator[None]:
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


def _clean(value: Any) -> str:
    """A value as safe one-line text: '-' for none, control characters escaped (ids come from callers)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _short(value: Any, width: int = 40) -> str:
    text = _clean(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as plain columns aligned under their headers."""
    cells = [list(headers), *([_clean(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """Print name/value lines with the values aligned."""
    pairs = list(pairs)
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name.ljust(width)}  {_clean(value)}")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    return value


def _print_json(value: Any) -> None:
    """Print JSON; every non-ASCII or control character escaped, so nothing reaches the terminal raw."""
    click.echo(json.dumps(value, default=_json_value, indent=2, ensure_ascii=True))


def _row(model: Any, names: Sequence[str]) -> dict[str, Any]:
    return {name: _json_value(getattr(model, name)) for name in names}


def _more(count: int, limit: int) -> None:
    if count > limit:
        click.echo(f"(only the first {limit} shown; raise --limit for more)", err=True)


# --- instances ----------------------------------------------------------------------------------------


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
    settings = _settings()
    with _database(settings):
        query = Instance.select().order_by(Instance.created_at.desc(), Instance.id.desc())
        if state:
            query = query.where(Instance.state == state)
        if order_id:
            query = query.where(_order_condition(order_id))
        rows = list(query.limit(limit + 1))
    _more(len(rows), limit)
    rows = rows[:limit]
    if as_json:
        _print_json([_row(r, INSTANCE_FIELDS) for r in rows])
        return
    if not rows:
        click.echo("no instances match")
        return
    _table(
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
    return _row(
        event, ("created_at", "kind", "from_state", "to_state", "order_id", "order_line_id", "detail")
    )


def _delivery_out(delivery: Delivery) -> dict[str, Any]:
    return _row(
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


def _instance_calls(instance: Instance, orders: set[str], limit: int) -> list[CallbackLog]:
    """The calls about this instance (alone or in a list of ids) or one of its orders, newest first."""
    query = (
        CallbackLog.select()
        .where(CallbackLog.instance_id.contains(instance.instance_id) | CallbackLog.order_id.in_(orders))
        .order_by(CallbackLog.received_at.desc(), CallbackLog.id.desc())
    )
    calls = []
    for call in query.iterator():
        if call.order_id in orders or _names_instance(call, instance.instance_id):
            calls.append(call)
            if len(calls) > limit:
                break
    return calls


def _names_instance(call: CallbackLog, instance_id: str) -> bool:
    """Whether the call's instanceId (one id or a comma-separated list) names this instance."""
    return instance_id in {i.strip() for i in (call.instance_id or "").split(",")}


def _order_line_out(record: OrderLineRecord, data_keys: DataKeys) -> dict[str, Any]:
    """The order line's columns, whether its details are stored and readable, and its buyer masked."""
    try:
        document = order_lines.record_details(record, data_keys)
        details = None if document is None else "stored"
    except UnsealError:
        document, details = None, "unreadable"
    buyer = (document or {}).get("buyerInfo")
    return {
        **{name: getattr(record, name) for name in ORDER_LINE_FIELDS},  # times as _print_json writes them
        "details": details,
        "buyerInfo": buyer and {name: None if value is None else MASK for name, value in buyer.items()},
    }


def _order_line_table(lines: Sequence[dict[str, Any]]) -> None:
    def period(line: dict[str, Any]) -> str | None:
        return " ".join(str(v) for v in (line["period_number"], line["period_type"]) if v is not None) or None

    def buyer(line: dict[str, Any]) -> str | None:
        if line["details"] == "unreadable":
            return "unreadable (check ISV_DATA_KEY)"
        return " ".join(f"{name}={value}" for name, value in (line["buyerInfo"] or {}).items() if value)

    headers = ("order line", "status", "sku", "product", "charging", "period", "expiry", "fetched", "buyer")
    _table(
        (*headers, "error"),
        (
            (
                f"{line['order_id']}/{line['order_line_id']}",
                line["status"] + (f", {line['attempts']} failed attempt(s)" if line["attempts"] else ""),
                line["sku_code"],
                line["product_id"],
                line["charging_mode"],
                period(line),
                line["expire_at"],
                line["fetched_at"],
                buyer(line),
                line["last_error"],
            )
            for line in lines
        ),
    )


@instances.command("show")
@click.argument("instance_id")
@click.option(
    "--limit", default=DEFAULT_LIMIT, show_default=True, type=LIMIT, help="At most this many calls."
)
@JSON_OPTION
def instances_show(instance_id: str, limit: int, as_json: bool) -> None:
    """Show an instance (never its password), its lifecycle history and the calls about it."""
    settings = _settings()
    with _database(settings):
        instance = Instance.select().where(Instance.instance_id == instance_id).first()
        if instance is None:
            raise click.ClickException(f"no instance {_clean(instance_id)}")
        events = list(instance.events.order_by(InstanceEvent.created_at, InstanceEvent.id))
        orders = {instance.order_id} | {e.order_id for e in events if e.order_id}
        calls = _instance_calls(instance, orders, limit)
        records = order_lines.for_instance(instance)
        handed_over = {
            d.event_id: _delivery_out(d) for d in Delivery.select().where(Delivery.instance == instance)
        }
    lines = [_order_line_out(record, settings.data_keys) for record in records]
    _more(len(calls), limit)
    calls = calls[:limit]
    password = "stored encrypted (not shown)" if instance.password_encrypted else None
    if as_json:
        _print_json(
            {
                "instance": {**_row(instance, INSTANCE_FIELDS), "password_stored": password is not None},
                "events": [{**_event_out(e), "delivery": handed_over.get(e.id)} for e in events],
                "order_lines": lines,
                "calls": [_row(c, CALL_FIELDS) for c in calls],
            }
        )
        return
    _fields(
        [
            *((name, getattr(instance, name)) for name in INSTANCE_FIELDS if name != "memo"),
            ("password", password),
            ("memo", instance.memo),
        ]
    )
    click.echo(f"\nlifecycle history ({len(events)} events)")
    _table(
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
    click.echo(f"\norder details ({len(lines)} order lines)")
    _order_line_table(lines)
    click.echo(f"\ncallback log ({len(calls)} calls, newest first)")
    _call_table(calls)


# --- the callback log -----------------------------------------------------------------------------------


@click.group("log")
def log_group() -> None:
    """The callback log: every call the marketplace made (read only)."""


def _call_table(calls: Sequence[CallbackLog]) -> None:
    _table(
        ("time", "request_id", "activity", "verdict", "code", "latency", "ids"),
        (
            (
                c.received_at,
                c.request_id,
                (c.activity or "-") + (" [test]" if c.test_flag else ""),
                c.verdict,
                c.result_code,
                f"{c.latency_ms:.1f} ms",
                " ".join(
                    f"{label}={_short(value)}"
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
    settings = _settings()
    with _database(settings):
        query = CallbackLog.select().order_by(CallbackLog.received_at.desc(), CallbackLog.id.desc())
        for column, value in (
            (CallbackLog.order_id, order_id),
            (CallbackLog.result_code, code),
            (CallbackLog.activity, activity),
        ):
            if value:
                query = query.where(column == value)
        if instance_id:
            query = query.where(CallbackLog.instance_id.contains(instance_id))
            calls = [c for c in query.iterator() if _names_instance(c, instance_id)][: limit + 1]
        else:
            calls = list(query.limit(limit + 1))
    _more(len(calls), limit)
    calls = calls[:limit]
    if as_json:
        _print_json([_row(c, CALL_FIELDS) for c in calls])
    elif calls:
        _call_table(calls)
    else:
        click.echo("no calls match")


@log_group.command("show")
@click.argument("request_id")
@JSON_OPTION
def log_show(request_id: str, as_json: bool) -> None:
    """Show every column of one call (the X-Request-Id of its reply)."""
    settings = _settings()
    with _database(settings):
        call = CallbackLog.select().where(CallbackLog.request_id == request_id).first()
    if call is None:
        raise click.ClickException(f"no call with request id {_clean(request_id)}")
    if as_json:
        _print_json(_row(call, CALL_FIELDS))
    else:
        _fields((name, getattr(call, name)) for name in CALL_FIELDS)


# --- access keys --------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Access keys of the interfaces: add and retire them while the server runs (no restart)."""


@keys.command("list")
@JSON_OPTION
def keys_list(as_json: bool) -> None:
    """List the keys by fingerprint (never the keys), in the order they are tried."""
    settings = _settings()
    with _database(settings):
        infos = keystore.list_keys(settings)
    if as_json:
        _print_json(
            [
                {
                    "interface": k.interface,
                    "fingerprint": k.fingerprint,
                    "source": k.source,
                    "active": k.active,
                    "created_at": _json_value(k.created_at),
                    "retired_at": _json_value(k.retired_at),
                    "note": k.note,
                }
                for k in infos
            ]
        )
        return
    _table(
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
    """Add a key to INTERFACE (basic or notify); every worker accepts it at once."""
    settings = _settings()
    key = str(uuid.uuid4()) if generate else _read_key()
    with _database(settings):
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
    settings = _settings()
    with _database(settings):
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


COMMANDS = (instances, log_group, keys)

# The helpers adapters' commands share (public names: an adapter imports no private one).
settings_or_exit = _settings
bound_database = _database
print_json = _print_json
print_table = _table
print_fields = _fields
