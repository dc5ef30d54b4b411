"""Typed settings from ISV_* environment variables, then the settings file (isvserver/settings_file.py);
each also readable from a file via ISV_*_FILE."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from isvserver import settings_file
from isvserver.adapters import (
    DEFAULT_MARKETPLACES,
    Adapter,
    AdapterError,
    Part,
    load_all,
    load_part,
    part_names,
)
from isvserver.files import private_dir
from isvserver.web.private import LOOPBACK, parse_networks

ENVIRONMENTS = ("development", "production")
TEMPLATE_PLACEHOLDERS = frozenset({"instance_id", "order_id", "order_line_id"})
DEV_KEYS_FILE = "development-keys.json"
DEV_SECRETS = ("ISV_DATA_KEY",)


class SettingsError(Exception):
    """A setting is missing or invalid; the message says which and why, never its value."""


# The access key config/settings.example.env shows: production refuses it (it is public).
SAMPLE_KEYS = frozenset({"9fa6c870-8bb0-4e9b-b71e-4c223300156f"})
MIN_PRODUCTION_KEY_LENGTH = 16


class Problems:
    """Every SettingsError met while reading the settings, to report them all at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def take(self, read: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """`read(*args)`, or `default` after noting its SettingsError."""
        try:
            return read(*args)
        except SettingsError as exc:
            self.messages.append(str(exc))
            return default

    def raise_any(self) -> None:
        """Raise one SettingsError naming every problem noted (nothing when there is none)."""
        if len(self.messages) == 1:
            raise SettingsError(self.messages[0])
        if self.messages:
            listed = "; ".join(f"({n}) {m}" for n, m in enumerate(self.messages, start=1))
            raise SettingsError(f"{len(self.messages)} settings are missing or invalid: {listed}")


@dataclass(frozen=True)
class Settings:
    """Everything isvserver reads from its environment, validated."""

    env: str
    database_url: str
    data_key: bytes = field(repr=False)  # the first of data_keys: seals new secrets
    data_keys: tuple[bytes, ...] = field(repr=False)  # every ISV_DATA_KEY key, first first: all unseal
    signature_tolerance: int
    frontend_url_template: str
    admin_url_template: str
    max_body_bytes: int
    instance_dir: Path
    log_level: str
    log_format: str
    provisioner: str = "template"  # template, webhook or python:package.module:Class
    provision_budget_ms: int = 2000
    answer_deadline_ms: int = 4000  # every answer is written by then, counted from the request's arrival
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
    rejected_log_per_minute: int = 60  # rejected calls logged per source address and minute; the rest counted
    rejected_log_total_per_minute: int = 300  # the same across all sources together
    log_retention_days: int = 90  # callback-log rows (and rejection counts) older than this are pruned
    usage_push_interval_s: int = 60  # the usage ledger is pushed to the marketplaces this often
    usage_push_dry_run: bool = False  # build and log the usage batches, send nothing
    first_byte_timeout_s: float = 5.0  # a new connection's first byte, else it is closed (web worker)
    pending_per_source: int = 1024  # connections per source address and worker waiting for their request
    worker_connections: int = 4096  # connection slots per web worker (read by gunicorn.conf.py too)
    access_log: bool = True  # gunicorn's access log (read by gunicorn.conf.py)
    metrics_allow: tuple[Any, ...] = LOOPBACK  # networks that may read /metrics and /openapi.json
    metrics_token: str = field(default="", repr=False)  # or a bearer of this token, from anywhere
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)  # proxies whose X-Forwarded-For names the caller
    marketplaces: tuple[str, ...] = (DEFAULT_MARKETPLACES,)
    parts: tuple[str, ...] = ()  # the application parts enabled (ISV_PARTS), e.g. product_api
    env_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    adapter_settings: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def keys(self, interface: str) -> tuple[str, ...]:
        """The keys of a key interface configured in the environment (empty when none)."""
        return self.env_keys.get(interface, ())

    def of(self, adapter: str) -> Any:
        """The settings an enabled adapter loaded for itself."""
        return self.adapter_settings[adapter]

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={len(keys)}" for name, keys in self.env_keys.items())
        return (
            f"Settings(env={self.env!r}, database={redacted_url(self.database_url)!r}, "
            f"marketplaces={','.join(self.marketplaces)}, keys: {counts or 'none'})"
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
        if env.get(name):
            raise SettingsError(f"{name} and {name}_FILE are both set; set only one")
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    value = env.get(name)
    return value.strip() if value is not None else None


def _keys(env: Mapping[str, str], name: str, production: bool = False) -> tuple[str, ...]:
    raw = _raw(env, name) or ""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for key in keys:
        if production and key in SAMPLE_KEYS:
            raise SettingsError(
                f"{name} holds the sample key of config/settings.example.env: "
                "use the key from the seller console"
            )
        # In production a short key is named once, with the production minimum.
        if production and len(key) < MIN_PRODUCTION_KEY_LENGTH and key.isascii() and key.isprintable():
            raise SettingsError(
                f"{name}: every key must be at least {MIN_PRODUCTION_KEY_LENGTH} characters in production"
            )
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


def _metrics_allow(env: Mapping[str, str]) -> tuple[Any, ...]:
    raw = _raw(env, "ISV_METRICS_ALLOW")
    if raw is None or not raw:
        return LOOPBACK
    if raw.lower() == "none":
        return ()
    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise SettingsError(
            f"ISV_METRICS_ALLOW: {exc} (comma-separated, e.g. 127.0.0.1,10.0.0.0/8)"
        ) from None


def _metrics_token(env: Mapping[str, str]) -> str:
    token = _raw(env, "ISV_METRICS_TOKEN") or ""
    if token and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
        raise SettingsError("ISV_METRICS_TOKEN must be at least 16 printable ASCII characters without spaces")
    return token


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
    if scheme != "sqlite":
        try:
            _ = urlsplit(raw).port  # raises on a port that is not a number (or out of range)
        except ValueError:
            raise SettingsError(
                "ISV_DATABASE_URL: the port must be a number from 0 to 65535 "
                "(postgresql://user:password@host:5432/dbname)"
            ) from None
    return raw


def new_data_key() -> str:
    """A fresh ISV_DATA_KEY key: 32 random bytes in url-safe base64 (44 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def _new_secret(name: str, makers: Mapping[str, Callable[[], str]]) -> str:
    """A fresh development value of `name`: an adapter's own kind, a data key, or a UUID-like access key."""
    if name in makers:
        return makers[name]()
    if name == "ISV_DATA_KEY":
        return new_data_key()
    return str(uuid.uuid4())


def development_secrets(
    instance_dir: Path,
    names: Sequence[str] = DEV_SECRETS,
    makers: Mapping[str, Callable[[], str]] | None = None,
) -> dict[str, str]:
    """The development keys kept in the instance folder, generated on first use (race-free across workers).

    A name the file does not hold yet (an adapter enabled later) is added to it; `makers` make the values
    of an adapter's own secrets (a key pair…).
    """
    path = instance_dir / DEV_KEYS_FILE
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if known is None or any(name not in known for name in names):
        private_dir(instance_dir)
        missing = [name for name in names if name not in (known or {})]
        generated = {**{name: _new_secret(name, makers or {}) for name in missing}, **(known or {})}
        fd, tmp = tempfile.mkstemp(dir=instance_dir, prefix=".keys-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(generated, handle, indent=2)
        try:
            if known is None:
                os.link(tmp, path)  # fails if another process won the race: theirs is kept
            else:
                os.replace(tmp, path)
        except FileExistsError:
            pass
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return json.loads(path.read_text(encoding="utf-8"))


def existing_keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The keys of variable `name`, else those the development keys file holds; never generates any.

    For tools acting as the marketplace (`sign`, `simulate`): reading keys must not create them.
    """
    keys = _keys(env, name)
    if keys:
        return keys
    value = _development_value(env, name)
    return (value,) if value else ()


def existing_value(env: Mapping[str, str], name: str) -> str | None:
    """Setting `name` (or `name`_FILE), else the development keys file's value; never generates one."""
    return _raw(env, name) or _development_value(env, name)


def _development_value(env: Mapping[str, str], name: str) -> str | None:
    path = Path(_raw(env, "ISV_INSTANCE_DIR") or "instance").resolve() / DEV_KEYS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = stored.get(name) if isinstance(stored, dict) else None
    return value if isinstance(value, str) and value else None


def read(env: Mapping[str, str], name: str) -> str | None:
    """The value of setting `name` (from `name` or the file `name`_FILE), stripped; None when unset."""
    return _raw(env, name)


def read_path(env: Mapping[str, str], name: str, default: str) -> str:
    """A URL path setting: starts with /, no query, no fragment."""
    path = _raw(env, name) or default
    if not path.startswith("/") or "?" in path or "#" in path:
        raise SettingsError(f"{name} must be a path starting with /")
    return path


def read_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole-number setting within [low, high]."""
    return _int(env, name, default, low, high)


def read_flag(env: Mapping[str, str], name: str) -> bool:
    """A 1/0 setting."""
    return _flag(env, name)


def _marketplaces(env: Mapping[str, str]) -> tuple[Adapter, ...]:
    raw = _raw(env, "ISV_MARKETPLACES") or DEFAULT_MARKETPLACES
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    if not names:
        raise SettingsError("ISV_MARKETPLACES names no adapter (e.g. koogallery,koogallery_kit)")
    try:
        return load_all(names)
    except AdapterError as exc:
        raise SettingsError(str(exc)) from None


def _parts(env: Mapping[str, str]) -> tuple[Part, ...]:
    try:
        return tuple(load_part(name) for name in part_names(_raw(env, "ISV_PARTS")))
    except AdapterError as exc:
        raise SettingsError(str(exc)) from None


def _key_sets(
    env: Mapping[str, str], adapters: Sequence[Adapter], production: bool, problems: Problems
) -> dict[str, tuple[str, ...]]:
    """The environment's keys of every key interface the adapters declare, each interface's its own."""
    found: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for interface in (i for adapter in adapters for i in adapter.key_interfaces):
        noted = len(problems.messages)
        keys = problems.take(_keys, env, interface.env_var, production, default=())
        if interface.required and not keys and len(problems.messages) == noted:
            problems.messages.append(
                f"{interface.env_var} is required in production ({interface.description})"
            )
        for key in keys:
            if key in owner and owner[key] != interface.env_var:
                problems.messages.append(
                    f"{interface.env_var} must differ from {owner[key]}: each interface has its key"
                )
            owner[key] = interface.env_var
        found[interface.name] = keys
    return found


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise one SettingsError naming every missing or invalid one."""
    if env is None:
        try:
            env = settings_file.merged(os.environ)
        except settings_file.SettingsFileError as exc:
            raise SettingsError(str(exc)) from None
    env = dict(env)
    problems = Problems()
    mode = _raw(env, "ISV_ENV") or "development"
    if mode not in ENVIRONMENTS:
        raise SettingsError(f"ISV_ENV must be one of {', '.join(ENVIRONMENTS)}")
    production = mode == "production"
    instance_dir = Path(_raw(env, "ISV_INSTANCE_DIR") or "instance").resolve()
    adapters = problems.take(_marketplaces, env, default=())
    parts = problems.take(_parts, env, default=())
    interfaces = [i for adapter in adapters for i in adapter.key_interfaces]

    if not production:
        makers = {
            secret.env_var: secret.make for adapter in adapters for secret in adapter.development_secrets
        }
        generated_names = [
            "ISV_DATA_KEY",
            *(i.env_var for i in interfaces if i.generated_in_development),
            *(name for name in makers if not _raw(env, name)),  # a key pair costs time: only when unset
        ]
        required = ["ISV_DATA_KEY", *(i.env_var for i in interfaces if i.required), *makers]
        if any(not _raw(env, n) for n in required):
            generated = development_secrets(instance_dir, generated_names, makers)
            for name in generated_names:
                if not _raw(env, name):
                    env[name] = generated[name]

    env_keys = _key_sets(env, adapters, production, problems)
    noted = len(problems.messages)
    raw_data_key = problems.take(_raw, env, "ISV_DATA_KEY")
    data_keys: tuple[bytes, ...] = (b"",)
    if raw_data_key:
        data_keys = problems.take(_data_keys, raw_data_key, default=data_keys)
    elif len(problems.messages) == noted:
        problems.messages.append("ISV_DATA_KEY is required in production (encrypts stored passwords)")

    log_level = (_raw(env, "ISV_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.messages.append("ISV_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    log_format = (_raw(env, "ISV_LOG_FORMAT") or "json").lower()
    if log_format not in ("json", "text"):
        problems.messages.append("ISV_LOG_FORMAT must be json or text")

    provisioner, webhook_url, webhook_secret = problems.take(_provisioner, env, default=("template", "", ""))
    dev_url = "http://localhost:8000/tenants/{instance_id}"

    def whole(name: str, default: int, low: int, high: int) -> int:
        return problems.take(_int, env, name, default, low, high, default=default)

    def number(name: str, default: float, low: float, high: float) -> float:
        return problems.take(_float, env, name, default, low, high, default=default)

    def flag(name: str) -> bool:
        return problems.take(_flag, env, name, default=False)

    values: dict[str, Any] = {
        "database_url": problems.take(_database_url, env, instance_dir, default=""),
        "signature_tolerance": whole("ISV_SIGNATURE_TOLERANCE", 60, 1, 3600),
        "frontend_url_template": problems.take(
            _template, env, "ISV_FRONTEND_URL_TEMPLATE", None if production else dev_url, True, default=""
        ),
        "admin_url_template": problems.take(
            _template,
            env,
            "ISV_ADMIN_URL_TEMPLATE",
            None if production else dev_url + "/admin",
            False,
            default="",
        ),
        "max_body_bytes": whole("ISV_MAX_BODY_BYTES", 65536, 1024, 16 * 1024 * 1024),
        "provision_budget_ms": whole("ISV_PROVISION_BUDGET_MS", 2000, 0, 4500),
        "answer_deadline_ms": whole("ISV_ANSWER_DEADLINE_MS", 4000, 500, 4900),
        "queue_url": problems.take(_queue_url, env, default=""),
        "job_workers": whole("ISV_JOB_WORKERS", 4, 1, 64),
        "job_max_attempts": whole("ISV_JOB_MAX_ATTEMPTS", 8, 1, 100),
        "job_retry_base_s": number("ISV_JOB_RETRY_BASE_S", 2.0, 0.01, 3600),
        "job_retry_max_s": number("ISV_JOB_RETRY_MAX_S", 300.0, 0.01, 86400),
        "job_lease_s": whole("ISV_JOB_LEASE_S", 120, 1, 3600),
        "webhook_timeout_s": number("ISV_WEBHOOK_TIMEOUT_S", 10.0, 0.1, 600),
        "auto_freeze": flag("ISV_AUTO_FREEZE"),
        "freeze_days": whole("ISV_FREEZE_DAYS", 15, 1, 365),
        "reconcile_interval_s": whole("ISV_RECONCILE_INTERVAL_S", 3600, 10, 86400),
        "rejected_log_per_minute": whole("ISV_REJECTED_LOG_PER_MINUTE", 60, 0, 1_000_000),
        "rejected_log_total_per_minute": whole("ISV_REJECTED_LOG_TOTAL_PER_MINUTE", 300, 0, 10_000_000),
        "log_retention_days": whole("ISV_LOG_RETENTION_DAYS", 90, 1, 36500),
        "usage_push_interval_s": whole("ISV_USAGE_PUSH_INTERVAL_S", 60, 1, 86400),
        "usage_push_dry_run": flag("ISV_USAGE_PUSH_DRY_RUN"),
        "first_byte_timeout_s": number("ISV_FIRST_BYTE_TIMEOUT_S", 5.0, 0.1, 60),
        "pending_per_source": whole("ISV_PENDING_PER_SOURCE", 1024, 1, 100_000),
        "worker_connections": whole("ISV_WORKER_CONNECTIONS", 4096, 10, 1_000_000),
        "access_log": flag("ISV_ACCESS_LOG") if problems.take(_raw, env, "ISV_ACCESS_LOG") else True,
        "metrics_allow": problems.take(_metrics_allow, env, default=LOOPBACK),
        "metrics_token": problems.take(_metrics_token, env, default=""),
    }
    adapter_settings = {
        owner.name: problems.take(owner.load_settings, env, production)
        for owner in (*adapters, *parts)
        if owner.load_settings is not None
    }
    problems.raise_any()
    return Settings(
        env=mode,
        data_key=data_keys[0],
        data_keys=data_keys,
        instance_dir=instance_dir,
        log_level=log_level,
        log_format=log_format,
        provisioner=provisioner,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        forwarded_allow_ips=tuple(
            ip.strip()
            for ip in (_raw(env, "ISV_FORWARDED_ALLOW_IPS") or "127.0.0.1").split(",")
            if ip.strip()
        ),
        marketplaces=tuple(adapter.name for adapter in adapters),
        parts=tuple(part.name for part in parts),
        env_keys=env_keys,
        adapter_settings=adapter_settings,
        **values,
    )
