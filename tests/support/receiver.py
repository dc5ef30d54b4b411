"""A seller's product for tests: a real HTTP webhook receiver on loopback that checks every signature.

It verifies each request with the `standardwebhooks` library (not isvserver's code), answers 401 to a
bad signature, keeps one tenant per instanceId (a repeated instance.created gets the same appInfo) and
lets tests make it slow, fail, redirect or hold a request until they release it.

    with WebhookReceiver() as receiver:
        env = base_env(tmp_path, database_url, **receiver.settings(ISV_WEBHOOK_TIMEOUT_S="2"))
        ...  # make isvserver send an event
        assert receiver.wait_for(lambda: len(receiver.events) == 1)
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

from standardwebhooks.webhooks import Webhook

HOLD_LIMIT_S = 30.0  # a held request is answered 503 after this long, so no thread hangs forever
STATES = {"instance.frozen": "frozen", "instance.unfrozen": "active", "instance.released": "released"}


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class WebhookReceiver:
    """The product's webhook endpoint on 127.0.0.1 (any path); a context manager."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or new_secret()
        self._webhook = Webhook(self.secret)
        self._lock = threading.Condition(threading.RLock())
        self._gate = threading.Event()
        self._gate.set()
        self._closing = threading.Event()
        self._answers: list[_Answer] = []
        self._delay_s = 0.0
        self.requests: list[dict[str, Any]] = []  # every request: webhook_id, type, path, headers, status
        self.events: list[dict[str, Any]] = []  # accepted events in arrival order
        self.rejected: list[dict[str, Any]] = []  # requests whose signature did not verify
        self.tenants: dict[str, dict[str, Any]] = {}  # by instanceId
        self.held = 0  # requests waiting at the gate now
        self.errors: list[str] = []  # exceptions inside the server (a broken pipe after a client timeout)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.handle_error = self._handle_error  # type: ignore[method-assign]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/webhooks/isv"

    def settings(self, **extra: str) -> dict[str, str]:
        """isvserver's settings for the webhook provisioner sending to this receiver (and `extra`)."""
        return {
            "ISV_PROVISIONER": "webhook",
            "ISV_WEBHOOK_URL": self.url,
            "ISV_WEBHOOK_SECRET": self.secret,
            **extra,
        }

    # --- knobs -------------------------------------------------------------------------------------

    @property
    def delay_s(self) -> float:
        """Seconds every request waits before it is answered (0: none)."""
        with self._lock:
            return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        with self._lock:
            self._delay_s = value

    def answer_next(
        self, n: int, status: int, body: bytes | str = b"{}", headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next `n` verified requests with this status and body instead of processing them."""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        with self._lock:
            self._answers.extend(_Answer(status, raw, dict(headers or {})) for _ in range(n))

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next `n` verified requests with `status` (nothing is processed)."""
        self.answer_next(n, status, json.dumps({"error": "unavailable"}))

    def redirect_next(self, n: int, location: str = "/elsewhere", status: int = 302) -> None:
        """Answer the next `n` verified requests with a redirect to `location` (on this receiver)."""
        self.answer_next(n, status, b"", {"Location": location})

    def hold(self) -> None:
        """Make every request wait (after verification, before processing) until release_hold()."""
        self._gate.clear()

    def release_hold(self) -> None:
        """Let the held requests and all later ones through."""
        self._gate.set()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> bool:
        """Wait until `predicate()` is true (checked after every request); False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
            return True

    def tenant(self, instance_id: str) -> dict[str, Any]:
        """A copy of the tenant of `instance_id` (KeyError when there is none)."""
        with self._lock:
            return dict(self.tenants[instance_id])

    def event_types(self, instance_id: str | None = None) -> list[str]:
        """The types of the accepted events, in arrival order (of one instance, if given)."""
        with self._lock:
            return [e["type"] for e in self.events if instance_id is None or e["instance_id"] == instance_id]

    # --- life --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving; held and delayed requests are dropped unanswered."""
        self._closing.set()
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WebhookReceiver(url={self.url!r}, events={len(self.events)}, tenants={len(self.tenants)})"

    # --- serving -----------------------------------------------------------------------------------

    def _handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        with self._lock:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _record(self, **entry: Any) -> None:
        with self._lock:
            self.requests.append(entry)
            self._lock.notify_all()

    def _process(self, payload: dict[str, Any], webhook_id: str) -> tuple[int, dict[str, Any]]:
        """What the product does with a verified event: (status, JSON reply)."""
        kind = payload.get("type")
        data = payload.get("data") or {}
        instance = data.get("instance") or {}
        instance_id = instance.get("instanceId")
        if not isinstance(kind, str) or not isinstance(instance_id, str):
            return 400, {"error": "type or data.instance.instanceId missing"}
        with self._lock:
            self.events.append(
                {"webhook_id": webhook_id, "type": kind, "instance_id": instance_id, "payload": payload}
            )
            tenant = self.tenants.get(instance_id)
            if kind == "instance.created":
                if tenant is None:
                    base = f"https://product.example/t/{quote(instance_id, safe='')}"
                    tenant = {
                        "instanceId": instance_id,
                        "frontEndUrl": base,
                        "adminUrl": base + "/admin",
                        "userName": "admin_" + secrets.token_hex(4),
                        "password": "Pw-" + secrets.token_urlsafe(12),
                        "state": "active",
                        "expireAt": instance.get("expireAt"),
                        "history": [],
                    }
                    self.tenants[instance_id] = tenant
                tenant["history"].append(kind)
                app_info = {k: tenant[k] for k in ("frontEndUrl", "adminUrl", "userName", "password")}
                self._lock.notify_all()
                return 200, {"appInfo": app_info}
            if tenant is not None:
                tenant["history"].append(kind)
                tenant["state"] = STATES.get(kind, tenant["state"])
                tenant["expireAt"] = instance.get("expireAt", tenant["expireAt"])
            self._lock.notify_all()
            return 200, {}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                entry: dict[str, Any] = {
                    "webhook_id": headers.get("webhook-id"),
                    "path": self.path,
                    "headers": headers,
                    "body": body,
                }
                try:
                    receiver._webhook.verify(body, headers, json_parse=False)
                except Exception as exc:
                    with receiver._lock:
                        receiver.rejected.append({"webhook_id": entry["webhook_id"], "reason": str(exc)})
                    receiver._record(**entry, type=None, status=401)
                    self._reply(401, b'{"error": "bad signature"}')
                    return
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
                entry["type"] = payload.get("type") if isinstance(payload, dict) else None
                with receiver._lock:
                    receiver.held += 1
                    receiver._lock.notify_all()
                released = receiver._gate.wait(HOLD_LIMIT_S)
                with receiver._lock:
                    receiver.held -= 1
                    delay = receiver._delay_s
                    answer = receiver._answers.pop(0) if receiver._answers else None
                if not released:
                    receiver._record(**entry, status=503)
                    self._reply(503, b'{"error": "held too long"}')
                    return
                if delay and receiver._closing.wait(delay):
                    return
                if receiver._closing.is_set():
                    return
                if answer is not None:
                    receiver._record(**entry, status=answer.status)
                    self._reply(answer.status, answer.body, answer.headers)
                    return
                if not isinstance(payload, dict):
                    receiver._record(**entry, status=400)
                    self._reply(400, b'{"error": "not a JSON object"}')
                    return
                status, reply = receiver._process(payload, entry["webhook_id"])
                receiver._record(**entry, status=status)
                self._reply(status, json.dumps(reply).encode("utf-8"))

        return Handler
