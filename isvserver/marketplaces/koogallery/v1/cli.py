"""`isvserver license keygen|verify` and `isvserver simulate v1 ACTIVITY URL [name=value…]`."""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from isvserver import licenses
from isvserver.marketplaces.koogallery.config import BASIC
from isvserver.settings import SettingsError, existing_keys


@click.group("license")
def license_group() -> None:
    """The Ed25519 license tokens of License products (ISV_LICENSE_SIGNING_KEY)."""


@license_group.command("keygen")
def license_keygen() -> None:
    """Print a new signing key (for ISV_LICENSE_SIGNING_KEY) and its public key (for your product)."""
    seed, public = licenses.keygen()
    click.echo(f"ISV_LICENSE_SIGNING_KEY={seed}")
    click.echo(f"public key (give it to your product to verify licenses): {public}")


@license_group.command("verify")
@click.argument("token")
@click.option(
    "--public-key",
    envvar="ISV_LICENSE_PUBLIC_KEY",
    show_envvar=True,
    show_default="derived from ISV_LICENSE_SIGNING_KEY",
    help="The public key that verifies licenses (URL-safe Base64).",
)
def license_verify(token: str, public_key: str | None) -> None:
    """Check a license TOKEN's signature offline and print what it grants; exit 1 if invalid or expired."""
    if not public_key:
        from isvserver.marketplaces.koogallery.config import license_key

        try:
            seed = license_key(os.environ)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        if seed is None:
            raise click.ClickException("no key: pass --public-key or set ISV_LICENSE_SIGNING_KEY")
        public_key = licenses.public_key_text(seed)
    try:
        payload = licenses.verify(token, public_key)
    except licenses.LicenseError as exc:
        click.echo(f"invalid: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(json.dumps(payload, sort_keys=True))
    if licenses.expired(payload):
        click.echo("valid signature, but the license has expired", err=True)
        raise SystemExit(1)
    click.echo("valid", err=True)


def _key(key: str | None) -> str:
    if key:
        return key
    try:
        keys = existing_keys(os.environ, BASIC.env_var)
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    if not keys:
        raise click.ClickException("no key: pass --key, set ISV_SIGN_KEY or ISV_ACCESS_KEYS")
    return keys[0]


def _order_id() -> str:
    return "SIMV1" + datetime.now(UTC).strftime("%y%m%d%H%M%S") + secrets.token_hex(3).upper()


def _expire_time(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y%m%d%H%M%S")


def defaults(activity: str, given: dict[str, str]) -> dict[str, str]:
    """What a plausible V1 call of `activity` carries, where not given."""
    order_id = given.get("orderId") or _order_id()
    purchase = {
        "orderId": order_id,
        "businessId": str(uuid.uuid4()),
        "customerId": "sim-customer",
        "skuCode": "sim-sku",
        "productId": "sim-product",
    }
    table: dict[str, dict[str, str]] = {
        "newInstance": purchase,
        "getLicense": purchase,
        "refreshInstance": {"orderId": order_id, "expireTime": _expire_time(365)},
        "refreshLicense": {"orderId": order_id, "expireTime": _expire_time(365)},
        "upgrade": {"orderId": order_id, "skuCode": "sim-sku-2", "productId": "sim-product"},
    }
    return {"activity": activity, **table.get(activity, {"orderId": order_id}), **given}


def _shown(answer: Any, key: str, encrypt_type: int, show_secrets: bool) -> dict[str, Any] | None:
    """The reply with appInfo credentials decrypted (masked unless asked), or None when it is not JSON."""
    from isvserver.marketplaces.koogallery.v1.marketplace import decrypted_app_info

    body = answer.json
    if body is None:
        return None

    def opened(info: dict[str, Any]) -> dict[str, Any]:
        try:
            plain = decrypted_app_info(info, key, encrypt_type)
        except ValueError:
            return {**info, "decrypted": "NO: a credential does not decrypt with this key"}
        if not show_secrets and plain.get("password"):
            plain["password"] = "***"  # noqa: S105 (a mask)
        return plain

    out = dict(body)
    if isinstance(out.get("appInfo"), dict):
        out["appInfo"] = opened(out["appInfo"])
    if isinstance(out.get("info"), list):
        out["info"] = [
            {**i, "appInfo": opened(i["appInfo"])} if isinstance(i.get("appInfo"), dict) else i
            for i in out["info"]
        ]
    if "license" in out and not show_secrets:
        out["license"] = out["license"][:24] + "…"
    return out


def send(url: str, key: str, params: dict[str, str], show_secrets: bool = False) -> Any:
    """One signed V1 call, printed with its appInfo decrypted; the answer."""
    from isvserver.marketplaces.koogallery.v1.marketplace import call

    answer = call(url, key, params)
    encrypt_type = int((answer.json or {}).get("encryptType") or 1)
    sign_state = "valid" if answer.body_sign_ok else "INVALID"
    shown = json.dumps(_shown(answer, key, encrypt_type, show_secrets), ensure_ascii=False)
    click.echo(f"v1 {params.get('activity')}: HTTP {answer.status}, Body-Sign {sign_state}, {shown}")
    return answer


@click.command("v1", context_settings={"ignore_unknown_options": True})
@click.argument("activity")
@click.argument("url")
@click.argument("fields", nargs=-1)
@click.option("--test", "test_flag", is_flag=True, help="Send testFlag=1 (a debug request).")
@click.option(
    "--key",
    envvar="ISV_SIGN_KEY",
    show_envvar=True,
    show_default="the first of ISV_ACCESS_KEYS",
    help="Access key to sign with.",
)
@click.option("--show-secrets", is_flag=True, help="Print passwords and licenses in full.")
def simulate_v1(
    activity: str, url: str, fields: tuple[str, ...], test_flag: bool, key: str | None, show_secrets: bool
) -> None:
    """Act as the marketplace's V1: a signed GET of ACTIVITY to URL with FIELDS (name=value); the reply's
    Body-Sign checked and its appInfo decrypted. `flow` runs the V1 and License lifecycles."""
    from isvserver.marketplaces.koogallery.v1.schemas import ACTIVITIES

    if activity == "flow":
        raise SystemExit(0 if run_flow(url, test_flag, key) else 1)
    if activity not in ACTIVITIES:
        raise click.BadParameter(f"{activity!r} is not a V1 activity: {', '.join(ACTIVITIES)}")
    given = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not name=value", param_hint="FIELDS")
        given[name] = value
    params = defaults(activity, given)
    if test_flag:
        params["testFlag"] = "1"
    try:
        answer = send(url, _key(key), params, show_secrets)
    except OSError as exc:
        raise click.ClickException(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    raise SystemExit(0 if answer.body_sign_ok and answer.code in ("000000", "000004") else 1)


def run_flow(url: str, test_flag: bool, key: str | None = None) -> bool:
    """The V1 life of one instance, then of one license, against `url`; True when every answer is right."""
    key = _key(key)
    extra = {"testFlag": "1"} if test_flag else {}
    failures: list[str] = []

    def step(label: str, params: dict[str, str], expect: tuple[str, ...]) -> dict[str, Any]:
        answer = send(url, key, {**params, **extra})
        problem = None
        if unlicensed(answer):
            click.echo(
                "  v1 License part skipped: the server has no license issuer (ISV_LICENSE_SIGNING_KEY)"
            )
            return {}
        if not answer.body_sign_ok:
            problem = "Body-Sign missing or invalid"
        elif answer.code not in expect:
            problem = f"resultCode {answer.code}, expected {' or '.join(expect)}"
        if problem:
            failures.append(f"v1 {label}: {problem}")
            click.echo(f"  FAIL v1 {label}: {problem}", err=True)
        return answer.json or {}

    new = defaults("newInstance", {})
    instance_id = step("newInstance", new, ("000000", "000004")).get("instanceId")
    if not instance_id:
        return False
    again = step("newInstance (resend)", {**new, "businessId": str(uuid.uuid4())}, ("000000", "000004"))
    if again.get("instanceId") != instance_id:
        failures.append("v1 newInstance (resend): a different instanceId")
    query = {"activity": "queryInstance", "instanceId": instance_id}
    deadline = time.monotonic() + 20
    while step("queryInstance", query, ("000000", "000004")).get("resultCode") == "000004":
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    order = {"instanceId": instance_id, "orderId": new["orderId"]}
    step("refreshInstance", {**defaults("refreshInstance", {}), "instanceId": instance_id}, ("000000",))
    step("expireInstance", {"activity": "expireInstance", **order}, ("000000",))
    step("upgrade", {**defaults("upgrade", {}), "instanceId": instance_id}, ("000000",))
    step("releaseInstance", {"activity": "releaseInstance", **order}, ("000000",))
    step("releaseInstance (repeat)", {"activity": "releaseInstance", **order}, ("000000",))
    purchase = defaults("getLicense", {})
    licensed = step("getLicense", purchase, ("000000",)).get("instanceId")
    if licensed:
        license_order = {"instanceId": licensed, "orderId": purchase["orderId"]}
        step("refreshLicense", {**defaults("refreshLicense", {}), "instanceId": licensed}, ("000000",))
        step("expireLicense", {"activity": "expireLicense", **license_order}, ("000000",))
        step("releaseLicense", {"activity": "releaseLicense", **license_order}, ("000000",))
    click.echo(f"v1 flow: {'FAILED: ' + '; '.join(failures) if failures else 'all answers right'}", err=True)
    return not failures


def unlicensed(answer: Any) -> bool:
    """Whether a getLicense was refused because the server has no license issuer configured."""
    body = answer.json or {}
    return (
        answer.body_sign_ok
        and body.get("resultCode") == "000005"
        and "ISV_LICENSE_SIGNING_KEY" in str(body.get("resultMsg"))
    )


def flow(url: str, test_flag: bool, key: str | None) -> bool:
    """`isvserver simulate flow`'s V1 part (after V2's): signed with `key` (the basic interface's, as V2's),
    else ISV_SIGN_KEY, else the configured key."""
    try:
        return run_flow(url, test_flag, key or os.environ.get("ISV_SIGN_KEY"))
    except click.ClickException as exc:
        click.echo(f"v1 flow: skipped ({exc.message})", err=True)
        return True
