"""The V Cloud adapter's settings: the platform, the provider's wallet and token, the poll."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from isvserver.settings import Problems, SettingsError, read, read_int

MARKETPLACE = "vcloud"
BUYER_PATH = "/vcloud/v1"  # GET /vcloud/v1/orders/{orderId}: the buyer's view of an order
DEFAULT_POLL_INTERVAL_S = 30
DEFAULT_PAGE_SIZE = 50
DEFAULT_TIMEOUT_S = 10
DEFAULT_RETRIES = 3
MIN_TOKEN_LENGTH = 16
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class VCloudSettings:
    """What the V Cloud adapter reads from the environment."""

    api_url: str  # the platform node, e.g. https://platform.example/ ("" until configured)
    wallet: str  # the provider's receiving (VSYS) address: its orders' `recipient`
    api_token: str = field(repr=False)  # sent as a bearer token with every request to the platform
    api_host: str  # where buyers reach this server (the provider's apiHost), for registration
    poll_interval_s: int = DEFAULT_POLL_INTERVAL_S
    page_size: int = DEFAULT_PAGE_SIZE
    timeout_s: int = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES

    @property
    def configured(self) -> bool:
        """Whether orders can be followed (a platform and a wallet are set)."""
        return bool(self.api_url and self.wallet)


def _url(env: Mapping[str, str], name: str, production: bool) -> str:
    raw = read(env, name) or ""
    if not raw:
        if production:
            raise SettingsError(f"{name} is required in production (e.g. https://platform.example/)")
        return ""
    try:
        parts = urlsplit(raw)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query
    except ValueError:
        ok = False
    if not ok or parts.username or parts.password:
        raise SettingsError(f"{name} must be an http(s) URL without credentials or a query")
    if production and parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise SettingsError(f"{name} must be https in production (http only to loopback)")
    return raw.rstrip("/")


def _wallet(env: Mapping[str, str], production: bool) -> str:
    raw = read(env, "ISV_VCLOUD_WALLET") or ""
    if not raw:
        if production:
            raise SettingsError("ISV_VCLOUD_WALLET is required in production (the provider's VSYS address)")
        return ""
    if not raw.isascii() or not raw.isalnum() or len(raw) > 64:
        raise SettingsError("ISV_VCLOUD_WALLET must be a wallet address (letters and digits, at most 64)")
    return raw


def _token(env: Mapping[str, str], production: bool) -> str:
    raw = read(env, "ISV_VCLOUD_API_TOKEN") or ""
    if not raw:
        if production:
            raise SettingsError(
                "ISV_VCLOUD_API_TOKEN is required in production (the platform's token for the provider)"
            )
        return ""
    if not raw.isascii() or not raw.isprintable() or " " in raw or len(raw) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            f"ISV_VCLOUD_API_TOKEN must be at least {MIN_TOKEN_LENGTH} printable ASCII characters, no spaces"
        )
    return raw


def load(env: Mapping[str, str], production: bool) -> VCloudSettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    api_url = problems.take(_url, env, "ISV_VCLOUD_API_URL", production, default="")
    wallet = problems.take(_wallet, env, production, default="")
    token = problems.take(_token, env, production, default="")
    api_host = problems.take(_url, env, "ISV_VCLOUD_API_HOST", False, default="")
    interval = problems.take(read_int, env, "ISV_VCLOUD_POLL_INTERVAL_S", DEFAULT_POLL_INTERVAL_S, 1, 86400)
    page_size = problems.take(read_int, env, "ISV_VCLOUD_PAGE_SIZE", DEFAULT_PAGE_SIZE, 1, 500)
    timeout = problems.take(read_int, env, "ISV_VCLOUD_TIMEOUT_S", DEFAULT_TIMEOUT_S, 1, 300)
    retries = problems.take(read_int, env, "ISV_VCLOUD_RETRIES", DEFAULT_RETRIES, 0, 10)
    problems.raise_any()
    return VCloudSettings(
        api_url=api_url,
        wallet=wallet,
        api_token=token,
        api_host=api_host,
        poll_interval_s=interval or DEFAULT_POLL_INTERVAL_S,
        page_size=page_size or DEFAULT_PAGE_SIZE,
        timeout_s=timeout or DEFAULT_TIMEOUT_S,
        retries=DEFAULT_RETRIES if retries is None else retries,
    )
