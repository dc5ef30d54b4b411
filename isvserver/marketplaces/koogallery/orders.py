"""Client of the marketplace's order-query open API (spec §10): an AK/SK-signed GET, a typed answer."""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from isvserver.jobs import SafeError
from isvserver.marketplaces.koogallery.apig_signer import sign_request
from isvserver.settings import SettingsError, _raw

DEFAULT_API_URL = "https://mkt.myhuaweicloud.com"
QUERY_PATH = "/api/mkp-openapi-public/global/v1/order/query"
# The spec's generic success code, and the one the order-query documentation shows ("MKT.0000").
SUCCESS_CODES = frozenset({"000000", "MKT.0000"})
CREDENTIAL_VARS = ("ISV_MARKET_AK", "ISV_MARKET_SK")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_REPLY_BYTES = 1 << 20
MAX_ID_LENGTH = 64
MAX_MESSAGE_CHARS = 300

log = logging.getLogger(__name__)


class OrderQueryError(SafeError):
    """The order query failed; the message says why, never with the SK, a signature or buyer data."""

    def __init__(
        self,
        message: str,
        result_code: str | None = None,
        result_msg: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.result_msg = result_msg
        self.status = status


@dataclass(frozen=True)
class Product:
    """What an order line bought."""

    product_id: str | None
    sku_code: str | None
    product_name: str | None
    linear_value: int | None


@dataclass(frozen=True)
class OrderLine:
    """One line of an order: how it is charged, until when, and its products."""

    order_line_id: str
    charging_mode: str
    expire_time: datetime | None
    period_type: str | None
    period_number: int | None
    products: tuple[Product, ...]


@dataclass(frozen=True)
class Buyer:
    """Who ordered (personal data: its repr shows nothing, and nothing here is logged)."""

    customer_id: str | None
    customer_name: str | None
    user_id: str | None
    user_name: str | None

    def __repr__(self) -> str:
        return "Buyer(***)"


@dataclass(frozen=True)
class OrderInfo:
    """An order as the order-query API describes it."""

    order_id: str
    order_type: str
    create_time: datetime
    lines: tuple[OrderLine, ...]
    buyer: Buyer | None
    extend_params: tuple[tuple[str, str], ...]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the signed headers are for this host and path only."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Refuse; urllib then raises the 3xx as an HTTPError."""
        return None


def check_api_url(url: str) -> str:
    """The API's base URL without a trailing "/"; https, or http to this machine only (ValueError)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ValueError("must be an https:// URL")
    if parts.scheme == "http" and hostname not in LOOPBACK_HOSTS:
        raise ValueError("must be https:// (http:// only to 127.0.0.1, ::1 or localhost)")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError("must be scheme://host[:port][/path] without credentials, query or fragment")
    return url.rstrip("/")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:MAX_MESSAGE_CHARS]


def _field(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise OrderQueryError(f"invalid reply: {name} is not a string")
    return str(value)


def _required(data: Mapping[str, Any], name: str) -> str:
    value = _field(data, name)
    if value is None:
        raise OrderQueryError(f"invalid reply: {name} is missing")
    return value


def _number(data: Mapping[str, Any], name: str) -> int | None:
    value = _field(data, name)
    if value is None:
        return None
    if not value.isdigit():
        raise OrderQueryError(f"invalid reply: {name} is not a whole number")
    return int(value)


def _parse_time(value: str, name: str) -> datetime:
    """`yyyyMMddHHmmss` or `yyyyMMddHHmmssSSS`, UTC."""
    if value.isdigit() and len(value) in (14, 17):
        try:
            moment = datetime.strptime(value[:14], "%Y%m%d%H%M%S")
            return moment.replace(microsecond=int(value[14:] or 0) * 1000, tzinfo=UTC)
        except ValueError:
            pass
    raise OrderQueryError(f"invalid reply: {name} is not a yyyyMMddHHmmss[SSS] time")


def _time(data: Mapping[str, Any], name: str) -> datetime | None:
    value = _field(data, name)
    return None if value is None else _parse_time(value, name)


def _objects(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    value = data.get(name) or []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise OrderQueryError(f"invalid reply: {name} is not a list of objects")
    return value


def _line(data: Mapping[str, Any]) -> OrderLine:
    products = tuple(
        Product(
            product_id=_field(item, "productId"),
            sku_code=_field(item, "skuCode"),
            product_name=_field(item, "productName"),
            linear_value=_number(item, "linearValue"),
        )
        for item in _objects(data, "productInfo")
    )
    return OrderLine(
        order_line_id=_required(data, "orderLineId"),
        charging_mode=_required(data, "chargingMode"),
        expire_time=_time(data, "expireTime"),
        period_type=_field(data, "periodType"),
        period_number=_number(data, "periodNumber"),
        products=products,
    )


def parse_order_info(data: Any) -> OrderInfo:
    """The `orderInfo` object of a successful reply, typed; OrderQueryError when it is malformed."""
    if not isinstance(data, dict):
        raise OrderQueryError("invalid reply: orderInfo is missing or not an object")
    buyer_data = data.get("buyerInfo")
    if buyer_data is not None and not isinstance(buyer_data, dict):
        raise OrderQueryError("invalid reply: buyerInfo is not an object")
    buyer = None
    if buyer_data:
        buyer = Buyer(
            customer_id=_field(buyer_data, "customerId"),
            customer_name=_field(buyer_data, "customerName"),
            user_id=_field(buyer_data, "userId"),
            user_name=_field(buyer_data, "userName"),
        )
    params = []
    for item in _objects(data, "extendParams"):
        name = _field(item, "name") or _field(item, "key")
        if name is not None:
            params.append((name, _field(item, "value") or ""))
    lines = _objects(data, "orderLine")
    if not lines:
        raise OrderQueryError("invalid reply: orderLine is missing or empty")
    return OrderInfo(
        order_id=_required(data, "orderId"),
        order_type=_required(data, "orderType"),
        create_time=_parse_time(_required(data, "createTime"), "createTime"),
        lines=tuple(_line(item) for item in lines),
        buyer=buyer,
        extend_params=tuple(params),
    )


class OrderQueryClient:
    """Queries orders with the seller's API-Gateway AK/SK."""

    def __init__(
        self,
        api_url: str,
        ak: str,
        sk: str,
        timeout: float = 10.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api_url = check_api_url(api_url)
        self.host = urlsplit(self.api_url).netloc
        self._ak = ak
        self._sk = sk
        self.timeout = timeout
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"OrderQueryClient({self.api_url!r}, timeout={self.timeout:g})"

    def query(self, order_id: str, order_line_id: str | None = None) -> OrderInfo:
        """The order (only the given line when `order_line_id` is set); OrderQueryError on any failure."""
        params = {"orderId": order_id}
        if order_line_id is not None:
            params["orderLineId"] = order_line_id
        for name, value in params.items():
            if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
                raise ValueError(f"{name} must be 1 to {MAX_ID_LENGTH} printable characters")
        url = f"{self.api_url}{QUERY_PATH}?{urlencode(params, quote_via=quote)}"
        headers = {"Content-Type": "application/json;charset=UTF-8", "Accept": "application/json"}
        signed = sign_request("GET", url, headers, b"", self._ak, self._sk, self._clock())
        started = time.monotonic()
        status, body = self._send(urllib.request.Request(url, headers=signed, method="GET"))  # noqa: S310
        code = _one_line(body.get("resultCode") or body.get("error_code") or "no resultCode")
        message = _one_line(body.get("resultMsg") or body.get("error_msg") or "")
        elapsed = round((time.monotonic() - started) * 1000)
        if status != 200 or code not in SUCCESS_CODES:
            log.warning("order query %s failed: HTTP %s, %s in %d ms", order_id, status, code, elapsed)
            hint = " (check ISV_MARKET_AK, ISV_MARKET_SK and this machine's clock)" if status == 401 else ""
            raise OrderQueryError(
                f"order query for {order_id} failed: HTTP {status}, {code}: {message}{hint}",
                result_code=code,
                result_msg=message,
                status=status,
            )
        order = parse_order_info(body.get("orderInfo"))
        log.info("order query %s: %s, %d line(s) in %d ms", order_id, code, len(order.lines), elapsed)
        return order

    def _send(self, request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON object) of the reply; OrderQueryError when there is none."""
        try:
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    status, raw = response.status, response.read(MAX_REPLY_BYTES + 1)
            except urllib.error.HTTPError as error:
                with error:
                    status, raw = error.code, error.read(MAX_REPLY_BYTES + 1)
        except (OSError, http.client.HTTPException) as error:
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            if isinstance(reason, TimeoutError):
                reason = f"no answer within {self.timeout:g} s"
            log.warning("order query to %s failed: %s", self.host, _one_line(reason))
            raise OrderQueryError(f"order query to {self.host} failed: {_one_line(reason)}") from None
        try:
            body = json.loads(raw) if len(raw) <= MAX_REPLY_BYTES else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OrderQueryError(
                f"order query to {self.host} failed: HTTP {status}, the reply is not a JSON object",
                status=status,
            )
        return status, body


def missing_credentials(env: Mapping[str, str]) -> tuple[str, ...]:
    """Which of ISV_MARKET_AK and ISV_MARKET_SK (or their *_FILE) are not set."""
    return tuple(name for name in CREDENTIAL_VARS if not _raw(env, name))


def client_from_env(env: Mapping[str, str], timeout: float = 10.0) -> OrderQueryClient | None:
    """A client from ISV_MARKET_API_URL, ISV_MARKET_AK and ISV_MARKET_SK; None unless AK and SK are set."""
    try:
        api_url = check_api_url(_raw(env, "ISV_MARKET_API_URL") or DEFAULT_API_URL)
    except ValueError as exc:
        raise SettingsError(f"ISV_MARKET_API_URL {exc}") from None
    ak, sk = (_raw(env, name) for name in CREDENTIAL_VARS)
    if not ak or not sk:
        return None
    for name, value in zip(CREDENTIAL_VARS, (ak, sk), strict=True):
        if not value.isascii() or not value.isprintable() or " " in value:
            raise SettingsError(f"{name} must be printable ASCII without spaces")
    return OrderQueryClient(api_url, ak, sk, timeout=timeout)
