"""The marketplace's side of Kit sync: `isvserver simulate kit ACTIVITY URL [name=value…]` and the Kit
part of `isvserver simulate flow URL` (signed with x-sign, replies' Body-Sign checked)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from isvserver.adapters import Simulation
from isvserver.body_sign import Answer, post
from isvserver.cli.simulate import URL, explain, reaching
from isvserver.marketplaces.koogallery_kit.client_secret import (
    PrivateKeyError,
    encrypt_client_secret,
    load_private_key,
)
from isvserver.marketplaces.koogallery_kit.config import KIT, SYNC_PATH
from isvserver.marketplaces.koogallery_kit.signing import kit_signature
from isvserver.marketplaces.koogallery_kit.views import HANDLERS
from isvserver.settings import SettingsError, existing_keys, existing_value

ACTIVITIES = tuple(HANDLERS)
NUMBERS = ("flag", "testFlag", "employeeType")
JSON_FIELDS = ("userList", "orgInfoList")
OK = "000000"


def sync_url(url: str, activity: str) -> str:
    """The activity's URL from the produce URL, the Kit base (…/produceAPI/v2) or the activity's own."""
    base = url.rstrip("/")
    if base.endswith(f"{SYNC_PATH}/{activity}"):
        return base
    return f"{base}/{activity}" if base.endswith(SYNC_PATH) else f"{base}{SYNC_PATH}/{activity}"


def call(url: str, key: str, activity: str, body: dict[str, Any], timeout: float = 20.0) -> Answer:
    """POST one Kit call signed with `key` (fresh timestamp and nonce); the reply, Body-Sign checked."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp, nonce = str(int(time.time() * 1000)), secrets.token_hex(32).upper()
    headers = {
        "x-sign": kit_signature(key, nonce, timestamp, raw),
        "x-timestamp": timestamp,
        "x-nonce": nonce,
    }
    return post(sync_url(url, activity), raw, key, headers, timeout)


def _time_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")[:17]


def users(count: int = 2) -> list[dict[str, Any]]:
    """Plausible authorised users (made-up names and contacts)."""
    return [
        {
            "userName": f"sim-user-{i}",
            "name": f"Sim User {i}",
            "orgCode": "sim-dept",
            "role": "admin" if i == 1 else "user",
            "enable": "true",
            "mobile": f"1390000000{i}",
            "email": f"sim-user-{i}@example.com",
        }
        for i in range(1, count + 1)
    ]


def defaults(activity: str, given: dict[str, Any]) -> dict[str, Any]:
    """A plausible body of `activity` with the fields given on top (clientSecret still in plain text)."""
    common = {
        "instanceId": given.get("instanceId") or f"sim-{uuid.uuid4()}",
        "tenantId": "sim-tenant",
        "testFlag": 0,
        "timeStamp": _time_stamp(),
    }
    per_activity: dict[str, dict[str, Any]] = {
        "tenantSync": {
            "orderId": "SIM" + secrets.token_hex(5).upper(),
            "tenantCode": "sim",
            "name": "Simulated Tenant Ltd.",
            "domainName": "sim.example.com",
            "flag": 1,
        },
        "applicationSync": {
            "appId": "sim-app",
            "clientId": "sim-client",
            "clientSecret": secrets.token_urlsafe(24),
            "flag": 1,
        },
        "authSync": {"appId": "sim-app", "userList": users(), "flag": 1},
        "singleOrgSync": {"orgCode": "sim-dept", "orgName": "Simulated Department", "flag": 1},
        "allOrgSync": {
            "orgInfoList": [
                {"orgCode": "sim-root", "orgName": "Simulated HQ"},
                {"orgCode": "sim-dept", "orgName": "Simulated Department", "parentCode": "sim-root"},
            ]
        },
    }
    return {**common, **per_activity[activity], **given}


def parse_fields(fields: tuple[str, ...]) -> dict[str, Any]:
    """name=value pairs: flag, testFlag and employeeType as numbers, userList and orgInfoList as JSON."""
    given: dict[str, Any] = {}
    for item in fields:
        name, sep, value = item.partition("=")
        if not sep or not name or name.startswith("-"):
            raise click.BadParameter(f"{item!r} is not name=value", param_hint="FIELDS")
        if name in NUMBERS and value.lstrip("-").isdigit():
            given[name] = int(value)
        elif name in JSON_FIELDS:
            try:
                given[name] = json.loads(value)
            except ValueError:
                raise click.BadParameter(f"{name} must be JSON", param_hint="FIELDS") from None
        else:
            given[name] = value
    return given


def read_public_key(path: Path) -> rsa.RSAPublicKey:
    """The RSA public key in `path`: PEM, or the bare Base64 DER that `isvserver kit keygen` prints."""
    data = path.read_bytes().strip()
    try:
        if data.startswith(b"-----"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(base64.b64decode(data, validate=True))
    except ValueError:
        raise click.BadParameter(f"{path} holds no readable public key", param_hint="--public-key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise click.BadParameter(f"{path} is not an RSA public key", param_hint="--public-key")
    return key


def configured_public_key() -> rsa.RSAPublicKey | None:
    """The public half of ISV_KIT_PRIVATE_KEY (or the development key pair), or None when there is none.

    Read without creating anything, like every key `simulate` uses.
    """
    try:
        pem = existing_value(os.environ, "ISV_KIT_PRIVATE_KEY")
        return load_private_key(pem).public_key() if pem else None
    except SettingsError as exc:  # names the variable itself (ISV_KIT_PRIVATE_KEY_FILE unreadable…)
        raise click.ClickException(f"invalid settings: {exc}") from None
    except PrivateKeyError as exc:
        raise click.ClickException(f"invalid settings: ISV_KIT_PRIVATE_KEY: {exc}") from None


def configured_key() -> str | None:
    """The first ISV_KIT_KEYS key (the development keys included), or None; never creates one."""
    try:
        keys = existing_keys(os.environ, KIT.env_var)
    except SettingsError as exc:
        raise click.ClickException(f"invalid settings: {exc}") from None
    return keys[0] if keys else None


def print_answer(label: str, answer: Answer) -> None:
    """`label: HTTP 200, Body-Sign valid, {…}` (a Kit reply holds no secret), and a wrong answer's likely
    cause."""
    state = "valid" if answer.body_sign_ok else "INVALID"
    shown = json.dumps(answer.json, ensure_ascii=False) if answer.json is not None else repr(answer.raw[:200])
    click.echo(f"{label}: HTTP {answer.status}, Body-Sign {state}, {shown}")
    explain(answer)


def _encrypted(body: dict[str, Any], public_key: rsa.RSAPublicKey | None) -> dict[str, Any]:
    if body.get("flag") == 0 or "clientSecret" not in body:
        return body
    if public_key is None:
        raise click.ClickException(
            "applicationSync: pass --public-key FILE or set ISV_KIT_PRIVATE_KEY (in development the server "
            "makes one: run from its folder, or set ISV_INSTANCE_DIR)"
        )
    return {**body, "clientSecret": encrypt_client_secret(public_key, str(body["clientSecret"]))}


@click.command(
    "kit",
    context_settings={"ignore_unknown_options": True},
    short_help="Kit sync: one x-signed call (tenantSync, applicationSync, authSync, …).",
)
@click.argument("activity", type=click.Choice(ACTIVITIES))
@click.argument("url", type=URL)
@click.argument("fields", nargs=-1)
@click.option("--test", "test_flag", is_flag=True, help="Send testFlag=1 (a debug request).")
@click.option(
    "--key",
    show_default="the first ISV_KIT_KEYS key, or the development keys",
    help="Kit key to sign with (ISV_SIGN_KEY is the basic interface's: never read here).",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    show_default="the public half of ISV_KIT_PRIVATE_KEY, or of the development key pair",
    help="The seller's public key (PEM or Base64 DER) that encrypts clientSecret.",
)
def simulate_kit(
    activity: str,
    url: str,
    fields: tuple[str, ...],
    test_flag: bool,
    key: str | None,
    public_key: Path | None,
) -> None:
    """Act as KooGallery's Kit sync: send one x-signed ACTIVITY (tenantSync, applicationSync, authSync,
    singleOrgSync, allOrgSync) to URL (the produce URL; /produceAPI/v2/ACTIVITY is appended) with FIELDS
    (name=value; userList and orgInfoList as JSON), signed with a Kit key.

    A clientSecret given (or the random one made up) is sent RSA-OAEP encrypted, never printed. Checks
    the reply's Body-Sign; exit 1 unless 000000.
    """
    key = key or configured_key()
    if not key:
        raise click.ClickException(
            "no Kit key: pass --key or set ISV_KIT_KEYS (in development, run from the server's folder or "
            "set ISV_INSTANCE_DIR: its development keys are read)"
        )
    body = defaults(activity, parse_fields(fields))
    if test_flag:
        body["testFlag"] = 1
    if activity == "applicationSync":
        body = _encrypted(body, read_public_key(public_key) if public_key else configured_public_key())
    with reaching(url):
        answer = call(url, key, activity, body)
    print_answer(activity, answer)
    raise SystemExit(0 if answer.body_sign_ok and answer.code == OK else 1)


def run_flow(url: str, test_flag: bool, basic_key: str | None = None) -> bool:
    """tenantSync, applicationSync, authSync of two users, singleOrgSync, allOrgSync, a repeat and a
    delete for a new instance id; True when every answer is a Body-Signed 000000 (signed with the Kit
    key: `basic_key`, the basic interface's, is not this interface's)."""
    key = configured_key()
    if not key:
        click.echo("kit flow: skipped (no ISV_KIT_KEYS)", err=True)
        return True
    public_key = configured_public_key()
    instance_id = f"sim-{uuid.uuid4()}"
    extra = {"instanceId": instance_id, **({"testFlag": 1} if test_flag else {})}
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("kit tenantSync", "tenantSync", {}),
        ("kit applicationSync", "applicationSync", {}),
        ("kit authSync (2 users)", "authSync", {}),
        ("kit singleOrgSync", "singleOrgSync", {}),
        ("kit allOrgSync", "allOrgSync", {}),
        ("kit authSync (repeat)", "authSync", {}),
        ("kit authSync (delete 1 user)", "authSync", {"userList": users(1), "flag": 0}),
    ]
    failures = []
    tenant = defaults("tenantSync", extra)
    for label, activity, changes in steps:
        if activity == "applicationSync" and public_key is None:
            click.echo(f"{label}: skipped (no ISV_KIT_PRIVATE_KEY to encrypt clientSecret)", err=True)
            continue
        body = tenant if activity == "tenantSync" else defaults(activity, {**extra, **changes})
        body = {**body, "tenantId": tenant["tenantId"], "timeStamp": _time_stamp()}
        if activity == "applicationSync":
            body = _encrypted(body, public_key)
        answer = call(url, key, activity, body)
        print_answer(label, answer)
        if not answer.body_sign_ok or answer.code != OK:
            problem = (
                "Body-Sign missing or invalid" if not answer.body_sign_ok else f"resultCode {answer.code}"
            )
            failures.append(f"{label}: {problem}")
            click.echo(f"  FAIL {label}: {problem}", err=True)
    click.echo(f"kit flow: {'FAILED: ' + '; '.join(failures) if failures else 'all answers right'}", err=True)
    return not failures


SIMULATION = Simulation(name="kit", command=simulate_kit, flow=run_flow)
