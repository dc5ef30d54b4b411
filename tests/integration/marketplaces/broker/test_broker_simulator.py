"""`isvserver simulate broker` against the app (its HTTP calls routed to the test client)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from isvserver.marketplaces.broker import clients, simulator

from .conftest import PREFIX


@pytest.fixture
def routed(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """simulator.request answered by the app; the paths asked, in order."""
    asked: list[str] = []

    def request(
        method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        asked.append(f"{method} {parts.path}")
        response = client.open(target, method=method, data=body, headers=headers or {})
        return simulator.Reply(response.status_code, dict(response.headers), response.get_json(silent=True))

    monkeypatch.setattr(simulator, "request", request)
    return asked


def test_the_conformance_check_passes_against_this_broker(
    routed: list[str], credentials: clients.Credentials
) -> None:
    result = CliRunner().invoke(
        simulator.simulate_broker,
        [f"http://broker.test{PREFIX}", "--client-id", credentials.client_id],
        env={"ISV_BROKER_CLIENT_SECRET": credentials.client_secret},
    )
    assert result.exit_code == 0, result.output
    assert "broker: all answers right" in result.output
    assert credentials.client_secret not in result.output
    assert "token with a wrong secret (invalid_client): HTTP 401 ok" in result.output
    assert "delete again (gone): HTTP 410 ok" in result.output
    assert routed[0] == "POST /baas/auth/v1.0/oauth2/token"


def test_a_wrong_answer_fails_the_check(routed: list[str], credentials: clients.Credentials) -> None:
    result = CliRunner().invoke(
        simulator.simulate_broker,
        [f"http://broker.test{PREFIX}", "--client-id", credentials.client_id, "--client-secret", "not-it"],
    )
    assert result.exit_code == 1
    assert "token: HTTP 401 WRONG (expected 200)" in result.output
    assert "wrong answer(s)" in result.output


def test_the_url_must_be_http() -> None:
    result = CliRunner().invoke(
        simulator.simulate_broker, ["ftp://x/broker", "--client-id", "a", "--client-secret", "b"]
    )
    assert result.exit_code == 2
    assert "http:// or https://" in result.output


def test_requests_read_error_statuses_and_bodies_that_are_not_json() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            teapot = self.path == "/teapot"
            body = b"not json" if teapot else b'{"ok": true}'
            self.send_response(418 if teapot else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        teapot = simulator.request("GET", f"{base}/teapot")
        assert (teapot.status, teapot.json) == (418, None)
        ok = simulator.request("GET", f"{base}/fine")
        assert (ok.status, ok.json) == (200, {"ok": True})
    finally:
        server.shutdown()
        server.server_close()
