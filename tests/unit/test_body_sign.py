"""Body-Sign (spec §3) to the byte, and the marketplace's signed POST against a small real HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from isvserver.body_sign import Answer, body_sign, body_sign_valid, post

KEY = "reply-key-1"
BODY = b'{"resultCode":"000000","resultMsg":"success"}'


def expected_header(key: str, body: bytes) -> str:
    """Spec §3, written out independently: Base64 of HMAC-SHA256 over the exact response bytes."""
    digest = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
    return f'sign_type="HMAC-SHA256", signature="{digest}"'


def test_the_header_signs_the_exact_bytes_with_the_key() -> None:
    assert body_sign(KEY, BODY) == expected_header(KEY, BODY)
    assert body_sign("密钥", "中文".encode()) == expected_header("密钥", "中文".encode())
    assert body_sign(KEY, BODY) != body_sign(KEY, BODY + b" ")
    assert body_sign(KEY, BODY) != body_sign(KEY + "x", BODY)


def test_a_header_is_valid_only_for_its_bytes_and_key() -> None:
    header = body_sign(KEY, BODY)
    assert body_sign_valid(KEY, BODY, header) is True
    assert body_sign_valid(KEY, BODY + b"\n", header) is False
    assert body_sign_valid("other-key", BODY, header) is False
    assert body_sign_valid(KEY, BODY, None) is False
    assert body_sign_valid(KEY, BODY, "") is False


@pytest.mark.parametrize(
    "around",
    [("x", ""), ("", "x"), (" ", ""), ("", " "), ("", ', sign_type="HMAC-SHA256"'), ("Body-Sign: ", "")],
    ids=["text-before", "text-after", "space-before", "space-after", "second-field", "header-name"],
)
def test_a_valid_value_with_text_before_or_after_it_is_refused(around: tuple[str, str]) -> None:
    before, after = around
    assert body_sign_valid(KEY, BODY, before + body_sign(KEY, BODY) + after) is False


@pytest.mark.parametrize(
    "header",
    [
        'sign_type="HMAC-SHA1", signature="{sig}"',
        'sign_type="HMAC-SHA256",signature="{sig}"',
        "sign_type=HMAC-SHA256, signature={sig}",
        'signature="{sig}", sign_type="HMAC-SHA256"',
        'sign_type="HMAC-SHA256", signature="{sig}="',
        'sign_type="HMAC-SHA256", signature="{short}"',
    ],
    ids=["other-algorithm", "no-space", "unquoted", "reordered", "longer", "shorter"],
)
def test_a_value_in_another_form_is_refused(header: str) -> None:
    signature = body_sign(KEY, BODY).split('signature="')[1].rstrip('"')
    assert body_sign_valid(KEY, BODY, header.format(sig=signature, short=signature[:-4])) is False


class Reply:
    """What the server answers next: status, body, whether to sign it (and with which key)."""

    def __init__(self) -> None:
        self.status, self.body, self.key = 200, BODY, KEY
        self.requests: list[tuple[str, dict[str, str], bytes]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Reply]]:
    """A real HTTP server on loopback that records each POST and answers what `Reply` says."""
    reply = Reply()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            reply.requests.append((self.path, dict(self.headers.items()), self.rfile.read(length)))
            self.send_response(reply.status)
            if reply.key is not None:
                self.send_header("Body-Sign", body_sign(reply.key, reply.body))
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", reply
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_post_sends_the_exact_bytes_and_checks_the_reply(server: tuple[str, Reply]) -> None:
    url, reply = server
    payload = json.dumps({"activity": "queryInstance"}, separators=(",", ":")).encode()
    answer = post(f"{url}/saasproduce?x=1", payload, KEY, headers={"x-nonce": "n-1"})
    assert answer == Answer(200, BODY, True, {"resultCode": "000000", "resultMsg": "success"})
    assert answer.code == "000000"
    ((path, headers, sent),) = reply.requests
    assert (path, sent) == ("/saasproduce?x=1", payload)
    assert headers["Content-Type"] == "application/json;charset=utf8"
    assert headers["Accept"] == "application/json"
    assert headers["X-Nonce"] == "n-1"


def test_post_headers_replace_the_defaults(server: tuple[str, Reply]) -> None:
    url, reply = server
    post(url, b"{}", KEY, headers={"Content-Type": "text/plain"})
    assert reply.requests[0][1]["Content-Type"] == "text/plain"


def test_an_error_status_is_an_answer_too(server: tuple[str, Reply]) -> None:
    url, reply = server
    reply.status, reply.body = 413, b'{"resultCode":"000002","resultMsg":"too large"}'
    answer = post(url, b"{}", KEY)
    assert (answer.status, answer.code, answer.body_sign_ok) == (413, "000002", True)


@pytest.mark.parametrize(
    ("body", "key", "parsed", "signed"),
    [
        (BODY, "someone-else", {"resultCode": "000000", "resultMsg": "success"}, False),
        (BODY, None, {"resultCode": "000000", "resultMsg": "success"}, False),
        (b"<html>bad gateway</html>", KEY, None, True),
        (b'["000000"]', KEY, None, True),
        (b"", None, None, False),
    ],
    ids=["wrong-key", "unsigned", "not-json", "json-list", "empty"],
)
def test_what_the_reply_holds_is_told_as_it_is(
    server: tuple[str, Reply], body: bytes, key: str | None, parsed: dict | None, signed: bool
) -> None:
    url, reply = server
    reply.body, reply.key = body, key
    answer = post(url, b"{}", KEY)
    assert (answer.raw, answer.json, answer.body_sign_ok) == (body, parsed, signed)
    assert answer.code == (parsed or {}).get("resultCode")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/", "127.0.0.1:8080/saasproduce"])
def test_post_refuses_a_url_that_is_not_http(url: str) -> None:
    with pytest.raises(ValueError, match=r"^the URL must be http:// or https://$"):
        post(url, b"{}", KEY)


def test_post_speaks_tls_to_an_https_url(server: tuple[str, Reply]) -> None:
    """An https:// URL is taken (not refused as a scheme): the plain-HTTP server fails its TLS handshake."""
    url, reply = server
    with pytest.raises(urllib.error.URLError, match="SSL"):
        post(url.replace("http://", "https://"), b"{}", KEY, timeout=5)
    assert reply.requests == []


def test_post_gives_up_on_a_silent_server_after_its_timeout() -> None:
    """A server that accepts the connection and never answers: the call ends at `timeout`."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            post(f"http://127.0.0.1:{silent.getsockname()[1]}/", b"{}", KEY, timeout=0.3)
        assert time.monotonic() - started < 10
