"""The V1 basic endpoint: GET on the produce path (POST stays V2), in the core call pipeline.

The query string is the call: authToken verified (spec §2.3) with the basic keys (the same
ISV_ACCESS_KEYS as V2), the authToken kept by the replay store for the V1 window, every reply
Body-Signed (spec §3), failures included.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Request, Response, g, request
from marshmallow import ValidationError
from werkzeug.exceptions import MethodNotAllowed

from isvserver import calls
from isvserver.body_sign import body_sign
from isvserver.calllog import CallRecord
from isvserver.calls import Handling, Outcome, Verification
from isvserver.freshness import AUTH_FAILURES
from isvserver.marketplaces.koogallery.config import BASIC
from isvserver.marketplaces.koogallery.results import (
    INTERNAL_ERROR,
    INVALID_PARAMETERS,
    OUTCOME_CODES,
)
from isvserver.marketplaces.koogallery.v1 import auth, buyers, licenses
from isvserver.marketplaces.koogallery.v1.handlers import (
    HANDLERS,
    READ_ONLY_ACTIVITIES,
    TEST_HANDLERS,
    Reply,
    reply,
)
from isvserver.marketplaces.koogallery.v1.schemas import ACTIVITIES, REQUESTS
from isvserver.runtime import runtime

INTERFACE = "koogallery.v1"
REPLAY_KEEP_WHEN_UNCHECKED_S = 86400  # with ISV_V1_CHECK_WINDOW=0 an authToken is still refused for a day
ALL_HANDLERS = {**HANDLERS, **licenses.HANDLERS}
ALL_TEST_HANDLERS = {**TEST_HANDLERS, **licenses.TEST_HANDLERS}
READ_ONLY = READ_ONLY_ACTIVITIES | licenses.READ_ONLY_ACTIVITIES


class V1Endpoint(calls.Endpoint):
    """V1 basic and License: query-string authToken, `activity` in the query, Body-Sign on every reply."""

    interface = INTERFACE
    activities = frozenset(ACTIVITIES)
    key_interface = BASIC.name

    def replay_window_s(self, settings: Any) -> float:
        """The V1 window: an authToken is accepted once within it (kept twice as long)."""
        window = settings.of("koogallery").v1_check_window
        return float(window or REPLAY_KEEP_WHEN_UNCHECKED_S / 2)

    def parse(self, raw: bytes, req: Request) -> dict[str, Any] | None:
        """The query string's parameters, URL-decoded (the body of a GET is ignored)."""
        return auth.parse_query(req.query_string.decode("utf-8", errors="replace"))

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        """The business ids of the query (never the buyer's data)."""
        call.activity = body.get("activity")
        call.test_flag = body.get("testFlag") == "1"
        call.instance_id = body.get("instanceId")
        call.order_id = body.get("orderId")
        call.business_id = body.get("businessId")

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """Spec §2.3 on the query string, the window of ISV_V1_CHECK_WINDOW (0: none)."""
        window = runtime().settings.of("koogallery").v1_check_window
        checked = auth.verify(req.query_string.decode("utf-8", errors="replace"), keys, now_ms, window)
        g.v1_verified = checked
        if checked.params is not None and body is not None:
            body.clear()
            body.update(checked.params)  # the form that verified (`+` kept, when that was it)
        outcome = Outcome.AUTH_FAILED if checked.verdict in AUTH_FAILURES else Outcome.INVALID
        return Verification(checked.verdict.value, checked.message, outcome, checked.key, checked.token)

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> Reply | Handling:
        """The activity's handler with its validated data, or the 000002 that rejects the call."""
        params = {k: v for k, v in (body or {}).items() if k not in (auth.TOKEN, auth.TIMESTAMP)}
        if not calls.storable(params):
            call.reason = "parameters hold a NUL character or a lone surrogate"
            return reply(INVALID_PARAMETERS, "parameters hold characters that are not valid text")
        activity = params.get("activity")
        schema = REQUESTS.get(activity) if isinstance(activity, str) else None
        if schema is None:
            call.reason = "unknown activity"
            return reply(INVALID_PARAMETERS, "activity is missing or unknown")
        try:
            data = schema.load({k: v for k, v in params.items() if v != ""})  # empty means absent
        except ValidationError as exc:
            call.reason = calls.describe(exc.messages)
            return reply(INVALID_PARAMETERS, f"invalid request parameters: {call.reason}")
        if data["testFlag"] == "1":
            return Handling(ALL_TEST_HANDLERS[activity], data, read_only=True)
        if any(data.get(name) for name in buyers.ENCRYPTED_FIELDS):
            own = runtime().settings.of("koogallery")
            try:
                data = buyers.decrypted(data, g.v1_verified.key, own.v1_encrypt_type)
            except buyers.BadCiphertext as exc:
                call.reason = str(exc)
                return reply(INVALID_PARAMETERS, f"invalid request parameters: {exc}")
        return Handling(ALL_HANDLERS[activity], data, read_only=activity in READ_ONLY)

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> Reply:
        """resultCode (spec §6) and resultMsg."""
        return reply(OUTCOME_CODES[outcome], message, **fields)

    def render(self, answer: Reply, key: str, status: int, call: CallRecord) -> Response:
        """Body-Sign over the exact bytes (spec §3, mandatory in V1)."""
        return signed_response(answer, key, status)


def signed_response(answer: Reply, key: str, status: int = 200) -> Response:
    """Serialise once (compact, ASCII), sign exactly those bytes, send them untouched."""
    data = json.dumps(answer, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    response = Response(data, status=status, content_type="application/json")
    response.headers["Body-Sign"] = body_sign(key, data)
    return response


ENDPOINT = V1Endpoint()
# V1 shares the production URL with V2 (spec §1): its own blueprint and Mount at the same prefix, owning GET.
bp = Blueprint("koogallery_v1", __name__)


@bp.route("", methods=["GET"], strict_slashes=False, provide_automatic_options=False)
def produce() -> Response:
    """Every V1 call: authenticate, validate, dispatch on `activity`, answer signed.

    HEAD (which Flask adds to every GET route) is refused: it carries no call and has no body to sign.
    """
    if request.method == "HEAD":
        raise MethodNotAllowed(valid_methods=["GET", "POST"])
    return calls.handle(ENDPOINT)


def error_answer(status: int, message: str) -> Response:
    """V1's signed resultCode/resultMsg answer to an error on its path and method, keyed with the first
    active key; an unhandled one (500) is HTTP 200 with the internal error's code (the body is read)."""
    code = INTERNAL_ERROR if status >= 500 else INVALID_PARAMETERS
    key = calls.signing_keys(runtime().settings, BASIC.name)[0]
    return signed_response(reply(code, message), key, 200 if status == 500 else status)
