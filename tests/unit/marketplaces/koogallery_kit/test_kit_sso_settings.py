"""SSO settings (every problem named, never a value), the assertion's checks, the pages, and the
redaction of OAuth names in gunicorn's lines."""

from __future__ import annotations

import time

import jwt
import pytest

from isvserver.marketplaces.koogallery_kit.sso_assertion import issue, verify
from isvserver.marketplaces.koogallery_kit.sso_config import SsoSettings, load_sso
from isvserver.marketplaces.koogallery_kit.sso_idp import IdpError, base_url
from isvserver.marketplaces.koogallery_kit.sso_pages import error_page, page
from isvserver.settings import Problems
from isvserver.web.gunicorn_logging import redact_line

KEY = "k" * 40


def loaded(**env: str) -> tuple[SsoSettings, list[str]]:
    problems = Problems()
    return load_sso(env, True, problems), problems.messages


def test_defaults_leave_sso_off_with_the_documented_paths() -> None:
    sso, problems = loaded()
    assert problems == [] and not sso.enabled
    assert (sso.path, sso.authorize_path, sso.token_path, sso.userinfo_path) == (
        "/sso",
        "/api/v1/oauth2/authorize",
        "/api/v1/oauth2/token",
        "/api/v1/oauth2/userinfo",
    )
    assert sso.pkce and sso.state_ttl_s == 300 and sso.idp_timeout_ms == 5000 and sso.assertion_ttl_s == 60


def test_a_complete_configuration_turns_it_on() -> None:
    sso, problems = loaded(
        ISV_SSO_PRODUCT_URL_TEMPLATE="https://app.example.com/{tenantId}/sso?a={assertion}&i={instanceId}",
        ISV_SSO_ASSERTION_KEY=KEY,
        ISV_SSO_PATH="/login/",
        ISV_SSO_PKCE="0",
        ISV_SSO_PUBLIC_URL="https://isv.example.com/",
        ISV_SSO_SCOPE="openid",
    )
    assert problems == [] and sso.enabled
    assert (sso.path, sso.pkce, sso.public_url, sso.scope) == (
        "/login",
        False,
        "https://isv.example.com",
        "openid",
    )
    assert KEY not in repr(sso)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISV_SSO_PRODUCT_URL_TEMPLATE": "https://app.example.com/sso"}, "must hold {assertion}"),
        ({"ISV_SSO_PRODUCT_URL_TEMPLATE": "https://a.example/{assertion}/{user}"}, "may only hold"),
        ({"ISV_SSO_PRODUCT_URL_TEMPLATE": "ftp://a.example/{assertion}"}, "must be an http(s) URL"),
        (
            {"ISV_SSO_PRODUCT_URL_TEMPLATE": "https://a.example/{assertion}"},
            "ISV_SSO_ASSERTION_KEY is required",
        ),
        ({"ISV_SSO_ASSERTION_KEY": "short-secret"}, "at least 32 bytes"),
        ({"ISV_SSO_PATH": "sso"}, "ISV_SSO_PATH must be a path"),
        ({"ISV_SSO_STATE_TTL_S": "5"}, "ISV_SSO_STATE_TTL_S must be between 30 and 3600"),
        ({"ISV_SSO_PKCE": "maybe"}, "ISV_SSO_PKCE must be 1 or 0"),
    ],
)
def test_each_bad_setting_is_named_without_its_value(env: dict[str, str], message: str) -> None:
    _, problems = loaded(**env)
    assert len(problems) == 1 and message in problems[0], problems
    assert "short-secret" not in problems[0]


def test_the_assertion_is_checked_for_signature_audience_issuer_and_expiry() -> None:
    sso, _ = loaded(ISV_SSO_PRODUCT_URL_TEMPLATE="https://a.example/{assertion}", ISV_SSO_ASSERTION_KEY=KEY)
    claims = {"sub": "wang", "instanceId": "i-1"}
    good = issue(sso, claims)
    assert verify(sso, good.token)["jti"] == good.jti
    assert issue(sso, claims).jti != good.jti
    expired = issue(sso, claims, now=time.time() - 120)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(sso, expired.token)
    other = SsoSettings(
        product_url_template=sso.product_url_template, assertion_key=KEY.encode(), audience="x"
    )
    with pytest.raises(jwt.InvalidAudienceError):
        verify(other, good.token)
    forged = SsoSettings(product_url_template=sso.product_url_template, assertion_key=b"z" * 40)
    with pytest.raises(jwt.InvalidSignatureError):
        verify(forged, good.token)
    with pytest.raises(ValueError, match="ISV_SSO_ASSERTION_KEY"):
        issue(SsoSettings(), claims)


def test_the_idp_origin_comes_from_the_domain_name() -> None:
    assert base_url("tenant.example.com") == "https://tenant.example.com"
    assert base_url("http://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    with pytest.raises(IdpError):
        base_url("ftp://tenant.example.com")


def test_pages_are_escaped_html_and_errors_say_nothing_of_the_cause() -> None:
    response = page(403, "<script>x</script>")
    text = response.get_data(as_text=True)
    assert response.status_code == 403 and "&lt;script&gt;" in text and "<script>x" not in text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    hidden = error_page(500, "KeyError: client_secret").get_data(as_text=True)
    assert "KeyError" not in hidden and "went wrong on our side" in hidden
    assert "not found" in error_page(404, "not found").get_data(as_text=True)


def test_gunicorn_lines_hide_oauth_values() -> None:
    line = redact_line(
        "GET /sso/callback?code=C0DE&state=ST4TE access_token=T0K client_secret=S3C assertion=eyJ"
    )
    for value in ("C0DE", "ST4TE", "T0K", "S3C", "eyJ"):
        assert value not in line, line
