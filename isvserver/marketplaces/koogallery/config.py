"""KooGallery's own settings and key interfaces (the produce path, the debug appInfo, the keys)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from isvserver.adapters import KeyInterface
from isvserver.settings import Problems, SettingsError, read, read_path

BASIC = KeyInterface("basic", "ISV_ACCESS_KEYS", "the keys of the basic interface")
NOTIFY = KeyInterface("notify", "ISV_NOTIFY_KEYS", "the keys of the orderNotify interface", required=False)


@dataclass(frozen=True)
class KooGallerySettings:
    """What the V2 basic adapter reads from the environment."""

    produce_path: str
    test_app_info: dict[str, str] | None


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


def load(env: Mapping[str, str], production: bool) -> KooGallerySettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    path = problems.take(produce_path, env, default="/saasproduce")
    test_app_info = problems.take(_test_app_info, env)
    problems.raise_any()
    return KooGallerySettings(produce_path=path, test_app_info=test_app_info)
