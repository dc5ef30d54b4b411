"""The marketplace's side for sellers: `isvserver sign`, and `isvserver simulate` (one call or a flow)."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from isvserver.adapters import Simulation, enabled
from isvserver.marketplaces.koogallery.config import BASIC, NOTIFY
from isvserver.marketplaces.koogallery.schemas import ACTIVITIES
from isvserver.settings import SettingsError, existing_keys

SECRET_FIELDS = ("password",)


def _read_body(body: str) -> bytes:
    """BODY as given, `@file` for a file's bytes, or `-` for standard input."""
    if body == "-":
        return sys.stdin.buffer.read()
    if body.startswith("@"):
        return Path(body[1:]).read_bytes()
    return body.encode("utf-8")


KEY_DEFAULT = "the configured key (ISV_ACCESS_KEYS, orderNotify: ISV_NOTIFY_KEYS, or the development keys)"


def _interactive() -> bool:
    """Whether a person at a terminal can be asked for the key."""
    return sys.stdin.isatty()


def _activity_of(payload: bytes) -> str | None:
    """The body's activity, if it is a JSON object naming one."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body.get("activity") if isinstance(body, dict) else None


KEY_OPTION = click.option(
    "--key",
    envvar="ISV_SIGN_KEY",
    show_envvar=True,
    show_default=KEY_DEFAULT,
    help="Access key to sign with.",
)


@click.command()
@KEY_OPTION
@click.option("--body", required=True, help="The exact body: text, @file or - for stdin.")
@click.option("--timestamp", show_default="now, in ms", help="As sent in the query string.")
@click.option("--nonce", show_default="a fresh one", help="As sent in the query string.")
def sign(key: str | None, body: str, timestamp: str | None, nonce: str | None) -> None:
    """Print the request signature and the Body-Sign of a body, to debug a rejected call.

    The key: --key, else ISV_SIGN_KEY, else the configured key; asked for only on a terminal.
    """
    from isvserver.marketplaces.koogallery.signing import body_sign, request_signature

    payload = _read_body(body)
    key = key or _configured_key(_activity_of(payload) or "")
    if not key:
        if body == "-" or not _interactive():
            raise click.ClickException(
                "no key: pass --key, set ISV_SIGN_KEY or configure ISV_ACCESS_KEYS (no terminal to ask on)"
            )
        key = click.prompt("Access key", hide_input=True)
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


def _configured_key(activity: str) -> str | None:
    """The first configured key of the activity's interface, read without creating any key."""
    interface = NOTIFY if activity == "orderNotify" else BASIC
    try:
        keys = existing_keys(os.environ, interface.env_var)
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    return keys[0] if keys else None


def _key_for(activity: str, key: str | None) -> str:
    """The key given, else the configured one of the interface this activity belongs to."""
    key = key or _configured_key(activity)
    if not key:
        interface = NOTIFY if activity == "orderNotify" else BASIC
        raise click.ClickException(
            f"no key: pass --key, set ISV_SIGN_KEY or {interface.env_var}, or run from the folder the "
            "server runs in (its ISV_INSTANCE_DIR holds the development keys)"
        )
    return key


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


def simulations() -> dict[str, Simulation]:
    """What the adapters ISV_MARKETPLACES enables can simulate, by name."""
    return {
        simulation.name: simulation for adapter in enabled(os.environ) for simulation in adapter.simulations
    }


def _print_answer(label: str, answer: Any, show_secrets: bool) -> None:
    shown = answer.json if show_secrets else _masked(answer.json)
    sign_state = "valid" if answer.body_sign_ok else "INVALID"
    click.echo(
        f"{label}: HTTP {answer.status}, Body-Sign {sign_state}, {json.dumps(shown, ensure_ascii=False)}"
    )


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("activity")
@click.argument("url")
@click.argument("fields", nargs=-1)
@click.option("--test", "test_flag", is_flag=True, help="Send testFlag=1 (a debug request).")
@KEY_OPTION
@click.option("--show-secrets", is_flag=True, help="Print passwords in replies instead of ***.")
@click.pass_context
def simulate(
    ctx: click.Context,
    activity: str,
    url: str,
    fields: tuple[str, ...],
    test_flag: bool,
    key: str | None,
    show_secrets: bool,
) -> None:
    """Act as the marketplace: send one signed ACTIVITY to URL with FIELDS (name=value), or run `flow`.

    `isvserver simulate flow URL` runs new → query → refresh → freeze → unfreeze → upgrade → release,
    then the flows of the other enabled interfaces (Kit sync when koogallery_kit is enabled), and exits
    non-zero on any wrong answer. `isvserver simulate kit ACTIVITY URL [name=value…] [--test] [--key K]
    [--public-key FILE]` sends one Kit sync call (koogallery_kit enabled).
    """
    others = simulations()
    if activity != "flow" and activity not in ACTIVITIES and activity not in others:
        raise click.BadParameter(
            f"{activity!r} is not an activity; use one of: flow, {', '.join([*ACTIVITIES, *others])}",
            param_hint="ACTIVITY",
        )
    given_key = ctx.get_parameter_source("key") == ParameterSource.COMMANDLINE
    try:
        _simulate(others, activity, url, fields, test_flag, key, given_key, show_secrets)
    except OSError as exc:  # urllib's URLError, refused or reset connections, timeouts
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise click.ClickException(f"cannot reach {url}: {reason} (is the server running?)") from None


def _simulate(
    others: dict[str, Simulation],
    activity: str,
    url: str,
    fields: tuple[str, ...],
    test_flag: bool,
    key: str | None,
    given_key: bool,
    show_secrets: bool,
) -> None:
    """One activity, another interface's simulation, or the flow; exits 0 or 1."""
    from isvserver.marketplaces.koogallery.marketplace import call

    if activity in others:
        args = [url, *fields, *(["--test"] if test_flag else [])]
        if key and given_key:
            args += ["--key", key]  # ISV_SIGN_KEY is the basic interface's: never passed on
        if show_secrets and any(p.name == "show_secrets" for p in others[activity].command.params):
            args.append("--show-secrets")
        others[activity].command.main(args=args, prog_name=f"isvserver simulate {activity}")
        return
    if activity == "flow":
        ok = run_flow(
            url, _key_for("newInstance", key), test_flag, lambda *a: _print_answer(*a, show_secrets)
        )
        for simulation in others.values():
            if simulation.flow is not None:
                ok = simulation.flow(url, test_flag) and ok
        raise SystemExit(0 if ok else 1)
    given = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or name.startswith("-"):
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
    from isvserver.marketplaces.koogallery.marketplace import call, encode_body, signed_query

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
