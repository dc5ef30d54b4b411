"""Single sign-on for Kit tenants' users, `{ISV_SSO_PATH}/<instanceId>/login` and `{ISV_SSO_PATH}/callback`.

login → the tenant's authorize endpoint (state stored hashed, bound to this browser by a cookie, PKCE);
callback → state used once, code exchanged with the client secret unsealed for that call only, userinfo
read with the token, the user matched against the tenant's authorizations for the app, and the browser
sent to the product with a one-use signed assertion. Every refusal is an HTML page, a log line with its
reason and a kit_sso_login row; no code, token, state or secret reaches any of them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from authlib.common.security import generate_token
from flask import Blueprint, Response, redirect, request

from isvserver.db import database
from isvserver.lifecycle import State
from isvserver.marketplaces.koogallery_kit.models import KitApplication, KitSsoLogin, KitTenant, KitUser
from isvserver.marketplaces.koogallery_kit.pii import unseal_optional
from isvserver.marketplaces.koogallery_kit.sso_assertion import issue
from isvserver.marketplaces.koogallery_kit.sso_config import SsoSettings
from isvserver.marketplaces.koogallery_kit.sso_idp import IdpError, authorization_url, base_url, user_of_code
from isvserver.marketplaces.koogallery_kit.sso_pages import HEADERS, page
from isvserver.marketplaces.koogallery_kit.sso_state import StateRefused, begin, consume
from isvserver.models import Instance
from isvserver.runtime import runtime
from isvserver.sealing import UnsealError, unseal

COOKIE = "isv_sso"
STOPPED = frozenset({State.FROZEN.value, State.RELEASED.value, State.FAILED.value})
log = logging.getLogger("isvserver.koogallery_kit.sso")
sso_bp = Blueprint("koogallery_kit_sso", __name__)


class Refusal(Exception):
    """A login that stops here: the page's status and message, the logged reason."""

    def __init__(self, status: int, message: str, reason: str, user: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.message, self.reason, self.user = status, message, reason, user


def _settings() -> SsoSettings:
    return runtime().settings.of("koogallery_kit").sso


def _redirect_uri(sso: SsoSettings) -> str:
    base = sso.public_url or request.url_root.rstrip("/")
    return f"{base}{sso.path}/callback"


def _tenant(instance_id: str) -> Any:
    """The instance's live tenant, its subscription not frozen, released or failed (an instance this server
    does not know, as Kit syncs may arrive for, does not stop it)."""
    tenant = KitTenant.get_or_none(KitTenant.instance_id == instance_id, KitTenant.deleted_at.is_null())
    if tenant is None:
        raise Refusal(404, "No enterprise is bound to this application.", "no live tenant for the instance")
    instance = Instance.get_or_none(Instance.instance_id == instance_id)
    if instance is not None and instance.state in STOPPED:
        message = "This subscription is not active. Please contact your administrator."
        raise Refusal(403, message, f"the instance is {instance.state}")
    return tenant


def _application(instance_id: str, app_id: str | None) -> Any:
    query = KitApplication.select().where(
        KitApplication.instance_id == instance_id, KitApplication.deleted_at.is_null()
    )
    if app_id:
        query = query.where(KitApplication.app_id == app_id)
    apps = list(query.order_by(KitApplication.id).limit(2))
    if not apps:
        raise Refusal(404, "This application is not bound to the enterprise.", "no live application")
    if len(apps) > 1:
        raise Refusal(
            400, "Several applications are bound: open the login with ?app=<appId>.", "app not chosen"
        )
    return apps[0]


def _refused(exc: Refusal, instance_id: str | None, app_id: str | None) -> Response:
    log.warning("sso login refused: %s instance_id=%s app_id=%s", exc.reason, instance_id, app_id)
    with database.atomic():
        KitSsoLogin.create(
            instance_id=instance_id,
            app_id=app_id,
            user_name=exc.user[:64] if exc.user else None,
            outcome="refused",
            reason=exc.reason[:255],
        )
    response = page(exc.status, exc.message)
    response.delete_cookie(COOKIE, path=_settings().path)
    return response


def _connected(view: Callable[..., Response]) -> Callable[..., Response]:
    """`view` with a database connection of its own for the request."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        with database.connection_context():
            return view(*args, **kwargs)

    return wrapper


@sso_bp.get("/<instance_id>/login")
@_connected
def login(instance_id: str) -> Response:
    """Send the browser to the tenant's authorize endpoint with a fresh state (and PKCE challenge)."""
    sso = _settings()
    app_id = request.args.get("app") or None
    if len(instance_id) > 64 or (app_id is not None and len(app_id) > 64):
        return page(404, "No enterprise is bound to this application.")
    try:
        if not sso.enabled:
            raise Refusal(503, "Single sign-on is not configured on this server.", "SSO is not configured")
        tenant = _tenant(instance_id)
        app = _application(instance_id, app_id)
    except Refusal as exc:
        return _refused(exc, instance_id, app_id)
    try:
        base_url(tenant.domain_name)
    except IdpError as exc:
        refusal = Refusal(502, "The enterprise's sign-in address is not usable.", exc.reason)
        return _refused(refusal, instance_id, app_id)
    verifier = generate_token(64) if sso.pkce else None
    redirect_uri = _redirect_uri(sso)
    with database.atomic():
        state, browser = begin(
            instance_id, app.app_id, redirect_uri, verifier, sso.state_ttl_s, runtime().settings.data_keys
        )
    url = authorization_url(sso, tenant.domain_name, app.client_id, redirect_uri, state, verifier)
    log.info("sso login started instance_id=%s app_id=%s", instance_id, app.app_id)
    response = redirect(url, 302)
    response.headers.update(HEADERS)
    response.set_cookie(
        COOKIE,
        browser,
        max_age=sso.state_ttl_s,
        path=sso.path,
        secure=redirect_uri.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


def _user(tenant: Any, app_id: str, info: dict[str, Any]) -> Any:
    """The live, enabled, unrevoked authorization of the userinfo's user for this tenant and app."""
    user_name = info.get("userName") or info.get("user_name")
    if not isinstance(user_name, str) or not user_name:
        raise Refusal(502, "The identity provider did not say who you are.", "userinfo holds no userName")
    other = info.get("tenant")
    if isinstance(other, str) and other and other != tenant.tenant_id:
        message = "Your account belongs to another enterprise."
        raise Refusal(403, message, "userinfo names another tenant", user_name)
    user = KitUser.get_or_none(
        KitUser.instance_id == tenant.instance_id,
        KitUser.app_id == app_id,
        KitUser.user_name == user_name,
        KitUser.deleted_at.is_null(),
    )
    if user is None:
        message = "Your account is not authorised for this application."
        raise Refusal(403, message, "user is not authorised", user_name)
    if user.revoked_at is not None:
        message = "Your authorisation for this application was revoked."
        raise Refusal(403, message, "user authorisation revoked", user_name)
    if not user.enabled:
        raise Refusal(403, "Your account is disabled for this application.", "user is disabled", user_name)
    return user


def _product_url(sso: SsoSettings, token: str, instance_id: str, tenant_id: str) -> str:
    template = sso.product_url_template or ""
    values = {"{assertion}": token, "{instanceId}": instance_id, "{tenantId}": tenant_id}
    for placeholder, value in values.items():
        template = template.replace(placeholder, quote(value, safe=""))
    return template


def _hand_over(sso: SsoSettings, tenant: Any, app_id: str, user: Any) -> Response:
    """Record the login and redirect the browser to the product with a one-use assertion."""
    data_keys = runtime().settings.data_keys
    try:
        name = unseal_optional(data_keys, user.name_sealed)
    except UnsealError:
        name = None
    claims = {
        "sub": user.user_name,
        "name": name,
        "role": user.role,
        "orgCode": user.org_code,
        "tenantId": tenant.tenant_id,
        "tenantCode": tenant.tenant_code,
        "instanceId": tenant.instance_id,
        "appId": app_id,
    }
    assertion = issue(sso, claims)
    with database.atomic():
        KitSsoLogin.create(
            instance_id=tenant.instance_id,
            app_id=app_id,
            user_name=user.user_name,
            outcome="handed_over",
            reason="logged in",
            jti=assertion.jti,
            expires_at=datetime.fromtimestamp(assertion.expires, UTC).replace(tzinfo=None),
        )
    log.info(
        "sso login handed over instance_id=%s app_id=%s jti=%s", tenant.instance_id, app_id, assertion.jti
    )
    response = redirect(_product_url(sso, assertion.token, tenant.instance_id, tenant.tenant_id), 302)
    response.headers.update(HEADERS)
    response.delete_cookie(COOKIE, path=sso.path)
    return response


@sso_bp.get("/callback")
@_connected
def callback() -> Response:
    """Finish a login: state, code exchange, userinfo, authorization, hand-off to the product."""
    sso = _settings()
    instance_id = app_id = None
    try:
        if not sso.enabled:
            raise Refusal(503, "Single sign-on is not configured on this server.", "SSO is not configured")
        try:
            pending = consume(
                request.args.get("state", ""), request.cookies.get(COOKIE), runtime().settings.data_keys
            )
        except StateRefused as exc:
            message = "This sign-in link has expired or was already used. Please sign in again."
            raise Refusal(400, message, str(exc)) from None
        instance_id, app_id = pending.instance_id, pending.app_id
        error = request.args.get("error")
        if error:
            raise Refusal(
                403, "The sign-in was cancelled or refused.", f"the identity provider answered {error[:64]}"
            )
        code = request.args.get("code", "")
        if not code or len(code) > 1024:
            raise Refusal(
                400, "This sign-in link cannot be used. Please sign in again.", "no code in the callback"
            )
        tenant = _tenant(instance_id)
        app = _application(instance_id, app_id)
        try:
            secret = unseal(runtime().settings.data_keys, app.client_secret_sealed)
        except UnsealError:
            raise Refusal(
                500, "Sign-in is not possible right now.", "the client secret cannot be unsealed"
            ) from None
        try:
            info = user_of_code(
                sso,
                tenant.domain_name,
                app.client_id,
                secret,
                pending.redirect_uri,
                code,
                pending.code_verifier,
            )
        except IdpError as exc:
            if exc.timeout:
                raise Refusal(
                    504, "The sign-in service did not answer in time. Please try again.", exc.reason
                ) from None
            raise Refusal(
                502, "The sign-in service refused the sign-in. Please try again.", exc.reason
            ) from None
        finally:
            del secret
        return _hand_over(sso, tenant, app_id, _user(tenant, app_id, info))
    except Refusal as exc:
        return _refused(exc, instance_id, app_id)
