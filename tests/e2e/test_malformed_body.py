"""A request body whose chunked encoding is broken, sent to real gunicorn: a signed 000002, no traceback."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid

import pytest

from support.harness import ACCESS_KEY
from support.server import PRODUCE_PATH, Server, encode, expected_body_sign, sign

pytestmark = pytest.mark.e2e


def exchange(server: Server, data: bytes) -> bytes:
    """Send `data` as is on a fresh connection; everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda raw: b"zz\r\n" + raw + b"\r\n0\r\n\r\n", id="chunk size not hex"),
        pytest.param(lambda raw: b"%x\r\n" % len(raw) + raw + b"XX0\r\n\r\n", id="chunk without CRLF"),
    ],
)
def test_broken_chunked_encoding_is_a_signed_000002(server: Server, broken) -> None:
    raw = encode({"activity": "newInstance", "orderId": "CSCHUNK", "orderLineId": "CSCHUNK-1",
                  "businessId": uuid.uuid4().hex})  # fmt: skip
    signed = sign(ACCESS_KEY, raw)
    head = (
        f"POST {PRODUCE_PATH}?{signed.query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = exchange(server, head + broken(raw))
    status_line, _, rest = answer.partition(b"\r\n")
    headers_blob, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in headers_blob.decode().split("\r\n") if ": " in line)
    assert status_line == b"HTTP/1.1 200 OK", answer[:300]
    assert json.loads(body)["resultCode"] == "000002", body
    assert headers["Body-Sign"] == expected_body_sign(ACCESS_KEY, body)
    log = server.wait_for_log(lambda text: "verdict=malformed_body" in text)
    assert "verdict=malformed_body" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
