"""KooGallery's own settings and key interfaces (the produce path, the debug appInfo, V1, the keys)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from isvserver import licenses
from isvserver.adapters import KeyInterface
from isvserver.settings import Problems, SettingsError, read, read_int, read_path

BASIC = KeyInterface("basic", "ISV_ACCESS_KEYS", "the keys of the basic interface")
NOTIFY = KeyInterface("notify", "ISV_NOTIFY_KEYS", "the keys of the orderNotify interface", required=False)

V1_CHECK_WINDOW_DEFAULT = 60  # seconds either side of now; 0 turns the check off
V1_ENCRYPT_TYPES = (1, 2)  # 1 = AES-256 (default), 2 = AES-128 (spec §4)


@dataclass(frozen=True)
class KooGallerySettings:
    """What the KooGallery adapter (V2 and V1 basic) reads from the environment."""

    produce_path: str
    test_app_info: dict[str, str] | None
    market_api_url: str = "https://mkt.myhuaweicloud.com"  # the open APIs (order query, usage push)
    usage_max_age_h: int = 72  # how old a usage record the marketplace still takes
    usage_dashboard_url_template: str = ""  # queryInstance usageInfo.dashboardUrl ({instance_id})
    v1_check_window: int = V1_CHECK_WINDOW_DEFAULT
    v1_encrypt_type: int = 1
    license_signing_key: bytes | None = field(default=None, repr=False)  # Ed25519 seed, 32 bytes


def produce_path(env: Mapping[str, str]) -> str:
    """ISV_PRODUCE_PATH: where the marketplace calls (the production address's path)."""
    return read_path(env, "ISV_PRODUCE_PATH", "/saasproduce")


def _test_app_info(env: Mapping[str, str]) -> dict[str, str] | None:
    raw = read(env, "ISV_TEST_APP_INFO")
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise SettingsError("ISV_TEST_APP_INFO must be a JSON object") from None
    limits = {"frontEndUrl": 512, "adminUrl": 512, "userName": 128, "password": 128, "memo": 1024}
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("frontEndUrl"), str)
        or any(k not in limits or not isinstance(v, str) or len(v) > limits[k] for k, v in value.items())
    ):
        raise SettingsError(
            "ISV_TEST_APP_INFO must be a JSON object with a frontEndUrl and only the string fields "
            "frontEndUrl, adminUrl, userName, password, memo within their lengths"
        )
    return value


def _market_api_url(env: Mapping[str, str]) -> str:
    from isvserver.marketplaces.koogallery.orders import DEFAULT_API_URL, check_api_url

    try:
        return check_api_url(read(env, "ISV_MARKET_API_URL") or DEFAULT_API_URL)
    except ValueError as exc:
        raise SettingsError(f"ISV_MARKET_API_URL {exc}") from None


def _dashboard_template(env: Mapping[str, str]) -> str:
    template = read(env, "ISV_USAGE_DASHBOARD_URL_TEMPLATE") or ""
    if template:
        try:
            rendered = template.format(instance_id="x")
        except (KeyError, IndexError, ValueError):
            raise SettingsError(
                "ISV_USAGE_DASHBOARD_URL_TEMPLATE may only use the placeholder {instance_id}"
            ) from None
        if not rendered.startswith(("https://", "http://")) or len(template) > 400:
            raise SettingsError("ISV_USAGE_DASHBOARD_URL_TEMPLATE must be an http(s) URL template")
    return template


def new_license_key() -> str:
    """A new Ed25519 license signing key, made in development where ISV_LICENSE_SIGNING_KEY is unset."""
    return licenses.keygen()[0]


def license_public_key(seed_text: str) -> str:
    """The public key that verifies the licenses signed with this ISV_LICENSE_SIGNING_KEY value."""
    seed = license_key({"ISV_LICENSE_SIGNING_KEY": seed_text})
    return licenses.public_key_text(seed) if seed else ""


def license_key(env: Mapping[str, str]) -> bytes | None:
    """ISV_LICENSE_SIGNING_KEY: the Ed25519 private key (URL-safe Base64 of its 32-byte seed)."""
    raw = read(env, "ISV_LICENSE_SIGNING_KEY")
    if not raw:
        return None
    try:
        seed = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise SettingsError(
            "ISV_LICENSE_SIGNING_KEY must be an Ed25519 private key as `isvserver license keygen` prints "
            "it (URL-safe Base64 of 32 bytes)"
        )
    return seed


def load(env: Mapping[str, str], production: bool) -> KooGallerySettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    path = problems.take(produce_path, env, default="/saasproduce")
    test_app_info = problems.take(_test_app_info, env)
    api_url = problems.take(_market_api_url, env, default="")
    max_age = problems.take(read_int, env, "ISV_USAGE_MAX_AGE_H", 72, 1, 24 * 366, default=72)
    dashboard = problems.take(_dashboard_template, env, default="")
    window = problems.take(read_int, env, "ISV_V1_CHECK_WINDOW", V1_CHECK_WINDOW_DEFAULT, 0, 86400, default=0)
    encrypt_type = problems.take(read_int, env, "ISV_V1_ENCRYPT_TYPE", 1, 1, 2, default=1)
    signing_key = problems.take(license_key, env)
    problems.raise_any()
    return KooGallerySettings(
        produce_path=path,
        test_app_info=test_app_info,
        market_api_url=api_url,
        usage_max_age_h=max_age,
        usage_dashboard_url_template=dashboard,
        v1_check_window=window,
        v1_encrypt_type=encrypt_type,
        license_signing_key=signing_key,
    )
