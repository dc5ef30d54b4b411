"""Typed settings from ISV_* environment variables (each also readable from a file via ISV_*_FILE)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from urllib.parse import parse_qsl, urlencode, urlsplit

from isvserver.files import private_dir

ENVIRONMENTS = ("development", "production")
TEMPLATE_PLACEHOLDERS = frozenset({"instance_id", "order_id", "order_line_id"})
DEV_KEYS_FILE = "development-keys.json"


class SettingsError(Exception):
    """A setting is missing or invalid; the message says which and why, never its value."""


@dataclass(frozen=True)
class Settings:
    """Everything isvserver reads from its environment, validated."""

    env: str
    access_keys: tuple[str, ...]
    notify_keys: tuple[str, ...]
    database_url: str
    data_key: bytes = field(repr=False)  # the first of data_keys: seals new secrets
    data_keys: tuple[bytes, ...] = field(repr=False)  # every ISV_DATA_KEY key, first first: all unseal
    signature_tolerance: int
    produce_path: str
    frontend_url_template: str
    admin_url_template: str
    max_body_bytes: int
    test_app_info: dict[str, str] | None
    instance_dir: Path
    log_level: str
    log_format: str
    provisioner: str = "template"  # template, webhook or python:package.module:Class
    provision_budget_ms: int = 2000
    queue_url: str = ""  # "" keeps the job queue in a SQLite file in instance_dir; or redis://…
    job_workers: int = 4
    job_max_attempts: int = 8
    job_retry_base_s: float = 2.0
    job_retry_max_s: float = 300.0
    job_lease_s: int = 120
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout_s: float = 10.0
    auto_freeze: bool = False
    freeze_days: int = 15
    reconcile_interval_s: int = 3600

    def __repr__(self) -> str:
        return (
            f"Settings(env={self.env!r}, database={redacted_url(self.database_url)!r}, "
            f"access_keys={len(self.access_keys)}, notify_keys={len(self.notify_keys)})"
        )


def redacted_url(url: str) -> str:
    """The URL with any password (user:password@ or ?password=) replaced, safe to print."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an invalid URL>"
    query = parse_qsl(parts.query, keep_blank_values=True)
    if password is None and not any(k.lower() == "password" for k, _ in query):
        return url
    if password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1))
    query = [(k, "***" if k.lower() == "password" else v) for k, v in query]
    return parts._replace(query=urlencode(query, safe="*")).geturl()


def _raw(env: Mapping[str, str], name: str) -> str | None:
    """The value of `name`, from the variable itself or from the file named by `name`_FILE."""
    path = env.get(f"{name}_FILE")
    if path:
        if name in env:
            raise SettingsError(f"{name} and {name}_FILE are both set; set only one")
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    value = env.get(name)
    return value.strip() if value is not None else None


def _keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = _raw(env, name) or ""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for key in keys:
        if len(key) < 8 or not key.isascii() or not key.isprintable():
            raise SettingsError(f"{name}: every key must be at least 8 printable ASCII characters")
    if len(set(keys)) != len(keys):
        raise SettingsError(f"{name}: a key is listed twice")
    return keys


def _data_key(raw: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(raw.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise SettingsError("ISV_DATA_KEY must be 32 random bytes in url-safe base64 (44 characters)")
    return raw.encode("ascii")


def _data_keys(raw: str) -> tuple[bytes, ...]:
    """The comma-separated ISV_DATA_KEY keys, first first (the first seals, all unseal)."""
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    keys = []
    for position, part in enumerate(parts, start=1):
        try:
            keys.append(_data_key(part))
        except SettingsError:
            if len(parts) == 1:
                raise
            raise SettingsError(
                f"ISV_DATA_KEY: key {position} of {len(parts)} is not 32 random bytes in url-safe base64 "
                "(44 characters)"
            ) from None
    if len({base64.urlsafe_b64decode(key) for key in keys}) != len(keys):
        raise SettingsError("ISV_DATA_KEY: a key is listed twice")
    if not keys:
        raise SettingsError("ISV_DATA_KEY holds no key (comma-separated keys, the first encrypts)")
    return tuple(keys)


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _raw(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = _raw(env, name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (_raw(env, name) or "").lower()
    if raw not in ("", "0", "1", "true", "false", "yes", "no"):
        raise SettingsError(f"{name} must be 1 or 0")
    return raw in ("1", "true", "yes")


MIN_WEBHOOK_KEY_BYTES = 24


def check_webhook_url(url: str) -> str:
    """`url` when it is an http(s) URL with a host, else ValueError (naming no value)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise ValueError("the webhook URL must be an http(s) URL")
    return url


def webhook_key(secret: str) -> bytes:
    """The signing key of a Standard Webhooks `whsec_…` secret, else ValueError (naming no value)."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_") + "==") if secret.startswith("whsec_") else b""
    except ValueError:
        key = b""
    if len(key) < MIN_WEBHOOK_KEY_BYTES:
        raise ValueError(
            f"the webhook secret must be whsec_ and at least {MIN_WEBHOOK_KEY_BYTES} bytes in base64"
        )
    return key


def _provisioner(env: Mapping[str, str]) -> tuple[str, str, str]:
    """ISV_PROVISIONER with what it needs: (choice, webhook URL, webhook secret)."""
    choice = _raw(env, "ISV_PROVISIONER") or "template"
    if choice not in ("template", "webhook") and not (
        choice.startswith("python:") and choice.count(":") == 2 and all(choice.split(":")[1:])
    ):
        raise SettingsError("ISV_PROVISIONER must be template, webhook or python:package.module:Class")
    url, secret = _raw(env, "ISV_WEBHOOK_URL") or "", _raw(env, "ISV_WEBHOOK_SECRET") or ""
    if choice == "webhook":
        try:
            check_webhook_url(url)
        except ValueError:
            raise SettingsError(
                "ISV_WEBHOOK_URL must be an http(s) URL when ISV_PROVISIONER=webhook"
            ) from None
        try:
            webhook_key(secret)
        except ValueError:
            raise SettingsError(
                f"ISV_WEBHOOK_SECRET must be whsec_ followed by at least {MIN_WEBHOOK_KEY_BYTES} random "
                "bytes in base64 (`isvserver webhook-secret` makes one)"
            ) from None
    return choice, url, secret


def _queue_url(env: Mapping[str, str]) -> str:
    raw = _raw(env, "ISV_QUEUE_URL") or ""
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(
            "ISV_QUEUE_URL must be a redis:// URL (leave it unset for the local SQLite queue)"
        )
    return raw


def _template(env: Mapping[str, str], name: str, default: str | None, required: bool) -> str:
    raw = _raw(env, name) or default
    if not raw:
        if required:
            raise SettingsError(f"{name} is required in production")
        return ""
    allowed = ", ".join(f"{{{p}}}" for p in sorted(TEMPLATE_PLACEHOLDERS))
    try:
        names = {f for _, f, _, _ in Formatter().parse(raw) if f is not None}
        unknown = names - TEMPLATE_PLACEHOLDERS
        if unknown:
            raise SettingsError(f"{name}: unknown placeholder {sorted(unknown)[0]!r}; use {allowed}")
        scheme = urlsplit(raw.format(instance_id="x", order_id="x", order_line_id="x")).scheme
    except (ValueError, IndexError, KeyError):
        raise SettingsError(f"{name} is not a valid URL template (placeholders: {allowed})") from None
    if scheme not in ("http", "https"):
        raise SettingsError(f"{name} must be an http(s) URL")
    return raw


def _database_url(env: Mapping[str, str], instance_dir: Path) -> str:
    raw = _raw(env, "ISV_DATABASE_URL") or f"sqlite:///{instance_dir / 'isvserver.sqlite3'}"
    try:
        scheme = urlsplit(raw).scheme
    except ValueError:
        raise SettingsError("ISV_DATABASE_URL is not a valid URL") from None
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise SettingsError("ISV_DATABASE_URL must start with sqlite:/// or postgresql://")
    if scheme == "sqlite" and not raw.startswith("sqlite:///"):
        raise SettingsError(
            "ISV_DATABASE_URL: a SQLite URL is sqlite:///relative/path or sqlite:////abs/path"
        )
    return raw


def _test_app_info(env: Mapping[str, str]) -> dict[str, str] | None:
    raw = _raw(env, "ISV_TEST_APP_INFO")
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


def development_secrets(instance_dir: Path) -> dict[str, str]:
    """The development keys kept in the instance folder, generated on first use (race-free across workers)."""
    path = instance_dir / DEV_KEYS_FILE
    if not path.exists():
        private_dir(instance_dir)
        generated = {
            "ISV_ACCESS_KEYS": str(uuid.uuid4()),
            "ISV_NOTIFY_KEYS": str(uuid.uuid4()),
            "ISV_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"),
        }
        fd, tmp = tempfile.mkstemp(dir=instance_dir, prefix=".keys-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(generated, handle, indent=2)
        try:
            os.link(tmp, path)  # fails if another process won the race: theirs is kept
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return json.loads(path.read_text(encoding="utf-8"))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise SettingsError with a clear message on the first problem."""
    env = dict(os.environ if env is None else env)
    mode = _raw(env, "ISV_ENV") or "development"
    if mode not in ENVIRONMENTS:
        raise SettingsError(f"ISV_ENV must be one of {', '.join(ENVIRONMENTS)}")
    production = mode == "production"
    instance_dir = Path(_raw(env, "ISV_INSTANCE_DIR") or "instance").resolve()

    if not production:
        missing = [n for n in ("ISV_ACCESS_KEYS", "ISV_DATA_KEY") if not _raw(env, n)]
        if missing:
            generated = development_secrets(instance_dir)
            for name in ("ISV_ACCESS_KEYS", "ISV_NOTIFY_KEYS", "ISV_DATA_KEY"):
                if not _raw(env, name):
                    env[name] = generated[name]

    access_keys = _keys(env, "ISV_ACCESS_KEYS")
    if not access_keys:
        raise SettingsError("ISV_ACCESS_KEYS is required in production (the keys of the basic interface)")
    notify_keys = _keys(env, "ISV_NOTIFY_KEYS")
    if set(access_keys) & set(notify_keys):
        raise SettingsError("ISV_NOTIFY_KEYS must differ from ISV_ACCESS_KEYS: each interface has its key")
    raw_data_key = _raw(env, "ISV_DATA_KEY")
    if not raw_data_key:
        raise SettingsError("ISV_DATA_KEY is required in production (encrypts stored passwords)")
    data_keys = _data_keys(raw_data_key)

    produce_path = _raw(env, "ISV_PRODUCE_PATH") or "/saasproduce"
    if not produce_path.startswith("/") or "?" in produce_path or "#" in produce_path:
        raise SettingsError("ISV_PRODUCE_PATH must be a path starting with /")
    log_level = (_raw(env, "ISV_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError("ISV_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    log_format = (_raw(env, "ISV_LOG_FORMAT") or "json").lower()
    if log_format not in ("json", "text"):
        raise SettingsError("ISV_LOG_FORMAT must be json or text")

    provisioner, webhook_url, webhook_secret = _provisioner(env)
    dev_url = "http://localhost:8000/tenants/{instance_id}"
    return Settings(
        env=mode,
        access_keys=access_keys,
        notify_keys=notify_keys,
        database_url=_database_url(env, instance_dir),
        data_key=data_keys[0],
        data_keys=data_keys,
        signature_tolerance=_int(env, "ISV_SIGNATURE_TOLERANCE", 60, 1, 3600),
        produce_path=produce_path,
        frontend_url_template=_template(
            env, "ISV_FRONTEND_URL_TEMPLATE", None if production else dev_url, required=True
        ),
        admin_url_template=_template(
            env, "ISV_ADMIN_URL_TEMPLATE", None if production else dev_url + "/admin", required=False
        ),
        max_body_bytes=_int(env, "ISV_MAX_BODY_BYTES", 65536, 1024, 16 * 1024 * 1024),
        test_app_info=_test_app_info(env),
        instance_dir=instance_dir,
        log_level=log_level,
        log_format=log_format,
        provisioner=provisioner,
        provision_budget_ms=_int(env, "ISV_PROVISION_BUDGET_MS", 2000, 0, 4500),
        queue_url=_queue_url(env),
        job_workers=_int(env, "ISV_JOB_WORKERS", 4, 1, 64),
        job_max_attempts=_int(env, "ISV_JOB_MAX_ATTEMPTS", 8, 1, 100),
        job_retry_base_s=_float(env, "ISV_JOB_RETRY_BASE_S", 2.0, 0.01, 3600),
        job_retry_max_s=_float(env, "ISV_JOB_RETRY_MAX_S", 300.0, 0.01, 86400),
        job_lease_s=_int(env, "ISV_JOB_LEASE_S", 120, 1, 3600),
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        webhook_timeout_s=_float(env, "ISV_WEBHOOK_TIMEOUT_S", 10.0, 0.1, 600),
        auto_freeze=_flag(env, "ISV_AUTO_FREEZE"),
        freeze_days=_int(env, "ISV_FREEZE_DAYS", 15, 1, 365),
        reconcile_interval_s=_int(env, "ISV_RECONCILE_INTERVAL_S", 3600, 10, 86400),
    )
