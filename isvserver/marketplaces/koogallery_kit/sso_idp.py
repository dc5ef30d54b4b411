"""The tenant's identity provider, through Authlib's OAuth2 client: authorize URL, code exchange, userinfo.

Nothing here logs or raises a code, a token or the client secret: an `IdpError` carries a reason fit for
a log line and a page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session

from isvserver.marketplaces.koogallery_kit.sso_config import SsoSettings

ACCEPT = {"Accept": "application/json"}


class IdpError(Exception):
    """The identity provider refused, failed or did not answer in time (`timeout`)."""

    def __init__(self, reason: str, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


def base_url(domain_name: str) -> str:
    """The IdP's origin from tenantSync's `domainName` (a bare host means https)."""
    domain = domain_name.strip().rstrip("/")
    if "://" not in domain:
        domain = "https://" + domain
    parts = urlsplit(domain)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise IdpError("the tenant's domainName is not a usable host")
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _session(settings: SsoSettings, client_id: str, client_secret: str | None, redirect_uri: str) -> Any:
    return OAuth2Session(
        client_id,
        client_secret,
        scope=settings.scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256" if settings.pkce else None,
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
    )


def authorization_url(
    settings: SsoSettings, domain: str, client_id: str, redirect_uri: str, state: str, verifier: str | None
) -> str:
    """Where the browser goes to log in: the tenant's authorize endpoint with our client and state."""
    client = _session(settings, client_id, None, redirect_uri)
    try:
        url, _ = client.create_authorization_url(
            base_url(domain) + settings.authorize_path, state=state, code_verifier=verifier
        )
    finally:
        client.close()
    return url


def _describe(exc: Exception, step: str) -> IdpError:
    if isinstance(exc, requests.Timeout):
        return IdpError(f"the identity provider did not answer the {step} in time", timeout=True)
    if isinstance(exc, requests.ConnectionError):
        return IdpError(f"the identity provider could not be reached for the {step}")
    if isinstance(exc, AuthlibBaseError):
        return IdpError(f"the identity provider refused the {step}: {str(exc.error)[:64]}")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return IdpError(f"the identity provider answered the {step} with HTTP {exc.response.status_code}")
    return IdpError(f"the identity provider's answer to the {step} is not usable")


def user_of_code(
    settings: SsoSettings,
    domain: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    verifier: str | None,
) -> dict[str, Any]:
    """Exchange `code` for a token and read the user's information with it; the token is then dropped."""
    timeout = settings.idp_timeout_ms / 1000
    base = base_url(domain)
    client = _session(settings, client_id, client_secret, redirect_uri)
    try:
        try:
            extra = {"code_verifier": verifier} if verifier else {}
            token = client.fetch_token(
                base + settings.token_path, code=code, timeout=timeout, headers=dict(ACCEPT), **extra
            )
        except (requests.RequestException, AuthlibBaseError, ValueError) as exc:
            raise _describe(exc, "code exchange") from None
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise IdpError("the identity provider's token answer holds no access_token")
        try:
            response = client.get(base + settings.userinfo_path, timeout=timeout, headers=dict(ACCEPT))
        except requests.RequestException as exc:
            raise _describe(exc, "userinfo request") from None
        return _userinfo(response)
    finally:
        client.token = None
        client.close()


def _userinfo(response: requests.Response) -> dict[str, Any]:
    """The userinfo object, or IdpError naming the documented error (`error`, `error_description`)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        named = f" ({str(error)[:64]})" if error else ""
        raise IdpError(
            f"the identity provider refused the userinfo request with HTTP {response.status_code}{named}"
        )
    if not isinstance(body, dict):
        raise IdpError("the identity provider's userinfo answer is not a JSON object")
    return body
