"""The Kit sync endpoints in the core call pipeline: V2 at `{ISV_PRODUCE_PATH}/produceAPI/v2/<activity>`
(x-sign headers), V1 at `{ISV_PRODUCE_PATH}/produceAPI/<activity>` (authToken header, v1.py): one store,
the same events and idempotency."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Request, Response
from marshmallow import ValidationError

from isvserver import calls
from isvserver.body_sign import body_sign
from isvserver.calllog import CallRecord
from isvserver.calls import Handling, Outcome, Verification
from isvserver.marketplaces.koogallery_kit import events, store
from isvserver.marketplaces.koogallery_kit.client_secret import ClientSecretError, decrypt_client_secret
from isvserver.marketplaces.koogallery_kit.config import KIT
from isvserver.marketplaces.koogallery_kit.results import (
    AUTH_FAILED,
    CLIENT_SECRET_UNREADABLE,
    INTERNAL_ERROR,
    INVALID_PARAMETERS,
    SUCCESS,
)
from isvserver.marketplaces.koogallery_kit.schemas import REQUESTS, describe
from isvserver.marketplaces.koogallery_kit.signing import verify
from isvserver.runtime import Runtime, runtime

INTERFACE = "koogallery.kit"
CODES = {
    Outcome.SUCCESS: SUCCESS,
    Outcome.IN_PROGRESS: INTERNAL_ERROR,  # no Kit call is answered asynchronously
    Outcome.AUTH_FAILED: AUTH_FAILED,
    Outcome.INVALID: INVALID_PARAMETERS,
    Outcome.NOT_FOUND: INVALID_PARAMETERS,
    Outcome.INTERNAL: INTERNAL_ERROR,
    Outcome.CONFLICT: INVALID_PARAMETERS,
    Outcome.GONE: INVALID_PARAMETERS,
}
DELETE = 0

log = logging.getLogger("isvserver.koogallery_kit")
bp = Blueprint("koogallery_kit", __name__)
Reply = dict[str, Any]


def reply(code: str, message: str) -> Reply:
    """A Kit reply body: resultCode and resultMsg."""
    return {"resultCode": code, "resultMsg": message[:255]}


def signed_response(answer: Reply, key: str, status: int = 200) -> Response:
    """Serialise once, sign exactly those bytes with the Kit key."""
    data = json.dumps(answer, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    response = Response(data, status=status, content_type="application/json")
    response.headers["Body-Sign"] = body_sign(key, data)
    return response


def _changed(rt: Runtime, activity: str, data: dict[str, Any], changed: bool) -> Reply:
    """Success; a change is recorded for the product (parked while its instance is unknown)."""
    if calls.counted(changed):
        rt.lifecycle.record(data["instance_id"], events.KINDS[activity], events.change(activity, data))
    return reply(SUCCESS, "success")


def tenant_sync(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Store, change or mark deleted the tenant of an instance."""
    return _changed(rt, "tenantSync", data, store.sync_tenant(data, rt.settings.data_keys))


def application_sync(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Store the tenant's application with its client secret sealed."""
    plain = data.pop("client_secret_plain", None)
    return _changed(rt, "applicationSync", data, store.sync_application(data, plain, rt.settings.data_keys))


def auth_sync(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Grant, change, revoke or delete up to 500 users' authorisations, in one transaction."""
    return _changed(rt, "authSync", data, store.sync_users(data, rt.settings.data_keys))


def single_org_sync(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Add, change or mark deleted one organisation."""
    return _changed(rt, "singleOrgSync", data, store.sync_org(data))


def all_org_sync(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Replace the organisation tree (organisations absent from it are marked deleted)."""
    return _changed(rt, "allOrgSync", data, store.sync_all_orgs(data))


def test_success(rt: Runtime, data: dict[str, Any]) -> Reply:
    """testFlag=1: verified and logged, nothing stored."""
    return reply(SUCCESS, "success (debug request)")


HANDLERS: dict[str, Callable[[Runtime, dict[str, Any]], Reply]] = {
    "tenantSync": tenant_sync,
    "applicationSync": application_sync,
    "authSync": auth_sync,
    "singleOrgSync": single_org_sync,
    "allOrgSync": all_org_sync,
}


class KitEndpoint(calls.Endpoint):
    """Kit sync: `x-sign` headers (spec §2.2), the activity in the path, replies signed with Body-Sign."""

    interface = INTERFACE
    activities = frozenset(HANDLERS)
    key_interface = KIT.name

    def __init__(self, activity: str) -> None:
        self.activity = activity

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        """The activity (from the path) and the ids of the body (strings only)."""
        call.activity = self.activity
        for attribute, name in (("instance_id", "instanceId"), ("order_id", "orderId")):
            value = body.get(name)
            setattr(call, attribute, value if isinstance(value, str) else None)
        call.test_flag = body.get("testFlag") == 1 and not isinstance(body.get("testFlag"), bool)

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """Spec §2.2 on the x-sign, x-timestamp and x-nonce headers."""
        result = verify(req.headers, raw, body, keys, now_ms, runtime().settings.signature_tolerance)
        outcome = Outcome.AUTH_FAILED if result.code == AUTH_FAILED else Outcome.INVALID
        return Verification(result.verdict.value, result.message, outcome, result.key, result.nonce or "")

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> Reply | Handling:
        """The sync's handler with its validated data, or the reply that rejects it."""
        call.activity = self.activity
        if body is None:
            call.reason = "body is not a JSON object"
            return reply(INVALID_PARAMETERS, "body must be a JSON object")
        if not calls.storable(body):
            call.reason = "body holds a NUL character or a lone surrogate"
            return reply(INVALID_PARAMETERS, "body holds characters that are not valid text")
        try:
            data = REQUESTS[self.activity].load({k: v for k, v in body.items() if v is not None})
        except ValidationError as exc:
            call.reason = describe(exc.messages)
            return reply(INVALID_PARAMETERS, f"invalid request parameters: {call.reason}")
        if data["test_flag"] == 1:
            return Handling(test_success, data, read_only=True)
        if self.activity == "applicationSync" and data["flag"] != DELETE:
            plain = self._client_secret(call, data["client_secret"])
            if plain is None:
                return reply(CLIENT_SECRET_UNREADABLE, "clientSecret could not be decrypted")
            data["client_secret_plain"] = plain
        return Handling(HANDLERS[self.activity], data)

    def _client_secret(self, call: CallRecord, value: str) -> str | None:
        """The decrypted client secret, or None (logged without any value) when it does not decrypt."""
        private_key = runtime().settings.of("koogallery_kit").private_key
        if private_key is None:
            call.reason = "no ISV_KIT_PRIVATE_KEY to decrypt clientSecret"
            log.warning("applicationSync: ISV_KIT_PRIVATE_KEY is not set request_id=%s", call.request_id)
            return None
        try:
            return decrypt_client_secret(private_key, value)
        except ClientSecretError:
            call.reason = "clientSecret does not decrypt with ISV_KIT_PRIVATE_KEY"
            return None

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> Reply:
        """resultCode and resultMsg."""
        return reply(CODES[outcome], message)

    def render(self, answer: Reply, key: str, status: int, call: CallRecord) -> Response:
        """Body-Sign over the exact bytes, with the Kit key."""
        return signed_response(answer, key, status)


ENDPOINTS = {activity: KitEndpoint(activity) for activity in HANDLERS}


@bp.post("/v2/<activity>")
def sync(activity: str) -> Response:
    """One V2 Kit sync call."""
    return handled(ENDPOINTS, activity)


def handled(endpoints: Mapping[str, calls.Endpoint], activity: str) -> Response:
    """The call to `activity`'s endpoint; the signed 404 for an activity the Kit does not have."""
    endpoint = endpoints.get(activity)
    return calls.handle(endpoint) if endpoint is not None else envelope(404, "not found")


def envelope(status: int, message: str) -> Response:
    """A signed reply outside a sync call (404, 405, 500), keyed with the first active Kit key."""
    code = INTERNAL_ERROR if status >= 500 else INVALID_PARAMETERS
    keys = calls.signing_keys(runtime().settings, KIT.name)
    answer = reply(code, message)
    if not keys:
        response = Response(json.dumps(answer), status=status, content_type="application/json")
        return response
    return signed_response(answer, keys[0], status)


def error_answer(status: int, message: str) -> Response:
    """The mount's answer to an error on its paths: an unhandled one (500) is HTTP 200 with the internal
    error's result code, since the marketplace reads only the body; 404, 405, 413 keep theirs."""
    return envelope(200 if status == 500 else status, message)
