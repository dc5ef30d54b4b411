"""Single sign-on settings: where the login lives, the IdP's paths, the product's URL and assertion key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from isvserver.settings import Problems, SettingsError, read, read_flag, read_int, read_path

MIN_ASSERTION_KEY_BYTES = 32
PLACEHOLDERS = ("{assertion}", "{instanceId}", "{tenantId}")


@dataclass(frozen=True)
class SsoSettings:
    """What the Kit login (`{path}/{instanceId}/login`) reads from the environment."""

    path: str = "/sso"
    # isvserver's public base URL for the redirect URI; unset: the request's own (X-Forwarded-* trusted
    # only from ISV_FORWARDED_ALLOW_IPS).
    public_url: str | None = None
    authorize_path: str = "/api/v1/oauth2/authorize"
    token_path: str = "/api/v1/oauth2/token"  # noqa: S105 - a path
    userinfo_path: str = "/api/v1/oauth2/userinfo"
    scope: str | None = None
    pkce: bool = True
    state_ttl_s: int = 300
    idp_timeout_ms: int = 5000
    product_url_template: str | None = None
    assertion_key: bytes | None = field(default=None, repr=False)
    audience: str = "product"
    issuer: str = "isvserver"
    assertion_ttl_s: int = 60

    @property
    def enabled(self) -> bool:
        """Whether logins are handed to a product (a template and a key are set)."""
        return bool(self.product_url_template and self.assertion_key)


def _http_url(env: Mapping[str, str], name: str) -> str | None:
    value = read(env, name)
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
        raise SettingsError(f"{name} must be an http(s) URL")
    return value.rstrip("/")


def _template(env: Mapping[str, str], name: str) -> str | None:
    value = _http_url(env, name)
    if value is not None and "{assertion}" not in value:
        raise SettingsError(f"{name} must hold {{assertion}} (and may hold {{instanceId}}, {{tenantId}})")
    if value is not None:
        rest = value
        for placeholder in PLACEHOLDERS:
            rest = rest.replace(placeholder, "")
        if "{" in rest or "}" in rest:
            raise SettingsError(f"{name} may only hold the placeholders {', '.join(PLACEHOLDERS)}")
    return value


def _assertion_key(env: Mapping[str, str], name: str, required: bool) -> bytes | None:
    value = read(env, name)
    if not value:
        if required:
            raise SettingsError(f"{name} is required when ISV_SSO_PRODUCT_URL_TEMPLATE is set")
        return None
    key = value.encode("utf-8")
    if len(key) < MIN_ASSERTION_KEY_BYTES:
        raise SettingsError(f"{name} must be at least {MIN_ASSERTION_KEY_BYTES} bytes")
    return key


def _pkce(env: Mapping[str, str], name: str) -> bool:
    return True if read(env, name) is None else read_flag(env, name)


def load_sso(env: Mapping[str, str], production: bool, problems: Problems) -> SsoSettings:
    """The SSO settings, every problem noted in `problems`."""
    default = SsoSettings()
    template = problems.take(_template, env, "ISV_SSO_PRODUCT_URL_TEMPLATE")
    public_url = problems.take(_http_url, env, "ISV_SSO_PUBLIC_URL")

    def path(name: str, fallback: str) -> str:
        return problems.take(read_path, env, name, fallback, default=fallback).rstrip("/") or fallback

    def number(name: str, fallback: int, low: int, high: int) -> int:
        return problems.take(read_int, env, name, fallback, low, high, default=fallback)

    return SsoSettings(
        path=path("ISV_SSO_PATH", default.path),
        public_url=public_url,
        authorize_path=path("ISV_SSO_AUTHORIZE_PATH", default.authorize_path),
        token_path=path("ISV_SSO_TOKEN_PATH", default.token_path),
        userinfo_path=path("ISV_SSO_USERINFO_PATH", default.userinfo_path),
        scope=read(env, "ISV_SSO_SCOPE") or None,
        pkce=problems.take(_pkce, env, "ISV_SSO_PKCE", default=True),
        state_ttl_s=number("ISV_SSO_STATE_TTL_S", default.state_ttl_s, 30, 3600),
        idp_timeout_ms=number("ISV_SSO_IDP_TIMEOUT_MS", default.idp_timeout_ms, 100, 60000),
        product_url_template=template,
        assertion_key=problems.take(_assertion_key, env, "ISV_SSO_ASSERTION_KEY", bool(template)),
        audience=read(env, "ISV_SSO_ASSERTION_AUDIENCE") or default.audience,
        issuer=read(env, "ISV_SSO_ASSERTION_ISSUER") or default.issuer,
        assertion_ttl_s=number("ISV_SSO_ASSERTION_TTL_S", default.assertion_ttl_s, 10, 600),
    )
