"""A tenant's identity provider as KooGallery documents it (`/api/v1/oauth2/authorize`, `token`, `userinfo`),
a real HTTP server whose codes, tokens, users and request log live in a SQLite file.

authorize shows a login form (the user types a userName) and redirects back with a one-use code; token
checks the client id and secret (form or HTTP Basic), the code, its redirect URI and the PKCE verifier
(S256); userinfo answers the documented fields for a Bearer token, or HTTP 401 with the documented
`{"error", "error_description"}` body. `delay_s` holds the token answer (a slow IdP); `close()` stops it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

AUTHORIZE, TOKEN, USERINFO = "/api/v1/oauth2/authorize", "/api/v1/oauth2/token", "/api/v1/oauth2/userinfo"
SCHEMA = """
CREATE TABLE IF NOT EXISTS user (user_name TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS code (code TEXT PRIMARY KEY, client_id TEXT, redirect_uri TEXT, challenge TEXT,
    user_name TEXT, expires REAL, used INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS token (token TEXT PRIMARY KEY, user_name TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS request (id INTEGER PRIMARY KEY, method TEXT, path TEXT, outcome TEXT);
"""


class IdentityProvider:
    """The IdP of one tenant with one OAuth client."""

    def __init__(self, db_path: Path, client_id: str, client_secret: str, tenant: str) -> None:
        self.db_path, self.client_id, self.client_secret, self.tenant = (
            db_path,
            client_id,
            client_secret,
            tenant,
        )
        self.delay_s = 0.0
        self.userinfo_refuses = False
        # path → (status, content type, body) answered instead, for answers a broken IdP gives
        self.overrides: dict[str, tuple[int, str, bytes]] = {}
        self._released = threading.Event()
        with self._db() as conn:
            conn.executescript(SCHEMA)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The IdP's origin, what tenantSync's domainName holds."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_user(self, user_name: str, **info: Any) -> None:
        """A user the IdP can log in, with the userinfo fields it answers."""
        fields = {
            "id": f"id-{user_name}",
            "userId": f"id-{user_name}",
            "userName": user_name,
            "name": info.pop("name", user_name),
            "role": "user",
            "organizationCode": "d1",
            "organizationName": "Dept 1",
            "projectName": "Tenant",
            "tenant": self.tenant,
            **info,
        }
        with self._db() as conn:
            conn.execute("INSERT OR REPLACE INTO user VALUES (?, ?)", (user_name, json.dumps(fields)))

    def requests(self, path: str | None = None) -> list[tuple[str, str, str]]:
        """(method, path, outcome) of every request it answered."""
        with self._db() as conn:
            rows = conn.execute("SELECT method, path, outcome FROM request ORDER BY id").fetchall()
        return [r for r in rows if path is None or r[1] == path]

    def issued(self, table: str) -> list[str]:
        """Every code or token it issued (to look for them where they must not be)."""
        with self._db() as conn:
            return [r[0] for r in conn.execute(f"SELECT {table} FROM {table}")]  # noqa: S608 - fixed names

    def close(self) -> None:
        """Stop answering (an IdP that is down)."""
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> IdentityProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def _log(self, method: str, path: str, outcome: str) -> None:
        with self._db() as conn:
            conn.execute(
                "INSERT INTO request (method, path, outcome) VALUES (?, ?, ?)", (method, path, outcome)
            )

    # --- the endpoints -------------------------------------------------------------------------------

    def authorize_form(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if query.get("response_type") != "code" or query.get("client_id") != self.client_id:
            return 400, {"Content-Type": "text/plain"}, b"unknown client or response type"
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in query.items()
        )
        page = (
            "<!doctype html><html><head><title>Huawei Cloud sign-in</title></head><body>"
            f'<form method="post" action="{AUTHORIZE}">{hidden}'
            '<input id="userName" name="userName"><button id="login" type="submit">Log in</button>'
            "</form></body></html>"
        )
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

    def authorize_post(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if form.get("client_id") != self.client_id or not form.get("redirect_uri"):
            return 400, {"Content-Type": "text/plain"}, b"unknown client"
        code = secrets.token_urlsafe(24)
        challenge = form.get("code_challenge") if form.get("code_challenge_method") == "S256" else None
        with self._db() as conn:
            conn.execute(
                "INSERT INTO code (code, client_id, redirect_uri, challenge, user_name, expires)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    code,
                    self.client_id,
                    form["redirect_uri"],
                    challenge,
                    form.get("userName", ""),
                    time.time() + 60,
                ),
            )
        location = form["redirect_uri"] + "?" + urlencode({"code": code, "state": form.get("state", "")})
        return 302, {"Location": location}, b""

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        if self.delay_s:
            self._released.wait(self.delay_s)
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        if client_id != self.client_id or secret != self.client_secret:
            return _json(
                401, {"error": "invalid_client", "error_description": "client authentication failed"}
            )
        if form.get("grant_type") != "authorization_code":
            return _json(400, {"error": "unsupported_grant_type"})
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(
                "SELECT redirect_uri, challenge, user_name, expires, used FROM code WHERE code = ?",
                (form.get("code", ""),),
            ).fetchone()
            if row is not None:
                conn.execute("UPDATE code SET used = 1 WHERE code = ?", (form.get("code", ""),))
            conn.execute("COMMIT")
        if row is None or row[4] or row[3] < time.time() or row[0] != form.get("redirect_uri"):
            return _json(400, {"error": "invalid_grant", "error_description": "bad code"})
        if row[1] is not None:
            verifier = form.get("code_verifier", "")
            computed = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            )
            if computed != row[1]:
                return _json(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        token = secrets.token_urlsafe(32)
        with self._db() as conn:
            conn.execute("INSERT INTO token VALUES (?, ?, ?)", (token, row[2], time.time() + 3600))
        body = {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": "base"}
        return _json(200, body, {"Cache-Control": "no-store"})

    def userinfo(self, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        refused = {"error": "invalid_token", "error_description": "token is invalid or expired"}
        if self.userinfo_refuses or not authorization or not authorization.startswith("Bearer "):
            return _json(401, refused)
        with self._db() as conn:
            row = conn.execute(
                "SELECT info FROM token JOIN user USING (user_name) WHERE token = ? AND expires > ?",
                (authorization[7:], time.time()),
            ).fetchone()
        return _json(200, json.loads(row[0])) if row else _json(401, refused)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _answer(self, answer: tuple[int, dict[str, str], bytes], path: str) -> None:
                status, headers, body = answer
                if path in idp.overrides:
                    status, kind, body = idp.overrides[path]
                    headers = {"Content-Type": kind}
                idp._log(self.command, path, str(status))
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # a client that gave up waiting
                    self.close_connection = True

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == AUTHORIZE:
                    self._answer(idp.authorize_form(query), parts.path)
                elif parts.path == USERINFO:
                    self._answer(idp.userinfo(self.headers.get("Authorization")), parts.path)
                else:
                    self._answer((404, {}, b""), parts.path)

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                if parts.path == AUTHORIZE:
                    self._answer(idp.authorize_post(form), parts.path)
                elif parts.path == TOKEN:
                    self._answer(idp.token(form, self.headers.get("Authorization")), parts.path)
                else:
                    self._answer((404, {}, b""), parts.path)

        return Handler


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()
