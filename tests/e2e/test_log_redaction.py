"""No secret reaches any log line of a real gunicorn: its error and access loggers and the app's.

Each path on which gunicorn logs a request line is forced for real: a request line, a header or a
request head it cannot parse, a body that breaks in the app, and a worker aborted by the master's
timeout in the middle of a signed call (with the sync worker, where that path logs the request
line, set in a copy of config/gunicorn.conf.py). Afterwards the whole output of the
server is searched for the signatures, nonces and timestamps sent, the keys, and the body values.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from pathlib import Path

import pytest

from support.harness import ACCESS_KEY, DATA_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY, base_env
from support.server import (
    PRODUCE_PATH,
    Server,
    Signed,
    encode,
    post_signed,
    running_server,
    sign,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.e2e

KEYS = (ACCESS_KEY, SECOND_ACCESS_KEY, NOTIFY_KEY, DATA_KEY)
OVERRIDE = Path(__file__).resolve().parents[2] / "config" / "gunicorn.conf.py"  # the documented one


def _raw_exchange(server: Server, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` as is on a fresh connection; what the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def _body(marker: str) -> dict[str, str]:
    """A newInstance whose personal fields carry `marker`."""
    order_id = f"RED{uuid.uuid4().hex[:10].upper()}"
    return {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": f"{order_id}-000001",
        "businessId": str(uuid.uuid4()),
        "customerName": f"name-{marker}",
        "userName": f"user-{marker}",
        "mobilePhone": f"phone-{marker}",
        "email": f"{marker}@example.com",
    }


def _secrets_in(log: str, sent: list[Signed], markers: list[str]) -> list[str]:
    """Every sent secret or body value that the log shows."""
    found = []
    for signed in sent:
        for name, value in (("signature", signed.signature), ("nonce", signed.nonce)):
            if value in log:
                found.append(f"{name} {value}")
        if signed.timestamp in log:
            found.append(f"timestamp {signed.timestamp}")
    found += [f"key {key}" for key in KEYS if key in log]
    found += [f"body value {marker}" for marker in markers if marker in log]
    return found


def test_parse_errors_app_errors_and_calls_log_no_secret(tmp_path: Path) -> None:
    """The shipped configuration at log level debug: a signed call, an unparsable request line,
    header and over-long request line and head, each with a signed query string, and a chunked body
    that breaks inside the app; every one is answered, and no log line holds a secret."""
    url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
    env = subprocess_env(base_env(tmp_path, url, ISV_LOG_LEVEL="debug"))
    sent: list[Signed] = []
    markers: list[str] = []
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=2) as server:

        def signed_target(marker: str) -> tuple[str, bytes]:
            raw = encode(_body(marker))
            signed = sign(ACCESS_KEY, raw)
            sent.append(signed)
            markers.append(marker)
            return f"{PRODUCE_PATH}?{signed.query}", raw

        marker = uuid.uuid4().hex
        raw = encode(_body(marker))
        reply, signed = post_signed(server, raw)
        sent.append(signed)
        markers.append(marker)
        assert reply.status == 200 and reply.json["resultCode"] == "000000", reply.raw

        target, raw = signed_target(uuid.uuid4().hex)
        answers = {
            "bad request line": _raw_exchange(server, f"POST {target} HTTP/1.1 extra\r\n\r\n".encode()),
            "request line without spaces": _raw_exchange(server, f"POST{target}\r\n\r\n".encode()),
            "bad header name": _raw_exchange(
                server, f"POST {target} HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n".encode()
            ),
        }
        target, raw = signed_target(uuid.uuid4().hex)
        answers["request line too long"] = _raw_exchange(
            server, f"POST {target}&pad={'x' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        target, raw = signed_target(uuid.uuid4().hex)
        headers = "".join(f"X-Pad-{i}: {target}\r\n" for i in range(120))
        answers["too many headers"] = _raw_exchange(
            server, f"POST {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
        )
        target, raw = signed_target(uuid.uuid4().hex)
        broken_chunk = b"zz" + raw + b"\r\n" + raw + b"\r\n0\r\n\r\n"
        answers["broken chunked body"] = _raw_exchange(
            server,
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
            + broken_chunk,
        )
        for what, answer in answers.items():
            assert answer.startswith(b"HTTP/1.1 "), f"{what}: no HTTP answer ({answer[:200]!r})"
        statuses = {what: answer.split(b" ", 2)[1].decode() for what, answer in answers.items()}
        assert statuses["bad request line"] == "400", statuses
        assert statuses["request line without spaces"] == "400", statuses
        assert statuses["bad header name"] == "400", statuses
        assert statuses["request line too long"] == "414", statuses
        assert statuses["too many headers"] in ("400", "431"), statuses
        assert statuses["broken chunked body"] in ("200", "400"), statuses
        log = server.wait_for_log(
            lambda text: text.count("Invalid request from ip=") >= 4 and "verdict=malformed_body" in text
        )

    # The paths were taken: gunicorn logged each parse error, the app the broken body.
    assert log.count("Invalid request from ip=") >= 4, log[-4000:]
    assert "verdict=malformed_body" in log, log[-4000:]  # a signed 000002, with no traceback
    leaked = _secrets_in(log, sent, markers)
    assert not leaked, f"secrets in the server log: {leaked}\n{log[-4000:]}"


def test_worker_aborted_in_a_call_logs_no_secret(tmp_path: Path) -> None:
    """With the sync worker and a 2 s timeout (config/gunicorn.conf.py plus those two), a signed
    call whose body stops arriving holds its worker until the master aborts it; gunicorn logs "Error
    handling request" with the request line redacted, and no log line holds a secret."""
    url = f"sqlite:///{tmp_path / 'isvserver.sqlite3'}"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(OVERRIDE.read_text() + "worker_class = 'sync'\nthreads = 1\ntimeout = 2\n")
    env = subprocess_env(base_env(tmp_path, url))
    marker = uuid.uuid4().hex
    raw = encode(_body(marker))
    signed = sign(ACCESS_KEY, raw)
    head = (
        f"POST {PRODUCE_PATH}?{signed.query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode()
    with running_server(
        env, tmp_path / "server.log", cwd=tmp_path, workers=1, serve_args=("--config", str(conf))
    ) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head + raw[:-1])  # the last byte never comes: the app waits for it
            assert wait_until(lambda: "Error handling request" in server.read_log(), 20), server.read_log()
        assert wait_until(lambda: "Booting worker" in server.read_log().split("WORKER TIMEOUT")[-1], 20)
        log = server.read_log()

    assert "WORKER TIMEOUT" in log, log[-4000:]
    assert f"Error handling request POST {PRODUCE_PATH}?[redacted]" in log, log[-4000:]
    leaked = _secrets_in(log, [signed], [marker])
    assert not leaked, f"secrets in the server log: {leaked}\n{log[-4000:]}"
