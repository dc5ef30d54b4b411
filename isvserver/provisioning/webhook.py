"""The webhook provisioner: every lifecycle change is POSTed to the product as a Standard Webhooks event.

One call makes one attempt; the job runner retries a raised WebhookError with backoff and delivers the
events of one instance in order. Each request is a POST to ISV_WEBHOOK_URL with
`Content-Type: application/json`, `User-Agent: isvserver` and the Standard Webhooks headers
`webhook-id` (the event id, the same on every retry: deduplicate on it), `webhook-timestamp` (UNIX
seconds of the attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` with ISV_WEBHOOK_SECRET, as
the `standardwebhooks` libraries verify it). The body is compact JSON (non-ASCII as \\uXXXX escapes):

    {"type": "instance.created",          # or .renewed .frozen .unfrozen .upgraded .released
     "timestamp": "2025-01-31T08:00:00.000Z",   # when the change was accepted (UTC)
     "data": {
       "instance": {"instanceId": "…", "marketplace": "…", "orderId": "…", "orderLineId": "…",
                    "productId": "…" | null, "expireAt": "2026-01-31T08:00:00.000Z" | null,
                    "isTrial": false, "state": "provisioning"},
       "change": {…the change: kind, scene, expire_at…; datetimes as ISO-8601 UTC with "Z"},
       "order": {…the order line from the order-query API…} | null}}

Adapters add event types of their own, POSTed the same way with what their enricher added as further
keys of `data`. The Kit sync (koogallery_kit) sends, once per accepted change (a repeat sends nothing;
a sync for an instance not created yet is sent after its instance.created), `data.order` being null:

    {"type": "tenant.synced" | "application.synced" | "users.synced" | "orgs.synced",
     "timestamp": "…",
     "data": {
       "instance": {…as above…},
       "change": {"kind": "kit_tenant" | "kit_application" | "kit_users" | "kit_orgs",
                  "activity": "tenantSync" | "applicationSync" | "authSync" | "singleOrgSync" | "allOrgSync",
                  "flag": 0 | 1 | 2 | 3,              # 0 delete, 1 add, 2 modify, 3 revoke (users); absent
                                                      # for allOrgSync
                  "tenant_id": "…", "app_id": "…",     # app_id for application and users
                  "user_names": ["…"], "org_codes": ["…"], "count": 2},   # users / singleOrgSync, count
       "order": null,
       "sync": {"kind": "tenant" | "application" | "users" | "org" | "orgs", "instanceId": "…",
                "tenantId": "…",
                # tenant:      "orderId", "tenantCode", "name", "domainName", "deleted"
                # application: "appId", "clientId", "clientSecret" (only with ISV_WEBHOOK_SEND_SECRETS=1),
                #              "deleted"
                # users:       "appId", "users": [{"userName", "name", "orgCode", "position",
                #              "employeeCode", "employeeType", "role", "enabled", "mobile", "email",
                #              "workPlace", "revoked", "deleted"}]  (the users of this change)
                # org, orgs:   "orgs": [{"orgCode", "orgName", "parentCode", "deleted"}]  (org: the one
                #              changed; orgs: the whole tree)
               } | null}}                             # null when the record cannot be found any more

`data.sync` is read when the event is delivered (the current state of the record) and holds buyers'
names, mobiles and emails in clear: it goes only to the product, signed; the stored event keeps ids.

The product answers instance.created with HTTP 200 and
`{"appInfo": {"frontEndUrl": "…", "adminUrl": "…", "userName": "…", "password": "…", "memo": "…"}}`
(frontEndUrl required, the others optional, strings only, within the marketplace's lengths), the same
appInfo again when the same instance is created twice. Every other event succeeds with any 2xx.
Anything else — another status, a redirect (never followed), a reply that is not such JSON or is larger
than 64 KiB, a timeout, a refused connection — raises WebhookError, whose one-line message names the
problem and never the secret, the signature or any value of the reply.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent, ProvisioningError
from isvserver.settings import check_webhook_url, redacted_url, webhook_key

MAX_REPLY_BYTES = 64 * 1024
USER_AGENT = "isvserver"
APP_INFO_FIELDS = {
    "frontEndUrl": "front_end_url",
    "adminUrl": "admin_url",
    "userName": "user_name",
    "password": "password",
    "memo": "memo",
}


class WebhookError(ProvisioningError):
    """One delivery failed; `status` is the product's HTTP status when it answered one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.status = status


def iso_utc(moment: datetime | None) -> str | None:
    """`moment` as ISO-8601 UTC with milliseconds and "Z" (a naive datetime is taken as UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def _jsonable(value: Any) -> Any:
    """`value` with datetimes as ISO-8601 UTC strings and dates as ISO dates, recursively."""
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def instance_payload(instance: InstanceView) -> dict[str, Any]:
    """The `data.instance` object of every event."""
    return {
        "instanceId": instance.instance_id,
        "marketplace": instance.marketplace,
        "orderId": instance.order_id,
        "orderLineId": instance.order_line_id,
        "productId": instance.product_id,
        "expireAt": iso_utc(instance.expire_at),
        "isTrial": instance.is_trial,
        "state": instance.state,
    }


def event_payload(event: LifecycleEvent) -> dict[str, Any]:
    """The JSON body POSTed for `event` (the shape is in this module's docstring)."""
    return {
        "type": event.type,
        "timestamp": iso_utc(event.occurred_at),
        "data": {
            **{str(name): _jsonable(value) for name, value in event.extra.items()},  # never over these:
            "instance": instance_payload(event.instance),
            "change": _jsonable(dict(event.change)),
            "order": _jsonable(event.order) if event.order is not None else None,
        },
    }


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an HTTPError with the 3xx status."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _reason(exc: BaseException) -> str:
    """A short, value-free description of a network failure."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _app_info(body: bytes) -> AppInfo:
    """The AppInfo in a reply to instance.created, or WebhookError naming what is wrong (no values)."""
    try:
        reply = json.loads(body)
    except ValueError:
        raise WebhookError("the product's reply to instance.created is not JSON", 200) from None
    app_info = reply.get("appInfo") if isinstance(reply, dict) else None
    if not isinstance(app_info, dict):
        raise WebhookError("the product's reply to instance.created has no appInfo object", 200)
    fields: dict[str, str] = {}
    for name, attribute in APP_INFO_FIELDS.items():
        value = app_info.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise WebhookError(f"the product's appInfo.{name} is not a string", 200)
        fields[attribute] = value
    if "front_end_url" not in fields:
        raise WebhookError("the product's appInfo has no frontEndUrl", 200)
    info = AppInfo(**fields)
    try:
        info.check()
    except ProvisioningError as exc:
        raise WebhookError(str(exc), 200) from None
    return info


class WebhookProvisioner:
    """Sends every lifecycle event to the product's webhook; runs in the job consumer, one attempt a call."""

    inline = False

    def __init__(self, url: str, secret: str, timeout_s: float = 10.0) -> None:
        check_webhook_url(url)
        key = webhook_key(secret)
        self._webhook = Webhook(key)
        self.url = url
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"WebhookProvisioner(url={redacted_url(self.url)!r}, timeout_s={self.timeout_s!r})"

    def _send(self, event: LifecycleEvent) -> tuple[int, bytes]:
        """POST the event once; the 2xx status and at most 64 KiB + 1 byte of the reply, or WebhookError."""
        body = json.dumps(event_payload(event), separators=(",", ":"))
        now = int(time.time())
        signature = self._webhook.sign(event.id, datetime.fromtimestamp(now, UTC), body)
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.url,
            data=body.encode("utf-8"),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "webhook-id": event.id,
                "webhook-timestamp": str(now),
                "webhook-signature": signature,
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status = response.status
                reply = response.read(MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            kind = "a redirect (not followed)" if 300 <= exc.code < 400 else f"HTTP {exc.code}"
            raise WebhookError(f"the product answered {event.type} with {kind}", exc.code) from None
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, BaseException) else None
            problem = _reason(reason) if reason is not None else "unreachable"
            raise WebhookError(f"delivering {event.type} to the product failed: {problem}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise WebhookError(f"delivering {event.type} to the product failed: {_reason(exc)}") from None
        return status, reply

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """POST instance.created; the product's 200 {"appInfo": {...}} as AppInfo, else WebhookError."""
        status, reply = self._send(event)
        if status != 200:
            raise WebhookError(f"the product answered {event.type} with HTTP {status}, not 200", status)
        if len(reply) > MAX_REPLY_BYTES:
            raise WebhookError(f"the product's reply to {event.type} is larger than 64 KiB", status)
        return _app_info(reply)

    def apply(self, event: LifecycleEvent) -> None:
        """POST the event; any 2xx is success, anything else raises WebhookError."""
        self._send(event)

    def sync(self, event: LifecycleEvent) -> None:
        """POST an adapter's own event (tenant.synced…) like any other: the product hears every type."""
        self._send(event)

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """Always None: the product is not asked synchronously, it hears the change as instance.renewed."""
        return None
