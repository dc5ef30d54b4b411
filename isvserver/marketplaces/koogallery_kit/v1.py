"""V1 Kit sync (spec §1, §2.4): `POST {ISV_PRODUCE_PATH}/produceAPI/<activity>` with an `authToken`
header over the body's top-level fields (sorted `k=v&…`, keyed with the Kit key + `timeStamp`).

The body is V2 Kit's with V1's forms: numbers may come as strings, `userList` and `orgInfoList` as
the JSON strings they are in V1. Once normalised it is loaded by the same schemas and applied by the
same handlers (same store, events and idempotency); the authToken is kept by the replay store for the
V1 window (ISV_V1_CHECK_WINDOW, shared with V1 basic).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from flask import Request, Response

from isvserver import authtoken, calls
from isvserver.calllog import CallRecord
from isvserver.calls import Handling, Outcome, Verification
from isvserver.freshness import AUTH_FAILURES, Verdict
from isvserver.marketplaces.koogallery_kit.results import INVALID_PARAMETERS
from isvserver.marketplaces.koogallery_kit.views import HANDLERS, KitEndpoint, Reply, bp, handled, reply
from isvserver.runtime import runtime

INTERFACE = "koogallery.kit.v1"
REPLAY_KEEP_WHEN_UNCHECKED_S = 86400
MESSAGES = {
    Verdict.VERIFIED: "success",
    Verdict.MISSING_TIMESTAMP: "timeStamp is missing",
    Verdict.MISSING_SIGNATURE: "authentication failed: the authToken header is missing",
    Verdict.BAD_TIMESTAMP: "timeStamp must be yyyyMMddHHmmssSSS (UTC)",
    Verdict.STALE_TIMESTAMP: "timeStamp is outside the accepted window; check the clock",
    Verdict.NO_KEY: "authentication failed: no Kit key is configured",
    Verdict.BAD_SIGNATURE: "authentication failed: authToken does not match",
    Verdict.REPLAYED_NONCE: "authentication failed: authToken was already used",
}
INTEGERS = ("flag", "testFlag")
JSON_LISTS = ("userList", "orgInfoList")


def token_fields(body: dict[str, Any]) -> dict[str, str]:
    """The body's top-level fields as the authToken signs them: strings as they are, anything else as
    its compact JSON text; nulls left out."""
    return {
        name: value
        if isinstance(value, str)
        else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        for name, value in body.items()
        if value is not None
    }


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """A V1 Kit body in V2 Kit's forms: digit strings of flags as numbers, JSON-string lists parsed."""
    out = dict(body)
    for name in INTEGERS:
        value = out.get(name)
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
            out[name] = int(value)
    users = out.get("userList")
    if isinstance(users, str):
        with contextlib.suppress(ValueError):  # left a string: the schema names it
            out["userList"] = calls.load_json(users)
    if isinstance(out.get("userList"), list):
        out["userList"] = [_user(user) for user in out["userList"]]
    return out


def _user(user: Any) -> Any:
    if isinstance(user, dict):
        kind = user.get("employeeType")
        if isinstance(kind, str) and kind.isascii() and kind.isdigit() and len(kind) <= 9:
            return {**user, "employeeType": int(kind)}
    return user


class KitV1Endpoint(KitEndpoint):
    """V1 Kit: the authToken header (spec §2.4), the V2 Kit schemas and handlers on the normalised body."""

    interface = INTERFACE

    def replay_window_s(self, settings: Any) -> float:
        """The V1 window: an authToken is accepted once within it (kept twice as long)."""
        window = settings.of("koogallery_kit").v1_check_window
        return float(window or REPLAY_KEEP_WHEN_UNCHECKED_S / 2)

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """Spec §2.4: the header over the body's fields, keyed with a Kit key + body.timeStamp."""
        token = req.headers.get(authtoken.TOKEN, "")
        timestamp = body.get(authtoken.TIMESTAMP) if body is not None else None
        verdict, key = self._verdict(token, timestamp, body, keys, now_ms)
        outcome = Outcome.AUTH_FAILED if verdict in AUTH_FAILURES else Outcome.INVALID
        return Verification(verdict.value, MESSAGES[verdict], outcome, key, token if key else "")

    def _verdict(
        self, token: str, timestamp: Any, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> tuple[Verdict, str | None]:
        if not isinstance(timestamp, str) or not timestamp:
            return Verdict.MISSING_TIMESTAMP, None
        if not token:
            return Verdict.MISSING_SIGNATURE, None
        moment = authtoken.parse_timestamp(timestamp)
        if moment is None:
            return Verdict.BAD_TIMESTAMP, None
        window = runtime().settings.of("koogallery_kit").v1_check_window
        if authtoken.outside_window(moment, now_ms, window):
            return Verdict.STALE_TIMESTAMP, None
        if not keys:
            return Verdict.NO_KEY, None
        try:
            fields = token_fields(body or {})
        except (ValueError, RecursionError):
            return Verdict.BAD_SIGNATURE, None
        key = authtoken.matching_key(keys, fields, token)
        return (Verdict.VERIFIED, key) if key is not None else (Verdict.BAD_SIGNATURE, None)

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> Reply | Handling:
        """V2 Kit's validation and handler, on the body in V2's forms."""
        if body is None:
            call.activity = self.activity
            call.reason = "body is not a JSON object"
            return reply(INVALID_PARAMETERS, "body must be a JSON object")
        return super().check(call, normalised(body))

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        """The activity and the body's ids; testFlag as V1 sends it too (`"1"`)."""
        super().record_ids(call, body)
        call.test_flag = call.test_flag or body.get("testFlag") == "1"


V1_ENDPOINTS = {activity: KitV1Endpoint(activity) for activity in HANDLERS}


@bp.post("/<activity>")
def sync_v1(activity: str) -> Response:
    """One V1 Kit sync call."""
    return handled(V1_ENDPOINTS, activity)
