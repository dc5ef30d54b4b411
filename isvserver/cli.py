"""The `isvserver` command: migrate, serve, sign, simulate, and the admin commands."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from isvserver import queue
from isvserver.adapters import AdapterError, load
from isvserver.admin import instances, keys, log_group
from isvserver.files import restrict_umask
from isvserver.reconcile_cli import reconcile
from isvserver.rotation import rotate_data_key
from isvserver.settings import DEV_KEYS_FILE, Settings, SettingsError, load_settings, redacted_url

GUNICORN_CONFIG = Path(__file__).resolve().parent / "web" / "gunicorn.conf.py"  # installed with it
APP_TARGET = "isvserver:create_app()"
SECRET_FIELDS = ("password",)


def _settings() -> Settings:
    """Load the settings or stop with the message (exit 2)."""
    try:
        return load_settings()
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None


def _settings_announced() -> Settings:
    """Load the settings; in development, say where the keys are (printing them only when just made)."""
    keys_path = Path(os.environ.get("ISV_INSTANCE_DIR") or "instance").resolve() / DEV_KEYS_FILE
    existed = keys_path.exists()
    settings = _settings()
    if settings.env != "development" or not keys_path.exists():
        return settings
    if existed:
        click.echo(f"development mode: keys from {keys_path}", err=True)
        return settings
    keys = json.loads(keys_path.read_text(encoding="utf-8"))
    click.echo(f"development mode: generated keys, saved in {keys_path}", err=True)
    for name in settings.marketplaces:
        for interface in load(name).key_interfaces:
            if interface.env_var in keys:
                label = f"{interface.name} interface key"
                click.echo(f"  {label:<24} ({interface.env_var}): {keys[interface.env_var]}", err=True)
    return settings


def _migrate(settings: Settings) -> None:
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
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (schema is current)"
    click.echo(f"migrations applied: {names}", err=True)


@click.group()
def main() -> None:
    """isvserver: the server a SaaS seller runs for Huawei Cloud KooGallery."""
    restrict_umask()  # files it (and gunicorn, exec'd by serve) creates are its user's alone


@main.command()
def migrate() -> None:
    """Apply pending schema migrations (run before the workers start)."""
    _migrate(_settings_announced())


@main.command()
@click.option(
    "--bind", envvar="ISV_BIND", default="127.0.0.1:8000", show_default=True, help="HOST:PORT [ISV_BIND]."
)
@click.option(
    "--workers",
    envvar="ISV_WORKERS",
    default=3,
    show_default=True,
    type=click.IntRange(1, 64),
    help="gunicorn workers [ISV_WORKERS].",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="gunicorn configuration file [default: isvserver/web/gunicorn.conf.py, installed with it].",
)
@click.option("--migrate/--no-migrate", "run_migrations", default=True, help="Migrate before starting.")
@click.option(
    "--jobs/--no-jobs",
    "run_jobs",
    envvar="ISV_SERVE_JOBS",
    default=True,
    show_default=True,
    help="Also run the job consumer (use --no-jobs when `isvserver worker` runs elsewhere) [ISV_SERVE_JOBS].",
)
def serve(bind: str, workers: int, config_path: str | None, run_migrations: bool, run_jobs: bool) -> None:
    """Migrate, then run the produce endpoint under gunicorn, with the job consumer beside it."""
    settings = _settings_announced()
    if run_migrations:
        _migrate(settings)
    where = ", ".join(f"http://{bind}{load(name).url_prefix(settings)}" for name in settings.marketplaces)
    click.echo(
        f"isvserver ({settings.env}) on {where} with {workers} workers, "
        f"database {redacted_url(settings.database_url)}, jobs "
        + (
            f"consumed here from {queue.describe(settings)}" if run_jobs else "consumed by `isvserver worker`"
        ),
        err=True,
    )
    os.environ["ISV_START_CONSUMER"] = "1" if run_jobs else "0"
    config = config_path or str(GUNICORN_CONFIG)
    argv = [sys.executable, "-m", "gunicorn", "-c", config, "--bind", bind, "--workers", str(workers)]
    os.execv(sys.executable, [*argv, APP_TARGET])  # noqa: S606 (replaces this process with gunicorn)


@main.command()
@click.option(
    "--threads",
    envvar="ISV_JOB_WORKERS",
    type=click.IntRange(1, 64),
    help="Jobs run at once [ISV_JOB_WORKERS, default 4].",
)
@click.option("--supervised", is_flag=True, hidden=True, help="Started by `isvserver serve`: stop with it.")
def worker(threads: int | None, supervised: bool) -> None:
    """Run the job consumer alone (provisioning, change delivery, order fetches, sweeps, reconcile)."""
    from isvserver import create_app

    settings = _settings()
    jobs = create_app(settings).extensions["isvserver"].jobs
    if not jobs.fetches_orders:
        logging.getLogger("isvserver.jobs").info(
            "order details are not fetched: ISV_MARKET_AK and ISV_MARKET_SK are not set"
        )
    jobs.sweep()  # what a killed consumer left behind
    threads = threads or settings.job_workers
    consumer = jobs.huey.create_consumer(
        workers=threads,
        worker_type="thread",
        periodic=True,
        initial_delay=0.05,
        backoff=1.3,
        max_delay=0.5,
        check_worker_health=True,
    )
    if supervised:
        _stop_with_parent()
    logging.getLogger("isvserver.jobs").info(
        "job consumer pid=%d threads=%d queue=%s",
        os.getpid(),
        threads,
        queue.describe(settings),
    )
    consumer.run()


def _stop_with_parent() -> None:
    """Stop gracefully (SIGINT) when the process that started this one is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@main.command("webhook-secret")
def webhook_secret() -> None:
    """Print a new ISV_WEBHOOK_SECRET (whsec_…) for the webhook provisioner."""
    from isvserver.provisioning.loader import generate_webhook_secret

    click.echo(generate_webhook_secret())


def _read_body(body: str) -> bytes:
    """BODY as given, `@file` for a file's bytes, or `-` for standard input."""
    if body == "-":
        return sys.stdin.buffer.read()
    if body.startswith("@"):
        return Path(body[1:]).read_bytes()
    return body.encode("utf-8")


@main.command()
@click.option("--key", envvar="ISV_SIGN_KEY", prompt=True, hide_input=True, help="Access key [ISV_SIGN_KEY].")
@click.option("--body", required=True, help="The exact body: text, @file or - for stdin.")
@click.option("--timestamp", help="As sent in the query string (default: now, in ms).")
@click.option("--nonce", help="As sent in the query string (default: a fresh one).")
def sign(key: str, body: str, timestamp: str | None, nonce: str | None) -> None:
    """Print the request signature and the Body-Sign of a body, to debug a rejected call."""
    from isvserver.marketplaces.koogallery.signing import body_sign, request_signature

    payload = _read_body(body)
    timestamp = timestamp or str(int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(32).upper()
    click.echo(f"timestamp:  {timestamp}")
    click.echo(f"nonce:      {nonce}")
    click.echo(f"signature:  {request_signature(key, payload, nonce, timestamp)}")
    click.echo(
        f"query:      ?signature={request_signature(key, payload, nonce, timestamp)}"
        f"&timestamp={timestamp}&nonce={nonce}"
    )
    click.echo(f"Body-Sign (if this body were a reply): {body_sign(key, payload)}")


def _key_for(activity: str, key: str | None) -> str:
    """The key given, else the configured one of the interface this activity belongs to."""
    if key:
        return key
    settings = _settings()
    keys = settings.keys("notify" if activity == "orderNotify" else "basic")
    if not keys:
        raise click.ClickException("no key: pass --key or set ISV_SIGN_KEY")
    return keys[0]


def _masked(value: Any) -> Any:
    """The reply with secret fields replaced, for printing."""
    if isinstance(value, dict):
        return {k: ("***" if k in SECRET_FIELDS and v else _masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _order_id() -> str:
    return "SIM" + datetime.now(UTC).strftime("%y%m%d%H%M%S") + secrets.token_hex(3).upper()


def _expire_time(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y%m%d%H%M%S")


def _defaults(activity: str, fields: dict[str, str]) -> dict[str, str]:
    """Fill in what a plausible marketplace call of `activity` carries, where not given."""
    order_id = fields.get("orderId") or _order_id()
    defaults: dict[str, dict[str, str]] = {
        "newInstance": {
            "orderId": order_id,
            "orderLineId": f"{order_id}-000001",
            "businessId": str(uuid.uuid4()),
        },
        "refreshInstance": {
            "orderId": order_id,
            "orderLineId": f"{order_id}-000001",
            "scene": "RENEWAL",
            "expireTime": _expire_time(365),
        },
        "upgradeInstance": {"orderId": order_id, "orderLineId": f"{order_id}-000001"},
        "orderNotify": {"orderId": order_id, "orderLineId": f"{order_id}-000001"},
        "updateInstanceStatus": {"status": "FREEZE"},
        "changeInstanceCheck": {"productInfo": "{}"},
    }
    return {**defaults.get(activity, {}), **fields}


def _print_answer(label: str, answer: Any, show_secrets: bool) -> None:
    shown = answer.json if show_secrets else _masked(answer.json)
    sign_state = "valid" if answer.body_sign_ok else "INVALID"
    click.echo(
        f"{label}: HTTP {answer.status}, Body-Sign {sign_state}, {json.dumps(shown, ensure_ascii=False)}"
    )


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("activity")
@click.argument("url")
@click.argument("fields", nargs=-1)
@click.option("--test", "test_flag", is_flag=True, help="Send testFlag=1 (a debug request).")
@click.option("--key", envvar="ISV_SIGN_KEY", help="Key to sign with [ISV_SIGN_KEY; default: configured].")
@click.option("--show-secrets", is_flag=True, help="Print passwords in replies instead of ***.")
def simulate(
    activity: str, url: str, fields: tuple[str, ...], test_flag: bool, key: str | None, show_secrets: bool
) -> None:
    """Act as the marketplace: send one signed ACTIVITY to URL with FIELDS (name=value), or run `flow`.

    `isvserver simulate flow URL` runs new → query → refresh → freeze → unfreeze → upgrade → release
    and exits non-zero on any wrong answer.
    """
    from isvserver.marketplaces.koogallery.client import call

    if activity == "flow":
        ok = run_flow(
            url, _key_for("newInstance", key), test_flag, lambda *a: _print_answer(*a, show_secrets)
        )
        raise SystemExit(0 if ok else 1)
    given = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not name=value", param_hint="FIELDS")
        given[name] = value
    body: dict[str, Any] = {"activity": activity, **_defaults(activity, given)}
    if "productInfo" in body:
        body["productInfo"] = json.loads(body["productInfo"])
    if test_flag:
        body["testFlag"] = "1"
    answer = call(url, _key_for(activity, key), body)
    _print_answer(activity, answer, show_secrets)
    raise SystemExit(0 if answer.body_sign_ok and answer.code in ("000000", "000004") else 1)


def run_flow(url: str, key: str, test_flag: bool, report: Callable[[str, Any], None]) -> bool:
    """The whole life of one instance against `url`; True when every answer is the right one."""
    from isvserver.marketplaces.koogallery.client import call, encode_body, signed_query

    extra = {"testFlag": "1"} if test_flag else {}
    order_id = _order_id()
    line = f"{order_id}-000001"
    failures = []

    def step(
        label: str,
        body: dict[str, Any],
        expect: tuple[str, ...],
        check: Callable[[dict], str | None] | None = None,
        query: str | None = None,
    ) -> dict[str, Any]:
        answer = call(url, key, {**body, **extra}, query=query)
        report(label, answer)
        problem = None
        if not answer.body_sign_ok:
            problem = "Body-Sign missing or invalid"
        elif answer.status != 200:
            problem = f"HTTP {answer.status}"
        elif answer.code not in expect:
            problem = f"resultCode {answer.code}, expected {' or '.join(expect)}"
        elif check is not None:
            problem = check(answer.json or {})
        if problem:
            failures.append(f"{label}: {problem}")
            click.echo(f"  FAIL {label}: {problem}", err=True)
        return answer.json or {}

    new = {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": line,
        "businessId": str(uuid.uuid4()),
    }
    first = step(
        "newInstance", new, ("000000", "000004"), lambda j: None if j.get("instanceId") else "no instanceId"
    )
    instance_id = first.get("instanceId")
    if not instance_id:
        return False
    step(
        "newInstance (resend)",
        {**new, "businessId": str(uuid.uuid4())},
        ("000000", "000004"),
        lambda j: None if j.get("instanceId") == instance_id else "a different instanceId on resend",
    )
    replayed = {**new, **extra}
    query = signed_query(key, encode_body(replayed))
    step("newInstance (signed)", new, ("000000", "000004"), query=query)
    step("newInstance (replayed)", new, ("000001",), query=query)

    def has_app_info(j: dict) -> str | None:
        info = j.get("info") or []
        ok = (
            info
            and info[0].get("instanceId") == instance_id
            and info[0].get("appInfo", {}).get("frontEndUrl")
        )
        return None if ok else "no appInfo.frontEndUrl for the instance"

    query_body = {"activity": "queryInstance", "instanceId": instance_id}
    deadline = time.monotonic() + 20  # an asynchronous provisioner answers 000004 for a while
    while call(url, key, {**query_body, **extra}).code == "000004" and time.monotonic() < deadline:
        time.sleep(0.5)
    step("queryInstance", query_body, ("000000",), has_app_info)
    renewal = _order_id()
    step(
        "refreshInstance",
        {
            "activity": "refreshInstance",
            "instanceId": instance_id,
            "orderId": renewal,
            "orderLineId": f"{renewal}-000001",
            "scene": "RENEWAL",
            "expireTime": _expire_time(400),
        },
        ("000000",),
    )
    step(
        "updateInstanceStatus FREEZE",
        {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "FREEZE"},
        ("000000",),
    )
    step(
        "updateInstanceStatus UNFREEZE",
        {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": "UNFREEZE"},
        ("000000",),
    )
    upgrade = _order_id()
    step(
        "upgradeInstance",
        {
            "activity": "upgradeInstance",
            "instanceId": instance_id,
            "orderId": upgrade,
            "orderLineId": f"{upgrade}-000001",
        },
        ("000000",),
    )
    release = {
        "activity": "releaseInstance",
        "instanceId": instance_id,
        "orderId": order_id,
        "orderLineId": line,
    }
    step("releaseInstance", release, ("000000",))
    step("releaseInstance (repeat)", release, ("000000",))
    step("queryInstance (released)", query_body, ("000000",) if test_flag else ("000003",))
    click.echo(f"flow: {'FAILED: ' + '; '.join(failures) if failures else 'all answers right'}", err=True)
    return not failures


main.add_command(instances)
main.add_command(log_group)
main.add_command(keys)
main.add_command(rotate_data_key)
main.add_command(reconcile)


def _adapter_commands() -> None:
    """The commands of the adapters ISV_MARKETPLACES enables (koogallery by default)."""
    names = os.environ.get("ISV_MARKETPLACES") or "koogallery"
    for name in dict.fromkeys(n.strip() for n in names.split(",") if n.strip()):
        with suppress(AdapterError):  # a wrong name is reported with the settings, by the command
            for command in load(name).cli_commands:
                main.add_command(command)


_adapter_commands()
