"""A local marketplace order-query API (spec §10) on 127.0.0.1 that checks AK/SK signatures.

It verifies the `SDK-HMAC-SHA256` signature with its own small implementation (not the signer under
test), rejects stale `X-Sdk-Date`s, and serves the documented mock orders.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from isvserver.marketplaces.koogallery.orders import QUERY_PATH

AK = "HPUAMOCKACCESSKEY01"
SK = "mock-secret-key-0123456789abcdefghijklmn"
WRONG_SK = "not-the-secret-key-9876543210zyxwvuts"
MAX_CLOCK_SKEW = timedelta(minutes=15)
CREATE_TIME = "20240317064237"
BUYER = {
    "customerId": "68cbc86abc2018ab880d92f36422fa0e",
    "customerName": "Acme 买家 Ltd",
    "userId": "0b5d4f1c9e8a4b7d9c3f2e1a6b8d7c5e",
    "userName": "alice.buyer",
}
PRODUCT = {
    "productId": "OFFI821356904436965376",
    "skuCode": "3a7c6e28-5f0e-4a4b-9a34-91d0d1f7e3b2",
    "productName": "isvserver 测试商品",
}
# order id: (orderType, chargingMode, periodType, periodNumber, expireTime, linearValue)
MOCK_ORDERS: dict[str, tuple[str, str, str | None, int | None, str | None, int | None]] = {
    "MOCKPERIODYEARNEW": ("NEW", "PERIOD", "year", 1, "20250317155959", 10),
    "MOCKONETIMENEW": ("NEW", "ONE_TIME", None, None, None, None),
    "MOCKONDEMAND": ("NEW", "ON_DEMAND", None, None, None, None),
    "MOCKONDEMANDPKG": ("NEW", "ON_DEMAND_PKG", None, None, "20250317155959000", 100),
    "MOCKPERIODDAYTRIAL": ("TRIAL", "PERIOD", "day", 7, "20240324155959", None),
    "MOCKMONTYTRIALTOFORMAL": ("TRIAL_TO_FORMAL", "PERIOD", "month", 1, "20240417155959", None),
    "MOCKMONTYUNSUBSCRIBE": ("UNSUBSCRIBE", "PERIOD", "month", 1, "20240317064237", None),
    "MOCKMONTYRENEW": ("RENEW", "PERIOD", "month", 3, "20240717155959", None),
    "MOCKMONTYCHANGE": ("CHANGE", "PERIOD", "month", 1, "20240417155959", 20),
}


_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-_.~")


def _pct(text: str) -> str:
    """RFC 3986 encoding, written out by hand so that it shares nothing with the signer under test."""
    return "".join(c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def expected_signature(
    method: str, target: str, header: Callable[[str], str | None], names: list[str], body: bytes, sk: str
) -> str:
    """What the gateway computes for a request: spec §10, from the raw request target and headers."""
    path, _, query = target.partition("?")
    uri = "/".join(_pct(segment) for segment in unquote(path).split("/"))
    if not uri.endswith("/"):
        uri += "/"
    pairs = sorted(
        (unquote(name), unquote(value))
        for name, _, value in (item.partition("=") for item in query.split("&"))
        if name
    )
    canonical_query = "&".join(_pct(name) + "=" + _pct(value) for name, value in pairs)
    lines = "".join(f"{name}:{(header(name) or '').strip()}\n" for name in names)
    canonical = "\n".join(
        [method, uri, canonical_query, lines, ";".join(names), hashlib.sha256(body).hexdigest()]
    )
    date = header("x-sdk-date") or ""
    to_sign = "SDK-HMAC-SHA256\n" + date + "\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def mock_order(order_id: str) -> dict[str, Any]:
    """The documented mock order `order_id`, with plausible values in every documented field."""
    order_type, mode, period_type, period_number, expire, linear = MOCK_ORDERS[order_id]
    product: dict[str, Any] = dict(PRODUCT)
    if linear is not None:
        product["linearValue"] = linear
    line: dict[str, Any] = {
        "orderLineId": f"{order_id}-000001",
        "chargingMode": mode,
        "productInfo": [product],
    }
    if period_type is not None:
        line.update(periodType=period_type, periodNumber=period_number)
    if expire is not None:
        line["expireTime"] = expire
    info: dict[str, Any] = {
        "orderId": order_id,
        "orderType": order_type,
        "createTime": CREATE_TIME,
        "orderLine": [line],
        "buyerInfo": dict(BUYER),
    }
    if order_id == "MOCKPERIODYEARNEW":
        info["extendParams"] = [{"name": "emailDomainName", "value": "acme.example"}]
    return info


class OrderApi(ThreadingHTTPServer):
    """The order-query API on a free loopback port, checking AK/SK like the API gateway does."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.keys = {AK: SK}
        self.success_code = "MKT.0000"
        self.canned: tuple[int, dict[str, str], bytes] | None = None  # a fixed reply, when set
        self.received: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: OrderApi

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _authentication_failure(self, body: bytes) -> dict[str, Any] | None:
        """The gateway's 401 body when the AK/SK signature does not verify, else None."""
        gateway = {"error_code": "APIG.0301", "request_id": "4c7a1e8f0d2b"}
        match = re.fullmatch(
            r"SDK-HMAC-SHA256 Access=([^,\s]+), SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
            self.headers.get("Authorization", ""),
        )
        if match is None:
            return {
                **gateway,
                "error_msg": "Incorrect IAM authentication information: Authorization is malformed",
            }
        access, names, signature = match.group(1), match.group(2).split(";"), match.group(3)
        if access not in self.server.keys:
            return {"resultCode": "MKT.0154", "resultMsg": "Illegal token"}
        if not {"host", "x-sdk-date"} <= set(names) or any(self.headers.get(n) is None for n in names):
            return {**gateway, "error_msg": "Incorrect IAM authentication information: signed header missing"}
        try:
            date = datetime.strptime(self.headers["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return {
                **gateway,
                "error_msg": "Incorrect IAM authentication information: x-sdk-date is malformed",
            }
        if abs(datetime.now(UTC) - date) > MAX_CLOCK_SKEW:
            return {**gateway, "error_msg": "Incorrect IAM authentication information: x-sdk-date expired"}
        expected = expected_signature(
            self.command, self.path, self.headers.get, names, body, self.server.keys[access]
        )
        if not hmac.compare_digest(expected, signature):
            return {
                **gateway,
                "error_msg": "Incorrect IAM authentication information: verify aksk signature fail",
            }
        return None

    def do_GET(self) -> None:
        """GET /api/mkp-openapi-public/global/v1/order/query?orderId=…[&orderLineId=…]."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append({"target": self.path, "headers": dict(self.headers.items())})
        failure = self._authentication_failure(body)
        if failure is not None:
            self._reply(401, failure)
            return
        if self.server.canned is not None:
            status, headers, raw = self.server.canned
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(raw))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
            return
        path, _, query = self.path.partition("?")
        if path != QUERY_PATH:
            self._reply(
                404,
                {"error_code": "APIG.0101", "error_msg": "The API does not exist or has not been published"},
            )
            return
        params = dict(item.partition("=")[::2] for item in query.split("&") if item)
        order_id, line_id = unquote(params.get("orderId", "")), params.get("orderLineId")
        if not order_id or len(order_id) > 64:
            self._reply(400, {"resultCode": "MKT.0101", "resultMsg": "Invalid parameter"})
            return
        if order_id not in MOCK_ORDERS:
            self._reply(
                500, {"resultCode": "MKT.0100", "resultMsg": "Failure of input parameter: no such order"}
            )
            return
        info = mock_order(order_id)
        if line_id is not None:
            info["orderLine"] = [
                line for line in info["orderLine"] if line["orderLineId"] == unquote(line_id)
            ]
            if not info["orderLine"]:
                self._reply(
                    500,
                    {"resultCode": "MKT.0100", "resultMsg": "Failure of input parameter: no such order line"},
                )
                return
        self._reply(200, {"resultCode": self.server.success_code, "resultMsg": "Success", "orderInfo": info})


@contextmanager
def serving() -> Iterator[OrderApi]:
    """The order-query API serving in a thread for the block."""
    server = OrderApi()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
