"""KooGallery's own settings and key interfaces (the produce path, the debug appInfo, the keys)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from isvserver.adapters import KeyInterface
from isvserver.settings import Problems, SettingsError, read, read_int, read_path

BASIC = KeyInterface("basic", "ISV_ACCESS_KEYS", "the keys of the basic interface")
NOTIFY = KeyInterface("notify", "ISV_NOTIFY_KEYS", "the keys of the orderNotify interface", required=False)


@dataclass(frozen=True)
class KooGallerySettings:
    """What the V2 basic adapter reads from the environment."""

    produce_path: str
    test_app_info: dict[str, str] | None
    market_api_url: str = "https://mkt.myhuaweicloud.com"  # the open APIs (order query, usage push)
    usage_max_age_h: int = 72  # how old a usage record the marketplace still takes
    usage_dashboard_url_template: str = ""  # queryInstance usageInfo.dashboardUrl ({instance_id})


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


def load(env: Mapping[str, str], production: bool) -> KooGallerySettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    path = problems.take(produce_path, env, default="/saasproduce")
    test_app_info = problems.take(_test_app_info, env)
    api_url = problems.take(_market_api_url, env, default="")
    max_age = problems.take(read_int, env, "ISV_USAGE_MAX_AGE_H", 72, 1, 24 * 366, default=72)
    dashboard = problems.take(_dashboard_template, env, default="")
    problems.raise_any()
    return KooGallerySettings(
        produce_path=path,
        test_app_info=test_app_info,
        market_api_url=api_url,
        usage_max_age_h=max_age,
        usage_dashboard_url_template=dashboard,
    )
