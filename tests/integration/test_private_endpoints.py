"""/metrics and /openapi.json answer loopback (or ISV_METRICS_ALLOW) and bearers of ISV_METRICS_TOKEN only;
the health probes and the marketplace paths answer anyone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.settings import SettingsError, load_settings
from isvserver.web.private import FORBIDDEN, LOOPBACK, bearer_matches, in_networks, parse_networks

TOKEN = "scrape-token-0123456789"
PRIVATE = ("/metrics", "/openapi.json")


@pytest.fixture
def app_with(env: dict[str, str]) -> Iterator:
    made: list[Flask] = []

    def build(**overrides: str) -> FlaskClient:
        app = create_app(load_settings({**env, **overrides}))
        made.append(app)
        return app.test_client()

    yield build
    db.close_all()


def status(client: FlaskClient, path: str, peer: str, **headers: str) -> int:
    return client.get(path, headers=headers, environ_base={"REMOTE_ADDR": peer}).status_code


@pytest.mark.parametrize("path", PRIVATE)
def test_by_default_loopback_reads_them_and_no_one_else(app_with, path: str) -> None:
    client = app_with()
    assert status(client, path, "127.0.0.1") == 200
    assert status(client, path, "::1") == 200
    assert status(client, path, "::ffff:127.0.0.1") == 200
    response = client.get(path, environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert response.status_code == 403 and response.get_json() == {"error": FORBIDDEN, "status": 403}
    assert status(client, "/healthz", "203.0.113.5") == 200  # probes stay public


def test_behind_a_trusted_proxy_the_forwarded_caller_counts(app_with) -> None:
    """nginx on the same host: the peer is loopback, the caller is the last X-Forwarded-For hop."""
    client = app_with()
    assert status(client, "/metrics", "127.0.0.1", **{"X-Forwarded-For": "203.0.113.5"}) == 403
    assert status(client, "/metrics", "127.0.0.1", **{"X-Forwarded-For": "203.0.113.5, 127.0.0.1"}) == 200


def test_allowed_networks_and_a_bearer_token(app_with) -> None:
    client = app_with(ISV_METRICS_ALLOW="10.0.0.0/8, 192.0.2.7", ISV_METRICS_TOKEN=TOKEN)
    assert status(client, "/metrics", "10.1.2.3") == 200
    assert status(client, "/openapi.json", "192.0.2.7") == 200
    assert status(client, "/metrics", "192.0.2.8") == 403
    assert status(client, "/metrics", "127.0.0.1") == 403  # the list replaces loopback
    assert status(client, "/metrics", "198.51.100.1", Authorization=f"Bearer {TOKEN}") == 200
    assert status(client, "/metrics", "198.51.100.1", Authorization=f"bearer  {TOKEN} ") == 200
    assert status(client, "/metrics", "198.51.100.1", Authorization=f"Bearer {TOKEN}x") == 403
    assert status(client, "/metrics", "198.51.100.1", Authorization=f"Basic {TOKEN}") == 403


def test_none_leaves_only_the_token(app_with) -> None:
    client = app_with(ISV_METRICS_ALLOW="none", ISV_METRICS_TOKEN=TOKEN)
    assert status(client, "/metrics", "127.0.0.1") == 403
    assert status(client, "/metrics", "127.0.0.1", Authorization=f"Bearer {TOKEN}") == 200


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ISV_METRICS_ALLOW", "10.0.0.0/33", "ISV_METRICS_ALLOW: '10.0.0.0/33' is not an address or network"),
        ("ISV_METRICS_ALLOW", "nginx", "ISV_METRICS_ALLOW: 'nginx' is not"),
        ("ISV_METRICS_TOKEN", "short", "ISV_METRICS_TOKEN must be at least 16"),
        ("ISV_METRICS_TOKEN", "with a space 0123456789", "ISV_METRICS_TOKEN must be"),
        ("ISV_METRICS_TOKEN", "tökentökentökentöken", "ISV_METRICS_TOKEN must be"),
    ],
)
def test_bad_values_are_refused_by_name(env: dict[str, str], name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**env, name: value})
    assert message in str(raised.value)
    if name == "ISV_METRICS_TOKEN":
        assert value not in str(raised.value)


def test_settings_defaults_and_values(env: dict[str, str]) -> None:
    settings = load_settings(env)
    assert settings.metrics_allow == LOOPBACK and settings.metrics_token == ""
    assert TOKEN not in repr(load_settings({**env, "ISV_METRICS_TOKEN": TOKEN}))


def test_the_pieces() -> None:
    assert parse_networks(" 10.0.0.1 ,,::1/128") == parse_networks("10.0.0.1/32,::1")
    assert in_networks("127.0.0.9", LOOPBACK) and in_networks("fe80::1%eth0", parse_networks("fe80::/10"))
    assert not in_networks(None, LOOPBACK) and not in_networks("not-an-ip", LOOPBACK)
    assert not in_networks("::ffff:10.0.0.1", LOOPBACK)
    assert not bearer_matches(None, TOKEN) and not bearer_matches(f"Bearer {TOKEN}", "")
    assert not bearer_matches("Bearer \udcff", TOKEN)  # undecodable bytes compare, never raise
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN)
