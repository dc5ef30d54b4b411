"""The reply's header names exactly as they cross the socket (the V1 debugger reads `Body-Sign` as is)."""

from __future__ import annotations

import socket

import pytest

from support.harness import ACCESS_KEY
from support.server import PRODUCE_PATH, Server, encode, expected_body_sign, sign

pytestmark = pytest.mark.e2e


def raw_exchange(server: Server, method: str, body: bytes, query: str = "") -> tuple[list[bytes], bytes]:
    """Send one HTTP/1.1 request on a bare socket; the reply's header lines as received, and its body."""
    target = f"{PRODUCE_PATH}?{query}" if query else PRODUCE_PATH
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json;charset=utf8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii") + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[1:], payload


def header_lines(lines: list[bytes], name: bytes) -> list[bytes]:
    """The header lines whose name is `name` in any case, as received."""
    return [line for line in lines if line.split(b":", 1)[0].lower() == name.lower()]


@pytest.mark.parametrize("method", ["POST", "GET"], ids=["produce call", "405 envelope"])
def test_body_sign_header_name_is_sent_as_body_sign(server: Server, method: str) -> None:
    """Exactly one `Body-Sign: ` line, in that case, whose value signs exactly the body bytes."""
    raw = encode({"activity": "newInstance", "orderId": "CSW1", "orderLineId": "CSW1-1", "businessId": "w-1"})
    lines, payload = raw_exchange(server, method, raw, sign(ACCESS_KEY, raw).query)
    [line] = header_lines(lines, b"Body-Sign")
    assert line.startswith(b"Body-Sign: "), line
    assert line.removeprefix(b"Body-Sign: ").decode("ascii") == expected_body_sign(ACCESS_KEY, payload)
