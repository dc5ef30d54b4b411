"""Kit single sign-on through a real `isvserver serve` (gunicorn), a real local identity provider and the
product of examples/sso_verify.py under gunicorn: an HTTP client that follows redirects and keeps cookies,
and a real headless Chromium; replayed state and assertion, revoked and disabled users, an IdP slow or
down; nothing of the OAuth exchange in the server's log, access log included."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from isvserver.marketplaces.koogallery_kit.client_secret import encrypt_client_secret, generate_key_pair

from support.browser import chromium
from support.harness import base_env
from support.oauth_idp import TOKEN, IdentityProvider
from support.server import (
    PRODUCE_PATH,
    Server,
    db_rows,
    http_request,
    running_gunicorn,
    running_server,
    subprocess_env,
)

pytestmark = pytest.mark.e2e

KIT_KEY = "kit-key-sso-e2e-5b1f2a"
PRIVATE_PEM, PUBLIC_PEM = generate_key_pair()
PUBLIC_KEY = serialization.load_pem_public_key(PUBLIC_PEM)
ASSERTION_KEY = "e2e-assertion-key-9f8e7d6c5b4a39281706"
CLIENT_SECRET = "e2e-sso-client-secret-41d2"
INSTANCE, TENANT = "sso-e2e-1", "tenant-e2e"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
EXAMPLES = Path(__file__).resolve().parents[4] / "examples"


def kit_call(server: Server, activity: str, body: dict[str, Any]) -> None:
    """One signed Kit sync call (spec §2.2), which must succeed."""
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp, nonce = str(int(time.time() * 1000)), secrets.token_hex(32).upper()
    sign = hmac.new(KIT_KEY.encode(), (KIT_KEY + nonce + timestamp).encode() + raw, hashlib.sha256)
    headers = {"x-sign": sign.hexdigest().upper(), "x-timestamp": timestamp, "x-nonce": nonce}
    reply = http_request(server.base, "POST", f"{PRODUCE_PATH}/produceAPI/v2/{activity}", raw, headers)
    assert reply.status == 200 and reply.json["resultCode"] == "000000", reply.raw


def sync(server: Server, idp: IdentityProvider) -> None:
    """Tenant (domainName: the IdP), application (clientSecret RSA-OAEP), users; zhao then revoked."""
    common = {"instanceId": INSTANCE, "tenantId": TENANT, "testFlag": 0, "timeStamp": "20220420114117642"}
    tenant = {"orderId": "CS-SSO", "tenantCode": "sso", "name": "单点公司", "domainName": idp.url, "flag": 1}
    kit_call(server, "tenantSync", {**common, **tenant})
    secret = encrypt_client_secret(PUBLIC_KEY, CLIENT_SECRET)
    app = {"appId": "app-1", "clientId": "client-e2e", "clientSecret": secret, "flag": 1}
    kit_call(server, "applicationSync", {**common, **app})
    users = [
        {"userName": "wang", "name": "王五", "orgCode": "d1", "role": "admin", "enable": "true"},
        {"userName": "zhao", "name": "赵六", "orgCode": "d1", "role": "user", "enable": "true"},
        {"userName": "qian", "name": "钱七", "orgCode": "d2", "role": "user", "enable": "false"},
    ]
    kit_call(server, "authSync", {**common, "appId": "app-1", "userList": users, "flag": 1})
    kit_call(server, "authSync", {**common, "appId": "app-1", "userList": users[1:2], "flag": 3})


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdentityProvider]:
    with IdentityProvider(tmp_path / "idp.sqlite3", "client-e2e", CLIENT_SECRET, TENANT) as running:
        for name in ("wang", "zhao", "qian"):
            running.add_user(name)
        yield running


@pytest.fixture
def product(tmp_path: Path) -> Iterator[str]:
    """examples/sso_verify.py under gunicorn, as the README runs it: its base URL."""
    env = {
        **subprocess_env(),
        "ISV_SSO_ASSERTION_KEY": ASSERTION_KEY,
        "SSO_USED_DB": str(tmp_path / "used.db"),
    }
    with running_gunicorn("sso_verify:app", EXAMPLES, tmp_path / "product.log", env) as base:
        yield base


@pytest.fixture
def server(tmp_path: Path, database_url: str, idp: IdentityProvider, product: str) -> Iterator[Server]:
    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS=KIT_KEY,
        ISV_KIT_PRIVATE_KEY=PRIVATE_PEM.decode("ascii"),
        ISV_SSO_PRODUCT_URL_TEMPLATE=product + "/sso?assertion={assertion}",
        ISV_SSO_ASSERTION_KEY=ASSERTION_KEY,
        ISV_SSO_IDP_TIMEOUT_MS="1500",
    )
    with running_server(subprocess_env(env), tmp_path / "server.log", cwd=tmp_path, workers=2) as running:
        sync(running, idp)
        yield running


def log_in(server: Server, user_name: str, session: requests.Session | None = None) -> requests.Response:
    """A browser-like client: GET the login (redirected to the IdP's form), submit it as `user_name`, follow
    the redirects back through isvserver to wherever they end."""
    session = session or requests.Session()
    form = session.get(f"{server.base}/sso/{INSTANCE}/login", timeout=10)
    assert form.status_code == 200 and 'id="userName"' in form.text, form.text
    fields = {name: html.unescape(value) for name, value in HIDDEN.findall(form.text)}
    return session.post(form.url.split("?")[0], data={**fields, "userName": user_name}, timeout=10)


def test_a_user_logs_in_through_redirects_with_cookies_once_and_refusals_are_pages(
    server: Server, idp: IdentityProvider, product: str
) -> None:
    session = requests.Session()
    landed = log_in(server, "wang", session)
    assert landed.status_code == 200, landed.text
    assert "Welcome 王五 (wang, admin, org d1, tenant tenant-e2e)" in landed.text
    callback, to_product = (r.headers["Location"] for r in landed.history[-2:])
    assert callback.startswith(f"{server.base}/sso/callback?code=")
    assert to_product.startswith(product + "/sso?assertion=")

    replayed = session.get(callback, allow_redirects=False, timeout=10)  # the same state again
    assert replayed.status_code == 400 and "expired or was already used" in replayed.text
    assert replayed.headers["Content-Type"].startswith("text/html")
    again = requests.get(to_product, timeout=10)  # the same assertion again, at the product
    assert again.status_code == 401 and "already used" in again.text
    assert len(idp.requests(TOKEN)) == 1

    revoked = log_in(server, "zhao")
    assert revoked.status_code == 403 and "was revoked" in revoked.text
    disabled = log_in(server, "qian")
    assert disabled.status_code == 403 and "is disabled" in disabled.text

    idp.delay_s = 4
    slow = log_in(server, "wang")
    assert slow.status_code == 504 and "did not answer in time" in slow.text
    idp.delay_s = 0

    url = server.database_url
    outcomes = db_rows(url, "SELECT outcome, reason, user_name FROM kit_sso_login ORDER BY id")
    assert [tuple(row) for row in outcomes] == [
        ("handed_over", "logged in", "wang"),
        ("refused", "the state was already used", None),
        ("refused", "user authorisation revoked", "zhao"),
        ("refused", "user is disabled", "qian"),
        ("refused", "the identity provider did not answer the code exchange in time", None),
    ]

    log = server.read_log()
    secrets_seen = [*idp.issued("code"), *idp.issued("token"), CLIENT_SECRET, to_product.split("=", 1)[1]]
    assert [value for value in secrets_seen if value in log] == []
    assert "?code=" not in log and "state=" not in log and "Traceback" not in log
    assert '"GET /sso/callback HTTP/1.1" 302' in log and '"GET /sso/callback HTTP/1.1" 400' in log
    assert "sso login refused: user authorisation revoked instance_id=sso-e2e-1 app_id=app-1" in log


def test_an_idp_that_is_down_gets_a_page(server: Server, idp: IdentityProvider) -> None:
    session = requests.Session()
    form = session.get(f"{server.base}/sso/{INSTANCE}/login", timeout=10)
    assert form.status_code == 200
    idp.close()
    down = session.get(
        f"{server.base}/sso/callback?code=anything&state={form.url.split('state=')[1].split('&')[0]}",
        timeout=10,
    )
    assert down.status_code == 502 and "refused the sign-in" in down.text
    rows = db_rows(server.database_url, "SELECT reason FROM kit_sso_login")
    assert [tuple(r) for r in rows] == [("the identity provider could not be reached for the code exchange",)]


def test_a_real_browser_logs_in_and_a_revoked_user_cannot(
    server: Server, idp: IdentityProvider, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    def landed(browser: Any, element_id: str) -> Any:
        """The element once the redirects after a click have landed on its page (15 s at most)."""
        located = expected_conditions.presence_of_element_located((By.ID, element_id))
        return WebDriverWait(browser, 15).until(located)

    with chromium(tmp_path / "profile") as browser:
        browser.get(f"{server.base}/sso/{INSTANCE}/login")
        assert browser.title == "Huawei Cloud sign-in"
        browser.find_element(By.ID, "userName").send_keys("wang")
        browser.find_element(By.ID, "login").click()
        welcome = landed(browser, "welcome").text
        assert welcome == "Welcome 王五 (wang, admin, org d1, tenant tenant-e2e)"
        assert browser.find_element(By.ID, "instance").text == INSTANCE
        assert browser.get_cookie("isv_sso") is None  # the login's cookie is gone

        browser.get(f"{server.base}/sso/{INSTANCE}/login")
        landed(browser, "userName").send_keys("zhao")
        browser.find_element(By.ID, "login").click()
        assert landed(browser, "title").text == "You are not authorised for this application"
        assert "was revoked" in browser.find_element(By.ID, "message").text
    assert len(idp.requests(TOKEN)) == 2
