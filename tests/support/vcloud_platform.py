"""A local V Cloud platform (seed 002, spec vcloud.md §1) on 127.0.0.1, its state in a SQLite file.

It serves the documented endpoints with their paging (`current`, `pageSize` → `list` + `pagination`):
providers, categories, services, the template upload and orders. Writes need the provider's bearer
token (401 without it); names are unique as the seed says (409 for a second provider, category or
service of the same name). Orders are listed oldest `updatedAt` first, and `startFrom`/`endAt` filter
on `updatedAt` [decision]. The tests add and change orders through `add_order` / `update_order`, and
make it fail (`fail_next`) or hold a page (`hold_page`) to play an outage.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "vcloud-provider-token-0123456789"
WALLET = "ATxVCloudProviderWallet0000000001"
BUYER = "AU2BuyerWallet00000000000000001"
API_HOST = "https://isv.example.com"

SCHEMA = """
CREATE TABLE IF NOT EXISTS provider (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS category (id TEXT PRIMARY KEY, provider TEXT NOT NULL, name TEXT NOT NULL,
    body TEXT NOT NULL, UNIQUE (provider, name));
CREATE TABLE IF NOT EXISTS service (id TEXT PRIMARY KEY, category_id TEXT NOT NULL, name TEXT NOT NULL,
    body TEXT NOT NULL, UNIQUE (category_id, name));
CREATE TABLE IF NOT EXISTS template (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, updated_at INTEGER NOT NULL, seq INTEGER NOT NULL,
    body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS request (id INTEGER PRIMARY KEY AUTOINCREMENT, method TEXT, path TEXT,
    query TEXT, status INTEGER, authorization TEXT, started REAL, ended REAL, in_flight INTEGER);
CREATE TABLE IF NOT EXISTS knob (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class VCloudPlatform(ThreadingHTTPServer):
    """The platform on a free loopback port, its state in `path`."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.path = path
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.executescript(SCHEMA)
        self.in_flight = 0
        self.held = 0  # order-listing requests waiting at the held page now
        self.max_in_flight_orders = 0
        self.released = threading.Event()
        self._thread: threading.Thread | None = None

    # --- running ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The platform's base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> VCloudPlatform:
        self._thread = threading.Thread(target=self.serve_forever, name="vcloud-platform", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()
        self.db.close()

    # --- state -------------------------------------------------------------------------------------

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql` on the platform's database."""
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def knob(self, name: str) -> str | None:
        rows = self.query("SELECT value FROM knob WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_knob(self, name: str, value: str | None) -> None:
        with self.lock:
            if value is None:
                self.db.execute("DELETE FROM knob WHERE name = ?", (name,))
            else:
                self.db.execute("INSERT OR REPLACE INTO knob (name, value) VALUES (?, ?)", (name, value))

    def fail_next(
        self, count: int, status: int = 503, path_prefix: str = "/api/v1/order", raw: str | None = None
    ) -> None:
        """Answer the next `count` requests under `path_prefix` with `status` (0: close the connection),
        and `raw` as the body if given."""
        knob = {"count": count, "status": status, "prefix": path_prefix, "raw": raw}
        self.set_knob("fail", json.dumps(knob))

    def hold_page(self, page: int | None) -> None:
        """Hold order-listing requests for page `page` until `release_hold` (None: hold nothing)."""
        self.released.clear()
        self.set_knob("hold_page", None if page is None else str(page))

    def release_hold(self) -> None:
        self.set_knob("hold_page", None)
        self.released.set()

    def add_order(self, **fields: Any) -> dict[str, Any]:
        """A new order of the provider's wallet (defaults: paid, running, one hour)."""
        now = int(time.time())
        order = {
            "createdAt": now,
            "updatedAt": now,
            "duration": 1,
            "serviceExpiredDate": 0,
            "amount": 9.5,
            "amountPaid": 9.5,
            "serviceID": "svc-1",
            "service": "Team Notes",
            "serviceCategoryID": "cat-1",
            "provider": "acme-notes",
            "address": BUYER,
            "recipient": WALLET,
            "id": str(uuid.uuid4()),
            "serviceOptions": {"plan": "starter"},
            "status": "OrderPaid",
            "lastPaymentTS": now,
            "PaidTS": now,
            "FiledTS": 0,
            "completeTS": 0,
            "refundTS": 0,
            "publicKey": "",
            "serviceActivated": True,
            "serviceActivateTS": now,
            "endAt": now + 3600,
            "serviceStatus": "ServiceRunning",
            "serviceRunningTS": now,
            "serviceAbortTS": 0,
            "serviceDoneTS": 0,
            "magic": "",
        }
        order.update(fields)
        with self.lock:
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM orders").fetchone()[0]
            self.db.execute(
                "INSERT INTO orders (id, updated_at, seq, body) VALUES (?, ?, ?, ?)",
                (order["id"], order["updatedAt"], seq, json.dumps(order)),
            )
        return order

    def update_order(self, order_id: str, **fields: Any) -> dict[str, Any]:
        """Change an order as the platform does (its updatedAt moves to now unless given)."""
        with self.lock:
            (body,) = self.db.execute("SELECT body FROM orders WHERE id = ?", (order_id,)).fetchone()
            order = {**json.loads(body), "updatedAt": int(time.time()), **fields}
            seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM orders").fetchone()[0]
            self.db.execute(
                "UPDATE orders SET body = ?, updated_at = ?, seq = ? WHERE id = ?",
                (json.dumps(order), order["updatedAt"], seq, order_id),
            )
        return order

    def bodies(self, table: str) -> list[dict[str, Any]]:
        """Every stored item of `table` (provider, category, service, template)."""
        return [json.loads(body) for (body,) in self.query(f"SELECT body FROM {table} ORDER BY rowid")]  # noqa: S608

    def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        """The requests received (method, path, query, status, authorization, in_flight)."""
        names = ("method", "path", "query", "status", "authorization", "started", "ended", "in_flight")
        rows = self.query(
            f"SELECT {', '.join(names)} FROM request WHERE path LIKE ? ORDER BY id",  # noqa: S608
            (path_prefix + "%",),
        )
        return [dict(zip(names, row, strict=True)) for row in rows]


def _page(items: list[dict[str, Any]], query: dict[str, list[str]]) -> dict[str, Any]:
    current = max(1, int((query.get("current") or ["1"])[0]))
    size = max(1, int((query.get("pageSize") or ["10"])[0]))
    chosen = items[(current - 1) * size : current * size]
    return {"list": chosen, "pagination": {"total": len(items), "current": current, "pageSize": size}}


def _matches(item: dict[str, Any], query: dict[str, list[str]], fields: dict[str, str]) -> bool:
    return all(str(item.get(field)) == query[name][0] for name, field in fields.items() if name in query)


class _Handler(BaseHTTPRequestHandler):
    server: VCloudPlatform

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    # --- plumbing ----------------------------------------------------------------------------------

    def _reply(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        self._status = status

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, raw: bytes) -> dict[str, Any] | None:
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    @contextmanager
    def _recorded(self, path: str, query: str) -> Iterator[None]:
        """Log the request (before it is answered: a client may look right after the answer), count it
        while it runs."""
        platform = self.server
        orders = path == "/api/v1/order"
        with platform.lock:
            platform.in_flight += orders
            if orders:
                platform.max_in_flight_orders = max(platform.max_in_flight_orders, platform.in_flight)
            row = platform.db.execute(
                "INSERT INTO request (method, path, query, authorization, started, in_flight) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.command,
                    path,
                    query,
                    self.headers.get("Authorization"),
                    time.time(),
                    platform.in_flight,
                ),
            ).lastrowid
        self._status = 0
        try:
            yield
        finally:
            with platform.lock:
                platform.in_flight -= orders
                platform.db.execute(
                    "UPDATE request SET status = ?, ended = ? WHERE id = ?", (self._status, time.time(), row)
                )

    def _failing(self, path: str) -> bool:
        """Whether this request is one the test asked to fail (and fail it)."""
        raw = self.server.knob("fail")
        if raw is None:
            return False
        fail = json.loads(raw)
        if fail["count"] <= 0 or not path.startswith(fail["prefix"]):
            return False
        fail["count"] -= 1
        self.server.set_knob("fail", json.dumps(fail))
        if fail["status"] == 0:
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        if fail.get("raw") is not None:
            body = fail["raw"].encode()
            self.send_response(fail["status"])
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self._status = fail["status"]
            return True
        self._reply(fail["status"], {"error": "platform unavailable"})
        return True

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self._recorded(path, parts.query):
            body = self._body()
            if self._failing(path):
                return
            if method == "POST" and not self._authorized():
                self._reply(401, {"error": "the provider's token is missing or wrong"})
                return
            route = getattr(self, f"_{method.lower()}_{path.strip('/').replace('/', '_')}", None)
            if route is not None:
                route(query, body)
                return
            for prefix in ("/api/v1/service/provider/", "/api/v1/service/category/", "/api/v1/order/id/"):
                if method == "GET" and path.startswith(prefix) and len(path) > len(prefix):
                    self._one(prefix, path[len(prefix) :])
                    return
            self._reply(404, {"error": "not found"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- providers, categories, services -----------------------------------------------------------

    def _one(self, prefix: str, item_id: str) -> None:
        table, key = {
            "/api/v1/service/provider/": ("provider", "id"),
            "/api/v1/service/category/": ("category", "id"),
            "/api/v1/order/id/": ("orders", "id"),
        }[prefix]
        rows = self.server.query(f"SELECT body FROM {table} WHERE {key} = ?", (item_id,))  # noqa: S608
        if not rows:
            self._reply(404, {"error": "not found"})
            return
        self._reply(200, json.loads(rows[0][0]))

    def _post_api_v1_service_provider(self, query: dict[str, list[str]], raw: bytes) -> None:
        body = self._json(raw)
        required = ("name", "id", "walletAddress", "apiHost")
        if body is None or not all(isinstance(body.get(n), str) and body[n] for n in required):
            self._reply(400, {"error": "name, id, walletAddress and apiHost are required"})
            return
        if body["id"] != body["name"]:
            self._reply(400, {"error": "id must be the provider's name"})
            return
        item = {**body, "signAddress": body["walletAddress"], "category2ID": body.get("category2ID") or {}}
        try:
            with self.server.lock:
                self.server.db.execute(
                    "INSERT INTO provider (id, body) VALUES (?, ?)", (body["id"], json.dumps(item))
                )
        except sqlite3.IntegrityError:
            self._reply(409, {"error": "a provider of this name exists"})
            return
        self._reply(200, item)

    def _get_api_v1_service_provider(self, query: dict[str, list[str]], raw: bytes) -> None:
        fields = {"id": "id", "name": "name", "walletAddress": "walletAddress"}
        items = [p for p in self.server.bodies("provider") if _matches(p, query, fields)]
        self._reply(200, _page(items, query))

    def _post_api_v1_service_category(self, query: dict[str, list[str]], raw: bytes) -> None:
        body = self._json(raw)
        if body is not None and "durationToPrice" in body:  # the seed's printed path for a service
            self._post_api_v1_service_type(query, raw)
            return
        if body is None or not all(isinstance(body.get(n), str) and body[n] for n in ("provider", "name")):
            self._reply(400, {"error": "provider and name are required"})
            return
        providers = self.server.query("SELECT body FROM provider WHERE id = ?", (body["provider"],))
        if not providers:
            self._reply(400, {"error": "no such provider"})
            return
        item = {
            "categoryID": str(uuid.uuid4()),
            "provider": body["provider"],
            "name": body["name"],
            "serviceOptions": body.get("serviceOptions") or {},
            "description": body.get("description", ""),
            "name2ID": {},
            "apiHost": body.get("apiHost", ""),
        }
        try:
            with self.server.lock:
                self.server.db.execute(
                    "INSERT INTO category (id, provider, name, body) VALUES (?, ?, ?, ?)",
                    (item["categoryID"], item["provider"], item["name"], json.dumps(item)),
                )
                provider = json.loads(providers[0][0])
                provider["category2ID"][item["name"]] = item["categoryID"]
                self.server.db.execute(
                    "UPDATE provider SET body = ? WHERE id = ?", (json.dumps(provider), provider["id"])
                )
        except sqlite3.IntegrityError:
            self._reply(409, {"error": "a category of this name exists for the provider"})
            return
        self._reply(200, item)

    def _get_api_v1_service_category(self, query: dict[str, list[str]], raw: bytes) -> None:
        ids = set(query.get("ids", []) + query.get("ids[]", []))
        items = [
            c
            for c in self.server.bodies("category")
            if _matches(c, query, {"provider": "provider", "name": "name"})
            and (not ids or c["categoryID"] in ids)
        ]
        self._reply(200, _page(items, query))

    def _post_api_v1_service_type(self, query: dict[str, list[str]], raw: bytes) -> None:
        body = self._json(raw)
        required = ("name", "provider", "categoryID", "category")
        if (
            body is None
            or not all(isinstance(body.get(n), str) and body[n] for n in required)
            or not isinstance(body.get("durationToPrice"), list)
            or not isinstance(body.get("refundable"), bool)
        ):
            self._reply(
                400, {"error": "name, durationToPrice, provider, refundable, categoryID, category required"}
            )
            return
        categories = self.server.query("SELECT body FROM category WHERE id = ?", (body["categoryID"],))
        if not categories:
            self._reply(400, {"error": "no such category"})
            return
        item = {
            "id": str(uuid.uuid4()),
            "serviceOptions": {},
            "serviceAPI": {"start": "", "stop": "", "refund": "", "normal": {}, "secret": {}},
            "description": "",
            "apiHost": "",
            **body,
        }
        item["serviceAPI"] = {
            "start": "",
            "stop": "",
            "refund": "",
            "normal": {},
            "secret": {},
            **(body.get("serviceAPI") or {}),
        }
        try:
            with self.server.lock:
                self.server.db.execute(
                    "INSERT INTO service (id, category_id, name, body) VALUES (?, ?, ?, ?)",
                    (item["id"], item["categoryID"], item["name"], json.dumps(item)),
                )
                category = json.loads(categories[0][0])
                category["name2ID"][item["name"]] = item["id"]
                self.server.db.execute(
                    "UPDATE category SET body = ? WHERE id = ?",
                    (json.dumps(category), category["categoryID"]),
                )
        except sqlite3.IntegrityError:
            self._reply(409, {"error": "a service of this name exists in the category"})
            return
        self._reply(200, item)

    def _get_api_v1_service_type(self, query: dict[str, list[str]], raw: bytes) -> None:
        ids = set(query.get("ids", []) + query.get("ids[]", []))
        fields = {"provider": "provider", "category": "category", "name": "name"}
        items = []
        for service in self.server.bodies("service"):
            price = min((p.get("price", 0) for p in service["durationToPrice"]), default=0)
            if not _matches(service, query, fields) or (ids and service["id"] not in ids):
                continue
            if "minPrice" in query and price < float(query["minPrice"][0]):
                continue
            if "maxPrice" in query and price > float(query["maxPrice"][0]):
                continue
            items.append(service)
        self._reply(200, _page(items, query))

    def _get_api_v1_template_add(self, query: dict[str, list[str]], raw: bytes) -> None:
        if not self._authorized():
            self._reply(401, {"error": "the provider's token is missing or wrong"})
            return
        if not raw.strip():
            self._reply(400, {"error": "the body must hold a YAML service template"})
            return
        with self.server.lock:
            self.server.db.execute(
                "INSERT INTO template (body) VALUES (?)", (raw.decode("utf-8", "replace"),)
            )
        self._reply(200, {"received": True})

    # --- orders --------------------------------------------------------------------------------------

    def _get_api_v1_order(self, query: dict[str, list[str]], raw: bytes) -> None:
        page = (query.get("current") or ["1"])[0]
        if self.server.knob("hold_page") == page:
            with self.server.lock:
                self.server.held += 1
            try:
                self.server.released.wait(60)
            finally:
                with self.server.lock:
                    self.server.held -= 1
        rows = self.server.query("SELECT body FROM orders ORDER BY updated_at, seq")
        fields = {
            "id": "id",
            "serviceID": "serviceID",
            "service": "service",
            "address": "address",
            "recipient": "recipient",
        }
        statuses = set(query.get("statuses[]", []))
        service_statuses = set(query.get("serviceStatuses[]", []))
        items = []
        for (body,) in rows:
            order = json.loads(body)
            if not _matches(order, query, fields):
                continue
            if "startFrom" in query and order["updatedAt"] < int(query["startFrom"][0]):
                continue
            if "endAt" in query and order["updatedAt"] > int(query["endAt"][0]):
                continue
            if statuses and order["status"] not in statuses:
                continue
            if service_statuses and order["serviceStatus"] not in service_statuses:
                continue
            items.append(order)
        self._reply(200, _page(items, query))


def vcloud_env(platform: VCloudPlatform, **extra: str) -> dict[str, str]:
    """The V Cloud settings for `platform`."""
    return {
        "ISV_MARKETPLACES": "koogallery,vcloud",
        "ISV_VCLOUD_API_URL": platform.url,
        "ISV_VCLOUD_WALLET": WALLET,
        "ISV_VCLOUD_API_TOKEN": TOKEN,
        "ISV_VCLOUD_API_HOST": API_HOST,
        "ISV_VCLOUD_PAGE_SIZE": "2",
        "ISV_VCLOUD_RETRIES": "1",
        "ISV_VCLOUD_TIMEOUT_S": "5",
        **extra,
    }


def run_cli(env: dict[str, str], *args: str):
    """`isvserver ARGS` in-process with exactly `env` as its ISV_* settings; the test binding is kept."""
    from isvserver.cli import main

    from support.cli import invoke_cli

    return invoke_cli(env, main, *args)
