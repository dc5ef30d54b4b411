"""The broker's settings: its two paths, its catalog, token lifetime and limits, whether secrets travel."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from isvserver.marketplaces.broker.catalog import EXAMPLE, Catalog, CatalogError
from isvserver.marketplaces.broker.catalog import load as load_catalog
from isvserver.settings import Problems, SettingsError, read, read_flag, read_int, read_path

NAME = "broker"
TOKEN_PATH = "/baas/auth/v1.0/oauth2/token"  # noqa: S105 (the seed's token URL, no secret)


@dataclass(frozen=True)
class BrokerSettings:
    """What the broker adapter reads from the environment."""

    path: str  # ISV_BROKER_PATH: the prefix the seller types into the platform
    token_path: str  # ISV_BROKER_TOKEN_PATH
    catalog: Catalog
    token_ttl_s: int  # ISV_BROKER_TOKEN_TTL
    token_failures_per_minute: int  # ISV_BROKER_TOKEN_FAILURES_PER_MINUTE, per source address
    retry_after_s: int  # ISV_BROKER_RETRY_AFTER: what last_operation tells a poller while in progress
    send_secrets: bool  # ISV_BROKER_SEND_SECRETS: the product hears `password` parameters too


def _catalog(env: Mapping[str, str], production: bool) -> Catalog:
    """ISV_BROKER_CATALOG (required in production; the seed's example catalog in development)."""
    raw = read(env, "ISV_BROKER_CATALOG")
    if not raw:
        if production:
            raise SettingsError(
                f"ISV_BROKER_CATALOG is required in production: the path of your catalog (YAML or JSON), "
                f"e.g. a copy of {EXAMPLE}"
            )
        raw = str(EXAMPLE)
    try:
        return load_catalog(Path(raw))
    except CatalogError as exc:
        raise SettingsError(f"ISV_BROKER_CATALOG: {exc}") from None


def load(env: Mapping[str, str], production: bool) -> BrokerSettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    path = problems.take(read_path, env, "ISV_BROKER_PATH", "/broker", default="/broker")
    token_path = problems.take(read_path, env, "ISV_BROKER_TOKEN_PATH", TOKEN_PATH, default=TOKEN_PATH)
    catalog = problems.take(_catalog, env, production)
    ttl = problems.take(read_int, env, "ISV_BROKER_TOKEN_TTL", 3600, 60, 86400, default=3600)
    failures = problems.take(read_int, env, "ISV_BROKER_TOKEN_FAILURES_PER_MINUTE", 10, 1, 10000, default=10)
    retry_after = problems.take(read_int, env, "ISV_BROKER_RETRY_AFTER", 5, 1, 3600, default=5)
    send_secrets = problems.take(read_flag, env, "ISV_BROKER_SEND_SECRETS", default=False)
    problems.raise_any()
    path, token_path = path.rstrip("/"), token_path.rstrip("/")
    if path == token_path:
        raise SettingsError("ISV_BROKER_TOKEN_PATH must differ from ISV_BROKER_PATH")
    return BrokerSettings(path, token_path, catalog, ttl, failures, retry_after, send_secrets)
