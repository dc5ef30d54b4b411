"""The marketplace's side for sellers: `isvserver sign`, and what `isvserver simulate` sends to the V2
interface (one command per activity, and its part of `simulate flow`)."""

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

from isvserver.adapters import Simulation
from isvserver.cli.simulate import URL, explain, reaching
from isvserver.marketplaces.koogallery.config import BASIC, NOTIFY
from isvserver.marketplaces.koogallery.marketplace import call
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


def _print_answer(label: str, answer: Any, show_secrets: bool) -> None:
    shown = answer.json if show_secrets else _masked(answer.json)
    sign_state = "valid" if answer.body_sign_ok else "INVALID"
    click.echo(
        f"{label}: HTTP {answer.status}, Body-Sign {sign_state}, {json.dumps(shown, ensure_ascii=False)}"
    )
    explain(answer)


SENDS = {
    "newInstance": "creates an instance (orderId, orderLineId and businessId made up unless given)",
    "queryInstance": "reads instances' login details (instanceId=ID[,ID…])",
    "refreshInstance": "renews an instance (instanceId=ID; a new order, RENEWAL, expiry in a year)",
    "updateInstanceStatus": "freezes (status=FREEZE, the default) or unfreezes (status=UNFREEZE) one",
    "releaseInstance": "releases an instance (instanceId=ID orderId=… orderLineId=…)",
    "upgradeInstance": "upgrades an instance (instanceId=ID; a new order made up)",
    "changeInstanceCheck": "asks whether a renewal change fits (instanceId=ID productInfo=JSON)",
    "orderNotify": "notifies an order (orderNotify interface: signed with ISV_NOTIFY_KEYS)",
}


def activity_command(activity: str) -> click.Command:
    """`isvserver simulate ACTIVITY URL [name=value …]`: one signed V2 call."""

    @click.command(
        activity,
        context_settings={"ignore_unknown_options": True},
        short_help=f"KooGallery V2: {SENDS[activity]}.",
    )
    @click.argument("url", type=URL)
    @click.argument("fields", nargs=-1)
    @click.option("--test", "test_flag", is_flag=True, help="Send testFlag=1 (a debug request).")
    @KEY_OPTION
    @click.option("--show-secrets", is_flag=True, help="Print passwords in replies instead of ***.")
    def command(
        url: str, fields: tuple[str, ...], test_flag: bool, key: str | None, show_secrets: bool
    ) -> None:
        given = {}
        for item in fields:
            name, sep, value = item.partition("=")
            if not sep or name.startswith("-"):
                raise click.BadParameter(f"{item!r} is not name=value", param_hint="FIELDS")
            given[name] = value
        body: dict[str, Any] = {"activity": activity, **_defaults(activity, given)}
        if "productInfo" in body:
            try:
                body["productInfo"] = json.loads(body["productInfo"])
            except ValueError:
                raise click.BadParameter("productInfo must be JSON", param_hint="FIELDS") from None
        if test_flag:
            body["testFlag"] = "1"
        with reaching(url):
            answer = call(url, _key_for(activity, key), body)
        _print_answer(activity, answer, show_secrets)
        raise SystemExit(0 if answer.body_sign_ok and answer.code in ("000000", "000004") else 1)

    interface = NOTIFY if activity == "orderNotify" else BASIC
    command.help = (
        f"Act as KooGallery: send one signed {activity} to URL (the produce URL, e.g. "
        f"http://127.0.0.1:8000/saasproduce) with FIELDS (name=value): {SENDS[activity]}. Signed with "
        f"--key, else ISV_SIGN_KEY, else {interface.env_var} (or the development keys). Checks the "
        "reply's Body-Sign; exit 1 unless 000000 or 000004."
    )
    return command


def _flow(url: str, test_flag: bool, key: str | None) -> bool:
    """The V2 part of `isvserver simulate flow`."""
    return run_flow(url, _key_for("newInstance", key), test_flag, _print_answer_masked)


def _print_answer_masked(label: str, answer: Any) -> None:
    _print_answer(label, answer, False)


SIMULATIONS = (
    *(Simulation(activity, activity_command(activity)) for activity in ACTIVITIES),
    Simulation("koogallery flow", None, flow=_flow),
)


def run_flow(url: str, key: str, test_flag: bool, report: Callable[[str, Any], None]) -> bool:
    """The whole life of one instance against `url`; True when every answer is the right one."""
    from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query

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
