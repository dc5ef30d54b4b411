"""Start-up tells the whole truth at once: every missing or invalid setting in one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from isvserver.settings import SettingsError, load_settings

from support.harness import DATA_KEY

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "settings.example.env"


def example_env() -> dict[str, str]:
    """config/settings.example.env as the environment systemd's EnvironmentFile= would make of it."""
    env = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            env[name] = value
    return env


def problems(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    return str(caught.value)


def test_production_names_every_missing_setting_at_once(tmp_path: Path) -> None:
    message = problems({"ISV_ENV": "production", "ISV_INSTANCE_DIR": str(tmp_path)})
    for name in ("ISV_ACCESS_KEYS", "ISV_DATA_KEY", "ISV_FRONTEND_URL_TEMPLATE"):
        assert name in message, message
    assert message.startswith("3 settings are missing or invalid: (1) ")


def test_invalid_core_and_adapter_settings_are_listed_together(tmp_path: Path) -> None:
    env = {
        "ISV_ENV": "production",
        "ISV_INSTANCE_DIR": str(tmp_path),
        "ISV_MARKETPLACES": "koogallery,koogallery_kit",
        "ISV_ACCESS_KEYS": "a-basic-key-of-20-chars",
        "ISV_KIT_KEYS": "a-kit-key-of-20-chars",
        "ISV_DATA_KEY": "not-a-data-key",
        "ISV_FRONTEND_URL_TEMPLATE": "ftp://x/{instance_id}",
        "ISV_LOG_LEVEL": "loud",
        "ISV_JOB_WORKERS": "many",
        "ISV_REJECTED_LOG_PER_MINUTE": "-1",
        "ISV_LOG_RETENTION_DAYS": "0",
        "ISV_TEST_APP_INFO": "[]",
    }
    message = problems(env)
    for name in (
        "ISV_DATA_KEY",
        "ISV_FRONTEND_URL_TEMPLATE",
        "ISV_LOG_LEVEL",
        "ISV_JOB_WORKERS",
        "ISV_REJECTED_LOG_PER_MINUTE",
        "ISV_LOG_RETENTION_DAYS",
        "ISV_TEST_APP_INFO",  # the V2 adapter's
        "ISV_KIT_PRIVATE_KEY",  # the Kit adapter's
    ):
        assert name in message, (name, message)
    assert "not-a-data-key" not in message and "a-basic-key" not in message  # names, never values


def test_production_refuses_the_example_files_settings(tmp_path: Path) -> None:
    # The example works as shipped in development (tests/unit/test_settings_documented.py); switched to
    # production as its comments say, its sample key and empty data key are refused.
    env = example_env() | {"ISV_INSTANCE_DIR": str(tmp_path), "ISV_ENV": "production"}
    assert env["ISV_ENV"] == "production"
    message = problems(env)
    assert "ISV_ACCESS_KEYS holds the sample key of config/settings.example.env" in message, message
    assert "ISV_DATA_KEY is required" in message, message
    assert "9fa6c870" not in message


@pytest.mark.parametrize("key", ["short-key-15chr", "abcdefgh"])
def test_production_refuses_access_keys_shorter_than_16(tmp_path: Path, key: str) -> None:
    env = {
        "ISV_ENV": "production",
        "ISV_INSTANCE_DIR": str(tmp_path),
        "ISV_ACCESS_KEYS": key,
        "ISV_NOTIFY_KEYS": key + "-notify-x",
        "ISV_DATA_KEY": DATA_KEY,
        "ISV_FRONTEND_URL_TEMPLATE": "https://x/{instance_id}",
    }
    message = problems(env)
    assert message == "ISV_ACCESS_KEYS: every key must be at least 16 characters in production"
    assert load_settings(env | {"ISV_ACCESS_KEYS": key + "-" * 16}).keys("basic") == (key + "-" * 16,)


def test_development_keeps_short_keys_working(tmp_path: Path) -> None:
    settings = load_settings(
        {"ISV_INSTANCE_DIR": str(tmp_path), "ISV_ACCESS_KEYS": "abcdefgh", "ISV_DATA_KEY": DATA_KEY}
    )
    assert settings.keys("basic") == ("abcdefgh",)
