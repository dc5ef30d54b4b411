"""Hostile framing against real gunicorn with the shipped worker: lying chunked bodies, bytes after a
body, bodies announced past ISV_MAX_BODY_BYTES. Each gets its answer at once, in the V2 interface's
terms (a signed 413 or 000002), and no thread waits for bytes that never come. Figures under load are
bench/hostile_traffic.py's."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid

import pytest

from support.harness import ACCESS_KEY
from support.server import PRODUCE_PATH, Server, encode, expected_body_sign, post_signed, sign

pytestmark = pytest.mark.e2e

PROMPT_S = 2.0  # far below the worker's 10 s read deadline, which answered these before


def _target(raw: bytes) -> str:
    return f"{PRODUCE_PATH}?{sign(ACCESS_KEY, raw).query}"


def _head(target: str, framing: str) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    blob, _, body = rest.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in blob.decode().split("\r\n") if ": " in line)
    return status_line.decode(), headers, body


def exchange(
    server: Server, data: bytes, close_write: bool = False
) -> tuple[str, dict[str, str], bytes, float]:
    """Send `data` (without closing our side unless asked); the answer and how long it took."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        started = time.monotonic()
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        status, headers, body = _answer(sock)
        return status, headers, body, time.monotonic() - started


def _new_instance_raw() -> bytes:
    order = "CSH" + uuid.uuid4().hex[:8]
    return encode({"activity": "newInstance", "orderId": order, "orderLineId": f"{order}-1",
                   "businessId": uuid.uuid4().hex})  # fmt: skip


def assert_signed(status: str, headers: dict[str, str], body: bytes, http: str, code: str) -> None:
    assert status == f"HTTP/1.1 {http}", (status, body)
    assert json.loads(body)["resultCode"] == code, body
    assert headers["Body-Sign"] == expected_body_sign(ACCESS_KEY, body)


def test_a_body_announced_past_the_limit_gets_its_413_before_it_is_sent(server: Server) -> None:
    """Content-Length 1 MiB (limit 64 KiB), no body sent, our side left open: a signed 413 at once."""
    status, headers, body, took = exchange(server, _head(_target(b""), "Content-Length: 1048576"))
    assert_signed(status, headers, body, "413 REQUEST ENTITY TOO LARGE", "000002")
    assert took < PROMPT_S, took
    assert "verdict=body_too_large" in server.wait_for_log(lambda t: "verdict=body_too_large" in t)


def test_a_chunk_size_past_the_limit_gets_its_413_at_once(server: Server) -> None:
    """`7fffffffffffffff` announced, two bytes sent, our side left open."""
    data = _head(_target(b""), "Transfer-Encoding: chunked") + b"7fffffffffffffff\r\nab"
    status, headers, body, took = exchange(server, data)
    assert_signed(status, headers, body, "413 REQUEST ENTITY TOO LARGE", "000002")
    assert took < PROMPT_S, took


def test_a_chunked_body_followed_by_more_bytes_is_a_prompt_000002(server: Server) -> None:
    raw = _new_instance_raw()
    chunked = b"%x\r\n" % len(raw) + raw + b"\r\n0\r\n\r\n"
    data = _head(_target(raw), "Transfer-Encoding: chunked") + chunked + b"GET /healthz HTTP/1.1\r\n\r\n"
    status, headers, body, took = exchange(server, data)
    assert_signed(status, headers, body, "200 OK", "000002")
    assert took < PROMPT_S, took
    assert "verdict=malformed_body" in server.wait_for_log(lambda t: "verdict=malformed_body" in t)


def test_a_lying_chunk_holds_no_thread_and_ends_when_the_client_stops(server: Server) -> None:
    """12 connections send a chunk shorter than its size (`10\\r\\nab\\r\\n\\r\\n`) and hold it: signed
    calls meanwhile are answered at once; each lying request is settled as soon as its client closes
    its side (a malformed body, answered at once: a client that only half-closed may still read it)."""
    raw = _new_instance_raw()
    data = _head(_target(raw), "Transfer-Encoding: chunked") + b"10\r\nab\r\n\r\n"
    liars = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(12)]
    try:
        for sock in liars:
            sock.sendall(data)
        time.sleep(0.5)  # every liar is waiting in a worker now
        for _ in range(6):
            started = time.monotonic()
            reply, _ = post_signed(server, _new_instance_raw())
            assert reply.status == 200 and reply.json["resultCode"] == "000000", reply.raw
            assert time.monotonic() - started < 1.0
        for sock in liars:
            sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            _answer(sock)
            assert time.monotonic() - started < PROMPT_S
        log = server.wait_for_log(lambda text: text.count("verdict=malformed_body") >= 12)
        assert log.count("verdict=malformed_body") >= 12, log[-3000:]
    finally:
        for sock in liars:
            sock.close()


def test_a_request_whose_body_stops_coming_gets_a_408(server: Server) -> None:
    """Head whole, 2 of 5 body bytes, then silence: answered 408 at the 10 s read deadline."""
    data = _head(_target(b""), "Content-Length: 5") + b"ab"
    status, _, _, took = exchange(server, data)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert 9.0 < took < 13.0, took
