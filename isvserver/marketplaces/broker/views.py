"""The broker's two endpoints in the core call pipeline: the OAuth token (client credentials, Authlib's
client authentication) and the Open Service Broker paths (token or HTTP Basic, OSB status codes)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import ClientAuthentication
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    OAuth2Error,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from flask import Blueprint, Request, Response, g, request

from isvserver import calls, lifecycle
from isvserver.calllog import CallRecord
from isvserver.calls import Answer, Handling, Outcome, Verification
from isvserver.db import connected
from isvserver.freshness import Verdict
from isvserver.marketplaces.broker import clients, handlers, tokens
from isvserver.marketplaces.broker.catalog import Plan
from isvserver.marketplaces.broker.config import NAME
from isvserver.runtime import Runtime, runtime

INTERFACE = "broker"
ACTIVITIES = frozenset({"token", "catalog", "provision", "fetch", "last_operation", "update", "deprovision"})
MIN_VERSION = (2, 13)
VERSION = re.compile(r"(\d{1,3})\.(\d{1,3})")
IDENTITY = re.compile(r"[\x21-\x7e]{1,128}")
RATE_LIMITED = "too many failed token requests from this source; wait a minute"
OLD_VERSION = f"X-Broker-API-Version must be {MIN_VERSION[0]}.{MIN_VERSION[1]} or later"

log = logging.getLogger("isvserver.broker")
token_bp = Blueprint("broker_token", __name__)
broker_bp = Blueprint("broker", __name__)


def _json(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class BrokerCalls(calls.Endpoint):
    """What both broker endpoints share: no key interface, no nonce, answers in HTTP status codes."""

    interface = INTERFACE
    activities = ACTIVITIES
    activity = ""

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        """The activity and the instance id of the path."""
        call.activity = self.activity
        instance_id = (request.view_args or {}).get("instance_id")
        call.instance_id = instance_id if isinstance(instance_id, str) else None

    def render(self, answer: calls.Reply, key: str, status: int, call: CallRecord) -> Response:
        """The JSON bytes at the answer's status (the pipeline's 413 wins), the request identity echoed."""
        if not isinstance(answer, Answer):  # every reply here is an Answer; a dict would be a bug
            answer = Answer(500, {"description": "internal error"})
        response = Response(
            b"" if answer.body is None else _json(answer.body),
            status=status if status != 200 else answer.status,
            content_type="application/json",
        )
        for name, value in answer.headers:
            response.headers[name] = value
        identity = request.headers.get("X-Broker-API-Request-Identity", "")
        if IDENTITY.fullmatch(identity):
            response.headers["X-Broker-API-Request-Identity"] = identity
        return response


# --- the token endpoint ------------------------------------------------------------------------


class _TokenRequest:
    """What Authlib's client authentication reads of a request: headers, form fields, payload."""

    def __init__(self, req: Request, fields: dict[str, str]) -> None:
        self.headers = req.headers
        self.form = fields
        self.payload = BasicOAuth2Payload(fields)
        self.auth_method: str | None = None


def _oauth_error(error: OAuth2Error) -> Answer:
    """Authlib's RFC 6749 §5.2 error as an Answer: its status, body and headers."""
    return Answer(error.status_code, dict(error.get_body()), tuple(error.get_headers()))


def issue_token(rt: Runtime, data: dict[str, Any]) -> Answer:
    """A new opaque token for the authenticated client (its digest stored, valid on every worker)."""
    ttl = rt.settings.of(NAME).token_ttl_s
    token = tokens.issue(data["client_id"], ttl)
    body = {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}
    return Answer(200, body, (("Cache-Control", "no-store"), ("Pragma", "no-cache")))


class TokenEndpoint(BrokerCalls):
    """`POST {ISV_BROKER_TOKEN_PATH}`: client credentials in a form or JSON body, or HTTP Basic."""

    activity = "token"

    def parse(self, raw: bytes, req: Request) -> dict[str, Any] | None:
        """The form fields (or the JSON object's string fields)."""
        if req.mimetype == "application/json":
            value = calls.parse_json_object(raw)
            if value is None:
                return None
            return {k: v for k, v in value.items() if isinstance(v, str)}
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20))
        except (UnicodeDecodeError, ValueError):
            return None

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """Authenticate the client (Authlib: HTTP Basic or the body's client_id and client_secret);
        a source with too many failures this minute is refused before any check."""
        rt = runtime()
        source = calls.source_address(req, rt.settings.forwarded_allow_ips) or "unknown"
        minute = int(now_ms // 60_000)
        with connected():
            if tokens.failures(source, minute) >= rt.settings.of(NAME).token_failures_per_minute:
                return Verification("rate_limited", RATE_LIMITED, Outcome.AUTH_FAILED)
            if body is None:
                tokens.count_failure(source, minute)
                return Verification("bad_request", "the body is not a form or a JSON object", Outcome.INVALID)
            try:
                client = ClientAuthentication(clients.query_client)(
                    _TokenRequest(req, body), clients.AUTH_METHODS
                )
            except (InvalidClientError, UnicodeDecodeError):
                tokens.count_failure(source, minute)
                return Verification("bad_client", "invalid client", Outcome.AUTH_FAILED)
        g.broker_client = client.get_client_id()
        return Verification(Verdict.VERIFIED.value)

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> calls.Reply | Handling:
        """Only grant_type=client_credentials."""
        grant = (body or {}).get("grant_type")
        if not grant:
            call.reason = "grant_type is missing"
            return _oauth_error(InvalidRequestError(description="grant_type is missing"))
        if grant != clients.GRANT:
            call.reason = "unsupported grant_type"
            return _oauth_error(UnsupportedGrantTypeError(str(grant)[:64]))
        return Handling(issue_token, {"client_id": g.broker_client})

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> calls.Reply:
        """RFC 6749 §5.2 errors; 429 for a source over its failure limit."""
        if message == RATE_LIMITED:
            return Answer(
                429, {"error": "too_many_requests", "error_description": message}, (("Retry-After", "60"),)
            )
        if outcome == Outcome.AUTH_FAILED:
            return _oauth_error(InvalidClientError(status_code=401, description=message))
        if outcome == Outcome.INVALID:
            return _oauth_error(InvalidRequestError(description=message))
        return Answer(500, {"error": "server_error", "error_description": message})


TOKEN = TokenEndpoint()


@token_bp.post("", strict_slashes=False)
def token() -> Response:
    """Issue an access token (client credentials)."""
    return calls.handle(TOKEN)


# --- the broker ----------------------------------------------------------------------------------


def _version_ok(value: str) -> bool:
    match = VERSION.fullmatch(value.strip())
    return match is not None and (int(match.group(1)), int(match.group(2))) >= MIN_VERSION


def _bearer(req: Request) -> str | None:
    """The token of the `access-token` header (AppCube) or of `Authorization: Bearer`."""
    token = req.headers.get("access-token")
    if token:
        return token.strip()
    kind, _, value = req.headers.get("Authorization", "").partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


def _authenticated(req: Request) -> str | None:
    """The client id of a valid token, or of HTTP Basic credentials; None otherwise."""
    token = _bearer(req)
    if token is not None:
        return tokens.holder(token)
    try:
        client_id, secret = extract_basic_authorization(req.headers)
    except UnicodeDecodeError:
        return None
    if not client_id or not secret:
        return None
    client = clients.query_client(client_id)
    return client_id if client.row is not None and client.check_client_secret(secret) else None


def _originating_platform(req: Request) -> str | None:
    """The platform named by X-Broker-API-Originating-Identity (the user part is never logged)."""
    value = req.headers.get("X-Broker-API-Originating-Identity", "")
    platform = value.split(" ", 1)[0]
    return platform[:32] if IDENTITY.fullmatch(platform) else None


Checker = Callable[["BrokerEndpoint", CallRecord, dict[str, Any]], "calls.Reply | dict[str, Any]"]


class BrokerEndpoint(BrokerCalls):
    """One OSB call: token (`access-token`, Bearer) or HTTP Basic; X-Broker-API-Version ≥ 2.13."""

    def __init__(self, activity: str, handler: calls.Handler, read_only: bool = False) -> None:
        self.activity = activity
        self.handler = handler
        self.read_only = read_only

    def parse(self, raw: bytes, req: Request) -> dict[str, Any] | None:
        """The path's ids, the query and the JSON body (None when a body is there but is no object)."""
        body = calls.parse_json_object(raw) if raw.strip() else {}
        return {
            "path": dict(req.view_args or {}),
            "query": req.args.to_dict(),
            "body": body,
        }

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """The API version when sent, then the caller's token or HTTP Basic credentials."""
        version = req.headers.get("X-Broker-API-Version")
        if version is not None and not _version_ok(version):
            return Verification("bad_version", OLD_VERSION, Outcome.INVALID)
        with connected():
            client_id = _authenticated(req)
        if client_id is None:
            return Verification("bad_token", "missing, expired or unknown credentials", Outcome.AUTH_FAILED)
        log.info(
            "broker call activity=%s request_id=%s request_identity=%s platform=%s",
            self.activity,
            g.request_id,
            req.headers.get("X-Broker-API-Request-Identity", "")[:128] or "-",
            _originating_platform(req) or "-",
        )
        return Verification(Verdict.VERIFIED.value)

    def check(self, call: CallRecord, parsed: dict[str, Any] | None) -> calls.Reply | Handling:
        """The validated call for its handler, or the 400/412/422 that refuses it."""
        assert parsed is not None
        if parsed["body"] is None:
            call.reason = "body is not a JSON object"
            return handlers.error(400, None, "the body must be a JSON object")
        if not calls.storable(parsed["body"]) or not calls.storable(parsed["query"]):
            call.reason = "body holds a NUL character or a lone surrogate"
            return handlers.error(400, None, "the request holds characters that are not valid text")
        checked = CHECKS.get(self.activity, _plain)(self, call, parsed)
        if isinstance(checked, Answer):
            return checked
        return Handling(self.handler, checked, read_only=self.read_only)

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> calls.Reply:
        """OSB's status and `{error, description}` for an outcome; never a 5xx on DELETE."""
        if message == OLD_VERSION:
            return handlers.error(412, None, message)
        status, name = STATUS[outcome]
        if self.activity == "deprovision" and status >= 500:
            status, name = 422, "ConcurrencyError"  # platforms retry deletes: ask again, never 5xx
        if self.activity == "deprovision" and status == 404:
            status = 410
        return handlers.error(status, name, message)

    def lifecycle_reply(self, exc: lifecycle.LifecycleError) -> calls.Reply:
        """OSB's answers to the lifecycle's refusals."""
        if isinstance(exc, lifecycle.IdConflict):
            return handlers.error(409, None, "an instance with this id exists with other attributes")
        if isinstance(exc, lifecycle.InvalidInstanceId):
            return handlers.error(400, None, "instance_id must be 1-64 of A-Z a-z 0-9 . _ -")
        if isinstance(exc, lifecycle.StillProvisioning):
            return handlers.error(422, "ConcurrencyError", "the service instance is still being provisioned")
        return super().lifecycle_reply(exc)


STATUS: dict[Outcome, tuple[int, str | None]] = {
    Outcome.SUCCESS: (200, None),
    Outcome.IN_PROGRESS: (202, None),
    Outcome.AUTH_FAILED: (401, "Unauthorized"),
    Outcome.INVALID: (400, "BadRequest"),
    Outcome.NOT_FOUND: (404, None),
    Outcome.INTERNAL: (500, "InternalError"),
    Outcome.CONFLICT: (409, None),
    Outcome.GONE: (410, None),
}


def _accepts_incomplete(parsed: dict[str, Any]) -> bool:
    return parsed["query"].get("accepts_incomplete", "").lower() == "true"


def _plain(endpoint: BrokerEndpoint, call: CallRecord, parsed: dict[str, Any]) -> dict[str, Any]:
    """A read or a delete: the instance id, the operation asked for, accepts_incomplete."""
    return {
        "instance_id": parsed["path"].get("instance_id", ""),
        "operation": parsed["query"].get("operation"),
        "accepts_incomplete": _accepts_incomplete(parsed),
    }


def _plan_of(call: CallRecord, body: dict[str, Any], required: bool) -> Plan | Answer | None:
    catalog = runtime().settings.of(NAME).catalog
    service_id, plan_id = body.get("service_id"), body.get("plan_id")
    if not isinstance(service_id, str) or (required and not isinstance(plan_id, str)):
        call.reason = "service_id or plan_id missing"
        return handlers.error(400, None, "service_id and plan_id are required strings")
    if plan_id is None:
        return None if service_id in catalog.services else handlers.error(400, None, "unknown service_id")
    plan = catalog.plan(service_id, plan_id)
    if plan is None:
        call.reason = "unknown service_id or plan_id"
        return handlers.error(400, None, "service_id and plan_id must name a plan of the catalog")
    return plan


def _maintenance_conflict(body: dict[str, Any], plan: Plan | None) -> Answer | None:
    info = body.get("maintenance_info")
    version = info.get("version") if isinstance(info, dict) else None
    if version is not None and plan is not None and version != plan.maintenance_version:
        return handlers.error(
            422, "MaintenanceInfoConflict", "maintenance_info.version is not the plan's current version"
        )
    return None


def _check_provision(endpoint: BrokerEndpoint, call: CallRecord, parsed: dict[str, Any]) -> Any:
    body = parsed["body"]
    plan = _plan_of(call, body, required=True)
    if isinstance(plan, Answer) or plan is None:
        return plan
    parameters = body.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        return handlers.error(400, None, "parameters must be a JSON object")
    problems = plan.validate(parameters)
    if problems:
        call.reason = "invalid parameters"
        return handlers.error(400, None, "invalid parameters: " + "; ".join(problems))
    conflict = _maintenance_conflict(body, plan)
    if conflict is not None:
        return conflict
    accepts = _accepts_incomplete(parsed)
    rt = runtime()
    if not accepts and not rt.provisioner.inline and request.headers.get("X-Broker-API-Version"):
        return handlers.error(422, "AsyncRequired", "this service plan requires accepts_incomplete=true")
    return {
        **_plain(endpoint, call, parsed),
        "plan": plan,
        "parameters": parameters,
        "context": body.get("context"),
    }


def _check_update(endpoint: BrokerEndpoint, call: CallRecord, parsed: dict[str, Any]) -> Any:
    body = parsed["body"]
    plan = _plan_of(call, body, required=False)
    if isinstance(plan, Answer):
        return plan
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        return handlers.error(400, None, "parameters must be a JSON object")
    conflict = _maintenance_conflict(body, plan)
    if conflict is not None:
        return conflict
    return {**_plain(endpoint, call, parsed), "plan": plan, "parameters": parameters}


CHECKS: dict[str, Checker] = {"provision": _check_provision, "update": _check_update}

INSTANCE = "/service_instances/<instance_id>"
# Each call at its AppCube path (`{prefix}/…`) and its OSB path (`{prefix}/v2/…`).
ROUTES = (
    ("GET", "/catalog", BrokerEndpoint("catalog", handlers.catalog, read_only=True)),
    ("PUT", INSTANCE, BrokerEndpoint("provision", handlers.provision)),
    ("GET", INSTANCE, BrokerEndpoint("fetch", handlers.fetch, read_only=True)),
    (
        "GET",
        f"{INSTANCE}/last_operation",
        BrokerEndpoint("last_operation", handlers.last_operation, read_only=True),
    ),
    ("PATCH", INSTANCE, BrokerEndpoint("update", handlers.update)),
    (
        "DELETE",
        INSTANCE,
        BrokerEndpoint("deprovision", handlers.deprovision),
    ),  # a release: nothing is deleted
)
ENDPOINTS = {endpoint.activity: endpoint for _, _, endpoint in ROUTES}


def _register() -> None:
    """Every route at its AppCube path and at its OSB path, both answered by its endpoint."""
    for method, path, endpoint in ROUTES:

        def view(endpoint: BrokerEndpoint = endpoint, **path_ids: str) -> Response:
            return calls.handle(endpoint)

        for osb in ("", "/v2"):
            broker_bp.add_url_rule(osb + path, endpoint.activity, view, methods=[method])


_register()


def error_answer(status: int, message: str) -> Response:
    """The broker's answer to an error on its paths: OSB JSON; never a 5xx on DELETE."""
    if request.method == "DELETE" and status >= 500:
        status, body = 422, {"error": "ConcurrencyError", "description": "try again"}
    else:
        body = {"description": message}
    response = Response(_json(body), status=status, content_type="application/json")
    identity = request.headers.get("X-Broker-API-Request-Identity", "")
    if IDENTITY.fullmatch(identity):
        response.headers["X-Broker-API-Request-Identity"] = identity
    return response
