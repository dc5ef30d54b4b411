"""The V Cloud platform API (spec §1): providers, categories, services, templates and orders.

Every list is followed page by page (`current`, `pageSize`). Each request has a connect and a read
timeout; a network error or a 5xx is retried with exponential backoff (writes only when the request
never reached the platform: a POST it may have applied is not sent twice). Errors name the method,
the endpoint and the status, never the token or a body.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from isvserver.jobs import SafeError
from isvserver.marketplaces.vcloud.config import VCloudSettings

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
MAX_PAGES = 100_000  # a platform whose `total` keeps growing cannot keep a listing going forever

PROVIDERS = "/api/v1/service/provider"
CATEGORIES = "/api/v1/service/category"
SERVICES = "/api/v1/service/type"
TEMPLATES = "/api/v1/template/add"
ORDERS = "/api/v1/order"
ORDER = "/api/v1/order/id"


class PlatformError(SafeError):
    """A platform request failed: the message names the method, endpoint and status (no secret)."""

    def __init__(self, method: str, endpoint: str, status: int | None, reason: str) -> None:
        self.method, self.endpoint, self.status = method, endpoint, status
        what = f"HTTP {status}" if status is not None else reason
        detail = f" ({reason})" if status is not None and reason else ""
        super().__init__(f"V Cloud {method} {endpoint}: {what}{detail}")


@dataclass(frozen=True)
class Page:
    """One page of a listing: its items and the listing's total."""

    number: int
    items: list[dict[str, Any]]
    total: int
    page_size: int

    @property
    def last(self) -> bool:
        """Whether no page follows this one."""
        return not self.items or self.number * self.page_size >= self.total


def _network_reason(exc: HTTPError) -> str:
    """What went wrong on the wire, in a few words (the exception's text may hold the URL)."""
    if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError in urllib3 2
        return "connection refused or unreachable"
    if isinstance(exc, ConnectTimeoutError | urllib3.exceptions.ReadTimeoutError):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection broken"
    return type(exc).__name__


def _never_sent(exc: HTTPError) -> bool:
    """Whether the request cannot have reached the platform (safe to send a write again)."""
    return isinstance(exc, NewConnectionError | ConnectTimeoutError)


class PlatformClient:
    """The platform API of `settings`, with timeouts, retries and paging."""

    def __init__(
        self,
        settings: VCloudSettings,
        sleep: Callable[[float], None] = time.sleep,
        pool: urllib3.PoolManager | None = None,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self.pool = pool or urllib3.PoolManager(num_pools=2, maxsize=4)

    # --- the wire ----------------------------------------------------------------------------------

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "isvserver-vcloud"}
        if self.settings.api_token:
            headers["Authorization"] = f"Bearer {self.settings.api_token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _backoff(self, attempt: int) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
        self.sleep(delay * (0.5 + random.random() / 2))  # jitter, not a secret

    def request(
        self,
        method: str,
        endpoint: str,
        path: str | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        write: bool | None = None,
    ) -> Any:
        """The JSON the platform answers `method endpoint` (`path`: the endpoint with its id), or
        PlatformError; None for an empty 2xx body. A `write` (default: not a GET) is sent again only
        when it cannot have reached the platform."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
        url = f"{self.settings.api_url}{path or endpoint}" + (f"?{query}" if query else "")
        timeout = urllib3.Timeout(connect=min(5.0, self.settings.timeout_s), read=self.settings.timeout_s)
        writes = method != "GET" if write is None else write
        for attempt in range(self.settings.retries + 1):
            last = attempt == self.settings.retries
            try:
                response = self.pool.request(
                    method,
                    url,
                    body=body,
                    headers=self._headers(content_type),
                    timeout=timeout,
                    retries=False,
                    redirect=False,
                    preload_content=False,
                )
                try:
                    raw = response.read(MAX_RESPONSE_BYTES + 1)
                finally:
                    response.release_conn()
            except HTTPError as exc:
                if last or (writes and not _never_sent(exc)):
                    raise PlatformError(method, endpoint, None, _network_reason(exc)) from None
                self._backoff(attempt)
                continue
            if response.status >= 500 and not last and not writes:
                self._backoff(attempt)
                continue
            if response.status >= 300:
                raise PlatformError(method, endpoint, response.status, "")
            if len(raw) > MAX_RESPONSE_BYTES:
                raise PlatformError(method, endpoint, response.status, "the answer is too large")
            if not raw.strip():
                return None
            try:
                return json.loads(raw)
            except ValueError:
                raise PlatformError(method, endpoint, response.status, "the answer is not JSON") from None
        raise AssertionError("unreachable")  # pragma: no cover (the last attempt returns or raises)

    def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        return self.request("POST", endpoint, body=json.dumps(body).encode(), content_type="application/json")

    def _one(self, endpoint: str, item_id: str) -> dict[str, Any] | None:
        """GET endpoint/:id, or None when the platform answers 404."""
        try:
            found = self.request("GET", f"{endpoint}/:id", path=f"{endpoint}/{quote(item_id, safe='')}")
        except PlatformError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(found, dict):
            raise PlatformError("GET", f"{endpoint}/:id", 200, "the answer is not an object")
        return found

    # --- paging ------------------------------------------------------------------------------------

    def page(self, endpoint: str, number: int, params: Mapping[str, Any] | None = None) -> Page:
        """Page `number` (from 1) of a listing."""
        size = self.settings.page_size
        answer = self.request("GET", endpoint, params={**(params or {}), "current": number, "pageSize": size})
        items = answer.get("list") if isinstance(answer, dict) else None
        pagination = answer.get("pagination") if isinstance(answer, dict) else None
        total = pagination.get("total") if isinstance(pagination, dict) else None
        if (
            not isinstance(items, list)
            or not all(isinstance(item, dict) for item in items)
            or not isinstance(total, int)
            or isinstance(total, bool)
            or total < 0
        ):
            raise PlatformError("GET", endpoint, 200, "the answer is not a page (list, pagination.total)")
        return Page(number, items, total, size)

    def listing(self, endpoint: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a listing, page after page until the last."""
        for number in range(1, MAX_PAGES + 1):
            page = self.page(endpoint, number, params)
            yield from page.items
            if page.last:
                return

    # --- providers, categories, services, templates -------------------------------------------------

    def create_provider(self, body: dict[str, Any]) -> Any:
        """POST /api/v1/service/provider."""
        return self._post(PROVIDERS, body)

    def providers(self, **filters: Any) -> list[dict[str, Any]]:
        """GET /api/v1/service/provider (id, name, walletAddress), every page."""
        return list(self.listing(PROVIDERS, filters))

    def provider(self, provider_id: str) -> dict[str, Any] | None:
        """GET /api/v1/service/provider/:id (None: no such provider)."""
        return self._one(PROVIDERS, provider_id)

    def create_category(self, body: dict[str, Any]) -> Any:
        """POST /api/v1/service/category."""
        return self._post(CATEGORIES, body)

    def categories(self, **filters: Any) -> list[dict[str, Any]]:
        """GET /api/v1/service/category (ids, provider, name), every page."""
        return list(self.listing(CATEGORIES, filters))

    def category(self, category_id: str) -> dict[str, Any] | None:
        """GET /api/v1/service/category/:id (None: no such category)."""
        return self._one(CATEGORIES, category_id)

    def create_service(self, body: dict[str, Any]) -> Any:
        """POST /api/v1/service/type; the seed's printed path (service/category) only if that is a 404."""
        try:
            return self._post(SERVICES, body)
        except PlatformError as exc:
            if exc.status != 404:
                raise
        return self._post(CATEGORIES, body)

    def services(self, **filters: Any) -> list[dict[str, Any]]:
        """GET /api/v1/service/type (ids, provider, category, name, minPrice, maxPrice), every page."""
        return list(self.listing(SERVICES, filters))

    def upload_template(self, template: str) -> Any:
        """GET /api/v1/template/add with the YAML service template as its body."""
        return self.request(
            "GET", TEMPLATES, body=template.encode(), content_type="application/x-yaml", write=True
        )

    # --- orders --------------------------------------------------------------------------------------

    def orders_page(self, number: int, **filters: Any) -> Page:
        """Page `number` of GET /api/v1/order (recipient, startFrom, statuses[], …)."""
        return self.page(ORDERS, number, filters)

    def orders(self, **filters: Any) -> list[dict[str, Any]]:
        """GET /api/v1/order, every page."""
        return list(self.listing(ORDERS, filters))

    def order(self, order_id: str) -> dict[str, Any] | None:
        """GET /api/v1/order/id/:id (None: no such order)."""
        return self._one(ORDER, order_id)
