"""Kit single sign-on in process (SQLite and PostgreSQL) against a real local identity provider: the login
redirect, the callback's code exchange and userinfo, the authorization match, the one-use assertion, and
every refusal as an HTML page with its reason logged and recorded, nothing of the exchange anywhere."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import db
from isvserver.db import database
from isvserver.marketplaces.koogallery_kit import sso_state, store
from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair
from isvserver.marketplaces.koogallery_kit.models import KitSsoLogin, KitSsoState, KitTenant
from isvserver.models import Instance, utcnow
from isvserver.settings import load_settings

from support.harness import DATA_KEY, base_env
from support.oauth_idp import AUTHORIZE, TOKEN, USERINFO, IdentityProvider

PRIVATE_PEM, _ = generate_key_pair()
ASSERTION_KEY = "product-assertion-key-0123456789abcdef"
SECRET = "kit-client-secret-7f3e"
INSTANCE, TENANT, APP = "inst-sso", "tenant-sso", "app-sso"
PRODUCT = "https://product.example/sso?assertion={assertion}&i={instanceId}"


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdentityProvider]:
    with IdentityProvider(tmp_path / "idp.sqlite3", "client-sso", SECRET, TENANT) as running:
        running.add_user("wang", name="王五", role="admin")
        running.add_user("zhao", name="赵六")
        running.add_user("qian")
        running.add_user("stranger")
        yield running


@pytest.fixture
def env_extra(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings a test adds (parametrize it indirectly)."""
    return getattr(request, "param", {})


@pytest.fixture
def env(tmp_path: Path, database_url: str, env_extra: dict[str, str]) -> dict[str, str]:
    return base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS="kit-key-sso-1-0123456789",
        ISV_KIT_PRIVATE_KEY=PRIVATE_PEM.decode("ascii"),
        ISV_SSO_PUBLIC_URL="http://localhost",
        ISV_SSO_PRODUCT_URL_TEMPLATE=PRODUCT,
        ISV_SSO_ASSERTION_KEY=ASSERTION_KEY,
        ISV_SSO_ASSERTION_AUDIENCE="crm-product",
        ISV_SSO_IDP_TIMEOUT_MS="1000",
        **env_extra,
    )


def users(flag: int, *entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance_id": INSTANCE,
        "tenant_id": TENANT,
        "app_id": APP,
        "flag": flag,
        "user_list": list(entries),
    }


def user(name: str, enabled: bool = True, role: str = "user") -> dict[str, Any]:
    return {"user_name": name, "name": name.upper(), "org_code": "d1", "role": role, "enabled": enabled}


@pytest.fixture
def synced(app: Flask, idp: IdentityProvider) -> None:
    """The tenant (its domain the IdP), its application with the client secret, its users: wang and zhao
    enabled, qian disabled, zhao then revoked (authSync flag 3)."""
    keys = load_settings_keys(app)
    tenant = {
        "instance_id": INSTANCE,
        "tenant_id": TENANT,
        "order_id": "CS-SSO",
        "tenant_code": "sso",
        "name": "SSO 公司",
        "domain_name": idp.url,
        "flag": 1,
    }
    application = {
        "instance_id": INSTANCE,
        "tenant_id": TENANT,
        "app_id": APP,
        "client_id": "client-sso",
        "flag": 1,
    }
    with app.app_context(), database.connection_context(), database.atomic():
        store.sync_tenant(tenant, keys)
        store.sync_application(application, SECRET, keys)
        store.sync_users(
            users(1, {**user("wang", role="admin"), "name": "王五"}, user("zhao"), user("qian", False)), keys
        )
        store.sync_users(users(3, user("zhao")), keys)


def load_settings_keys(app: Flask) -> Any:
    return app.extensions["isvserver"].settings.data_keys


def start(client: FlaskClient, path: str = f"/sso/{INSTANCE}/login") -> str:
    """GET the login: a 302 to the IdP's authorize endpoint; its Location."""
    response = client.get(path)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def at_idp(authorize_url: str, user_name: str) -> str:
    """The IdP's login form submitted as `user_name`: the callback URL it redirects to (http.client, which
    logs nothing, so the captured logs are the server's alone)."""
    parts = urlsplit(authorize_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    connection = http.client.HTTPConnection(parts.netloc, timeout=5)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        form = connection.getresponse()
        assert form.status == 200 and b'id="userName"' in form.read()
        body = urlencode({**query, "userName": user_name})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", parts.path, body, headers)
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    assert answer.status == 302
    return answer.headers["Location"]


def back(client: FlaskClient, callback_url: str) -> Any:
    parts = urlsplit(callback_url)
    assert parts.scheme + "://" + parts.netloc == "http://localhost"
    return client.get(f"{parts.path}?{parts.query}")


def login(client: FlaskClient, user_name: str) -> Any:
    return back(client, at_idp(start(client), user_name))


def claims_of(location: str) -> dict[str, Any]:
    parts = urlsplit(location)
    assert location.startswith("https://product.example/sso?")
    query = parse_qs(parts.query)
    assert query["i"] == [INSTANCE]
    return jwt.decode(
        query["assertion"][0], ASSERTION_KEY, algorithms=["HS256"], audience="crm-product", issuer="isvserver"
    )


def logins(app: Flask) -> list[tuple[str, str, str | None]]:
    with app.app_context(), database.connection_context():
        return [(r.outcome, r.reason, r.user_name) for r in KitSsoLogin.select().order_by(KitSsoLogin.id)]


def html_page(response: Any, status: int, words: str) -> str:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.content_type.startswith("text/html"), response.content_type
    assert words in text, text
    assert "Traceback" not in text and "resultCode" not in text
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    return text


@pytest.mark.usefixtures("synced")
def test_an_authorised_user_reaches_the_product_with_a_one_use_assertion_and_nothing_of_the_exchange_leaks(
    app: Flask, client: FlaskClient, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    authorize = start(client)
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(idp.url + AUTHORIZE + "?")
    assert query["client_id"] == ["client-sso"] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://localhost/sso/callback"]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert SECRET not in authorize
    cookie = client.get_cookie("isv_sso", path="/sso")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"

    callback = at_idp(authorize, "wang")
    response = back(client, callback)
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Referrer-Policy"] == "no-referrer"
    claims = claims_of(response.headers["Location"])
    assert {k: claims[k] for k in ("sub", "name", "role", "orgCode", "tenantId", "instanceId", "appId")} == {
        "sub": "wang",
        "name": "王五",
        "role": "admin",
        "orgCode": "d1",
        "tenantId": TENANT,
        "instanceId": INSTANCE,
        "appId": APP,
    }
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) == 32
    with app.app_context(), database.connection_context():
        row = KitSsoLogin.get(KitSsoLogin.jti == claims["jti"])
        assert (row.outcome, row.user_name) == ("handed_over", "wang")
        state = KitSsoState.get()
        assert state.used_at is not None and state.code_verifier_sealed
    assert [r[2] for r in idp.requests(TOKEN)] == ["200"] and [r[2] for r in idp.requests(USERINFO)] == [
        "200"
    ]

    leaked = [
        *idp.issued("code"),
        *idp.issued("token"),
        SECRET,
        query["state"][0],
        query["code_challenge"][0],
    ]
    text = caplog.text + response.get_data(as_text=True)
    assert [value for value in leaked if value in text] == []
    assert all(value not in claims.values() for value in leaked)
    assert "sso login handed over instance_id=inst-sso app_id=app-sso jti=" in caplog.text

    again = back(client, callback)  # the same callback replayed: the state was used
    html_page(again, 400, "expired or was already used")
    assert [r[2] for r in idp.requests(TOKEN)] == ["200"]  # no second exchange
    assert logins(app)[-1] == ("refused", "the state was already used", None)


@pytest.mark.usefixtures("synced")
@pytest.mark.parametrize(
    ("user_name", "reason", "words"),
    [
        ("zhao", "user authorisation revoked", "was revoked"),
        ("qian", "user is disabled", "is disabled"),
        ("stranger", "user is not authorised", "not authorised"),
    ],
)
def test_a_revoked_disabled_or_unknown_user_gets_a_page_and_no_assertion(
    app: Flask, client: FlaskClient, user_name: str, reason: str, words: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = login(client, user_name)
    html_page(response, 403, words)
    assert "assertion" not in response.headers.get("Location", "")
    assert logins(app) == [("refused", reason, user_name)]
    assert f"sso login refused: {reason} instance_id=inst-sso app_id=app-sso" in caplog.text


@pytest.mark.usefixtures("synced")
def test_a_user_of_another_tenant_is_refused(app: Flask, client: FlaskClient, idp: IdentityProvider) -> None:
    idp.add_user("wang", name="王五", tenant="another-tenant")
    html_page(login(client, "wang"), 403, "another enterprise")
    assert logins(app) == [("refused", "userinfo names another tenant", "wang")]


@pytest.mark.usefixtures("synced")
def test_an_expired_state_or_one_from_another_browser_is_refused(app: Flask, client: FlaskClient) -> None:
    callback = at_idp(start(client), "wang")
    with app.app_context(), database.connection_context():
        KitSsoState.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
    html_page(back(client, callback), 400, "expired or was already used")
    assert logins(app)[-1][:2] == ("refused", "the state has expired")

    callback = at_idp(start(client), "wang")
    other = app.test_client()  # no cookie: the state was issued to another browser
    html_page(back(other, callback), 400, "Please sign in again")
    assert logins(app)[-1][:2] == ("refused", "the state was issued to another browser")
    html_page(client.get("/sso/callback?code=x&state=forged"), 400, "sign in again")
    assert logins(app)[-1][:2] == ("refused", "the state is unknown")


@pytest.mark.usefixtures("synced")
def test_an_idp_that_refuses_the_token_is_down_or_slow_gets_a_page_never_a_trace(
    app: Flask, client: FlaskClient, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    idp.userinfo_refuses = True  # the documented 401 body
    html_page(login(client, "wang"), 502, "refused the sign-in")
    assert (
        logins(app)[-1][1]
        == "the identity provider refused the userinfo request with HTTP 401 (invalid_token)"
    )
    idp.userinfo_refuses = False

    idp.delay_s = 3  # the timeout is 1 s
    html_page(login(client, "wang"), 504, "did not answer in time")
    assert logins(app)[-1][1] == "the identity provider did not answer the code exchange in time"
    idp.delay_s = 0

    callback = at_idp(start(client), "wang")
    idp.close()
    html_page(back(client, callback), 502, "refused the sign-in")
    assert logins(app)[-1][1] == "the identity provider could not be reached for the code exchange"
    assert "Traceback" not in caplog.text and SECRET not in caplog.text


@pytest.mark.usefixtures("synced")
@pytest.mark.parametrize(
    ("path", "answer", "reason"),
    [
        (
            TOKEN,
            (503, "text/html", b"<h1>busy</h1>"),
            "the identity provider answered the code exchange with HTTP 503",
        ),
        (
            TOKEN,
            (200, "text/plain", b"not json"),
            "the identity provider's answer to the code exchange is not usable",
        ),
        (
            TOKEN,
            (200, "application/json", b'{"token_type": "Bearer"}'),
            "the identity provider's token answer holds no access_token",
        ),
        (
            USERINFO,
            (200, "text/plain", b"[]"),
            "the identity provider's userinfo answer is not a JSON object",
        ),
        (USERINFO, (200, "application/json", b'{"name": "x"}'), "userinfo holds no userName"),
        (
            USERINFO,
            (500, "text/plain", b"oops"),
            "the identity provider refused the userinfo request with HTTP 500",
        ),
    ],
)
def test_an_idp_answer_that_is_not_usable_is_a_page_and_a_reason(
    app: Flask,
    client: FlaskClient,
    idp: IdentityProvider,
    path: str,
    answer: tuple[int, str, bytes],
    reason: str,
) -> None:
    idp.overrides[path] = answer
    html_page(login(client, "wang"), 502, "")
    assert logins(app)[-1][1] == reason


@pytest.mark.usefixtures("synced")
def test_several_applications_need_a_choice_and_an_unusable_domain_is_refused(
    app: Flask, client: FlaskClient
) -> None:
    keys = load_settings_keys(app)
    second = {
        "instance_id": INSTANCE,
        "tenant_id": TENANT,
        "app_id": "app-2",
        "client_id": "client-2",
        "flag": 1,
    }
    with app.app_context(), database.connection_context(), database.atomic():
        store.sync_application(second, "other-secret", keys)
    html_page(client.get(f"/sso/{INSTANCE}/login"), 400, "?app=&lt;appId&gt;")
    assert parse_qs(urlsplit(start(client, f"/sso/{INSTANCE}/login?app=app-2")).query)["client_id"] == [
        "client-2"
    ]
    with app.app_context(), database.connection_context():
        KitTenant.update(domain_name="ftp://idp.example").execute()
        states = KitSsoState.select().count()
    html_page(client.get(f"/sso/{INSTANCE}/login?app={APP}"), 502, "not usable")
    with app.app_context(), database.connection_context():
        assert KitSsoState.select().count() == states  # nothing stored for a login that cannot start


@pytest.mark.usefixtures("synced")
def test_a_wrong_client_secret_or_a_denied_authorization_is_refused(
    app: Flask, client: FlaskClient, idp: IdentityProvider
) -> None:
    idp.client_secret = "rotated-at-the-idp"
    html_page(login(client, "wang"), 502, "refused the sign-in")
    assert logins(app)[-1][1] == "the identity provider refused the code exchange: invalid_client"

    authorize = start(client)
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    html_page(client.get(f"/sso/callback?error=access_denied&state={state}"), 403, "cancelled or refused")
    assert logins(app)[-1][1] == "the identity provider answered access_denied"
    html_page(
        client.get(f"/sso/callback?state={start(client).split('state=')[1].split('&')[0]}"),
        400,
        "cannot be used",
    )
    assert logins(app)[-1][1] == "no code in the callback"


@pytest.mark.usefixtures("synced")
def test_unknown_instances_paths_and_methods_get_html_pages_not_the_kit_envelope(
    app: Flask, client: FlaskClient
) -> None:
    html_page(client.get("/sso/unknown-instance/login"), 404, "No enterprise is bound")
    assert logins(app)[-1] == ("refused", "no live tenant for the instance", None)
    html_page(client.get(f"/sso/{INSTANCE}/login?app=other"), 404, "not bound to the enterprise")
    html_page(client.get(f"/sso/{'x' * 65}/login"), 404, "No enterprise is bound")
    page = client.get("/sso/nothing/here")
    assert page.status_code == 404 and page.content_type.startswith("text/html")
    assert "Body-Sign" not in page.headers
    page = client.post(f"/sso/{INSTANCE}/login")
    assert page.status_code == 405 and page.content_type.startswith("text/html")


@pytest.mark.usefixtures("synced")
def test_a_frozen_or_released_subscription_cannot_log_in(app: Flask, client: FlaskClient) -> None:
    callback = at_idp(start(client), "wang")  # started while active
    with app.app_context(), database.connection_context():
        Instance.create(instance_id=INSTANCE, marketplace="koogallery", creation_key="k-sso", state="frozen")
    html_page(back(client, callback), 403, "not active")
    assert logins(app)[-1] == ("refused", "the instance is frozen", None)
    with app.app_context(), database.connection_context():
        Instance.update(state="released").execute()
    html_page(client.get(f"/sso/{INSTANCE}/login"), 403, "not active")
    assert logins(app)[-1] == ("refused", "the instance is released", None)
    with app.app_context(), database.connection_context():
        Instance.update(state="active").execute()
    assert login(client, "wang").status_code == 302


@pytest.mark.usefixtures("synced")
@pytest.mark.parametrize("env_extra", [{"ISV_SSO_PKCE": "0", "ISV_SSO_SCOPE": "base"}], indirect=True)
def test_without_pkce_for_an_idp_that_refuses_it(
    app: Flask, client: FlaskClient, idp: IdentityProvider
) -> None:
    authorize = start(client)
    query = parse_qs(urlsplit(authorize).query)
    assert "code_challenge" not in query and query["scope"] == ["base"]
    response = back(client, at_idp(authorize, "wang"))
    assert response.status_code == 302 and claims_of(response.headers["Location"])["sub"] == "wang"


def test_without_a_product_url_sso_answers_that_it_is_not_configured(
    tmp_path: Path, database_url: str
) -> None:
    from isvserver import create_app

    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS="kit-key-sso-1-0123456789",
        ISV_KIT_PRIVATE_KEY=PRIVATE_PEM.decode("ascii"),
    )
    app = create_app(load_settings(env))
    client = app.test_client()
    try:
        html_page(client.get(f"/sso/{INSTANCE}/login"), 503, "not configured")
        html_page(client.get("/sso/callback?code=a&state=b"), 503, "not configured")
        assert DATA_KEY not in client.get(f"/sso/{INSTANCE}/login").get_data(as_text=True)
    finally:
        db.close_all()


@pytest.mark.usefixtures("synced")
def test_logins_expired_a_day_ago_are_pruned_hourly_and_their_outcomes_stay(
    app: Flask, client: FlaskClient
) -> None:
    for _ in range(3):
        start(client)
    html_page(client.get("/sso/callback?code=x&state=forged"), 400, "sign in again")
    every = app.extensions["isvserver"].jobs.periodic["kit.prune_sso_states"]
    with app.app_context(), database.connection_context():
        old, recent, _fresh = (row.id for row in KitSsoState.select().order_by(KitSsoState.id))
        day_ago, hours_ago = utcnow() - timedelta(days=1, minutes=1), utcnow() - timedelta(hours=23)
        KitSsoState.update(expires_at=day_ago).where(KitSsoState.id == old).execute()
        KitSsoState.update(expires_at=hours_ago).where(KitSsoState.id == recent).execute()
        every.fn(app.extensions["isvserver"])  # what the consumer runs hourly
        assert old not in [row.id for row in KitSsoState.select()] and KitSsoState.select().count() == 2
        assert sso_state.prune() == 0
    assert every.seconds == 3600
    assert logins(app)[-1][:2] == ("refused", "the state is unknown")
