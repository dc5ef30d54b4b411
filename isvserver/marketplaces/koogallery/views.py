"""The V2 basic produce endpoint: KooGallery's verifier, schemas and replies in the core call pipeline."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Request, Response
from marshmallow import ValidationError

from isvserver import calls
from isvserver.calllog import CallRecord
from isvserver.calls import Handling, Outcome, Verification
from isvserver.marketplaces.koogallery.config import BASIC, NOTIFY
from isvserver.marketplaces.koogallery.handlers import HANDLERS, READ_ONLY_ACTIVITIES, TEST_HANDLERS
from isvserver.marketplaces.koogallery.replies import Reply, reply, signed_response
from isvserver.marketplaces.koogallery.results import (
    AUTH_FAILED,
    INTERNAL_ERROR,
    INVALID_PARAMETERS,
    OUTCOME_CODES,
)
from isvserver.marketplaces.koogallery.schemas import REQUESTS, is_test_flag
from isvserver.marketplaces.koogallery.verify import verify
from isvserver.runtime import runtime

INTERFACE = "koogallery.v2"
NOTIFY_ACTIVITY = "orderNotify"

bp = Blueprint("koogallery", __name__)


class BasicEndpoint(calls.Endpoint):
    """V2 basic: query-string signature (spec §2.1), `activity` in the body, Body-Sign on every reply."""

    interface = INTERFACE
    activities = frozenset(REQUESTS)
    key_interface = BASIC.name

    def keys_for(self, body: dict[str, Any] | None) -> str:
        """orderNotify has a key of its own (spec §1)."""
        return NOTIFY.name if body is not None and body.get("activity") == NOTIFY_ACTIVITY else BASIC.name

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        """The business ids of the body (strings only)."""

        def pick(name: str) -> str | None:
            value = body.get(name)
            return value if isinstance(value, str) else None

        call.activity = pick("activity")
        call.test_flag = is_test_flag(body.get("testFlag"))
        call.instance_id = pick("instanceId")
        call.order_id = pick("orderId")
        call.order_line_id = pick("orderLineId")
        call.business_id = pick("businessId")

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """Spec §2.1 on the query parameters."""
        params = {name: req.args.get(name, "") for name in ("signature", "timestamp", "nonce")}
        result = verify(params, raw, body, keys, now_ms, runtime().settings.signature_tolerance)
        outcome = Outcome.AUTH_FAILED if result.code == AUTH_FAILED else Outcome.INVALID
        return Verification(result.verdict.value, result.message, outcome, result.key, params["nonce"])

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> Reply | Handling:
        """The activity's handler with its validated data, or the 000002 that rejects the call."""
        if body is None:
            call.reason = "body is not a JSON object"
            return reply(INVALID_PARAMETERS, "body must be a JSON object")
        if not calls.storable(body):
            call.reason = "body holds a NUL character or a lone surrogate"
            return reply(
                INVALID_PARAMETERS, "body holds characters that are not valid text (NUL, lone surrogate)"
            )
        activity = body.get("activity")
        schema = REQUESTS.get(activity) if isinstance(activity, str) else None
        if schema is None:
            call.reason = "unknown activity"
            return reply(INVALID_PARAMETERS, "activity is missing or unknown")
        try:
            data = schema.load({k: v for k, v in body.items() if v is not None})  # null means absent
        except ValidationError as exc:
            call.reason = calls.describe(exc.messages)
            return reply(INVALID_PARAMETERS, f"invalid request parameters: {call.reason}")
        if data["testFlag"] == "1":
            return Handling(TEST_HANDLERS[activity], data, read_only=True)
        return Handling(HANDLERS[activity], data, read_only=activity in READ_ONLY_ACTIVITIES)

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> Reply:
        """resultCode (spec §6) and resultMsg."""
        return reply(OUTCOME_CODES[outcome], message, **fields)

    def render(self, answer: Reply, key: str, status: int, call: CallRecord) -> Response:
        """Body-Sign over the exact bytes (spec §3)."""
        return signed_response(answer, key, status=status, activity=call.activity)


ENDPOINT = BasicEndpoint()


@bp.route("", methods=["POST"], strict_slashes=False, provide_automatic_options=False)
def produce() -> Response:
    """Every V2 basic call: authenticate, validate, dispatch on `activity`, answer signed."""
    return calls.handle(ENDPOINT)


def envelope(status: int, message: str) -> Response:
    """A signed resultCode/resultMsg reply outside the produce flow, keyed with the first active key."""
    code = INTERNAL_ERROR if status >= 500 else INVALID_PARAMETERS
    key = calls.signing_keys(runtime().settings, BASIC.name)[0]
    return signed_response(reply(code, message), key, status=status)


def error_answer(status: int, message: str) -> Response:
    """The mount's answer to an error on its paths: an unhandled one (500) is HTTP 200 with the internal
    error's result code, since the marketplace reads only the body; 404, 405, 413 keep theirs."""
    return envelope(200 if status == 500 else status, message)
