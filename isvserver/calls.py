"""The one call pipeline every adapter runs.

wire (body within the size limit) → verify (the adapter's verifier) → nonce → validate → handler →
one transaction (the change and its call-log row) → after-commit work → the adapter's signed reply.
Every failure on the way becomes the adapter's own error reply; nothing here knows a marketplace.

Every call has an answer deadline (ISV_ANSWER_DEADLINE_MS from the request's arrival): a handler that
would wait (for provisioning) does so through `wait_after_commit`, which shrinks the wait to what is
left and skips it when no waiting slot is free. The call's latency counts from arrival, and its
call-log row says whether the answer was written (`delivery`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flask import Request, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from isvserver import deadline, deferred, keystore, lifecycle, replay
from isvserver.calllog import (
    CallRecord,
    log_line,
    record,
    record_rejected,
    store,
    store_rejected,
    update_result,
)
from isvserver.db import connected, database, held_for_call
from isvserver.freshness import Verdict
from isvserver.provisioning import ProvisioningError
from isvserver.runtime import Runtime, runtime
from isvserver.web import delivery, metrics
from isvserver.web.wire import BODY_PROBLEM, MALFORMED, TOO_LARGE

log = logging.getLogger("isvserver.calls")

VERIFIED = Verdict.VERIFIED.value
REPLAYED_NONCE = Verdict.REPLAYED_NONCE.value


class Outcome(StrEnum):
    """What an answer says, in words every marketplace has a result code (or an HTTP status) for."""

    SUCCESS = "success"
    IN_PROGRESS = "in_progress"
    AUTH_FAILED = "auth_failed"
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    INTERNAL = "internal"
    CONFLICT = "conflict"  # the id is another creation's (lifecycle.IdConflict)
    GONE = "gone"  # the instance was released


@dataclass(frozen=True)
class Answer:
    """A reply that carries its own HTTP status and headers (interfaces that answer in status codes)."""

    status: int
    body: Any  # what the endpoint serialises: an object, a list, or None for an empty body
    headers: tuple[tuple[str, str], ...] = ()


Reply = dict[str, Any] | Answer


@dataclass(frozen=True)
class Verification:
    """An adapter's verdict on a call: `key` verified it; `nonce` is what the replay store keeps (None
    or empty for an authentication without one, e.g. a bearer token: the replay store is not touched)."""

    verdict: str
    message: str = "success"
    outcome: Outcome = Outcome.SUCCESS
    key: str | None = field(default=None, repr=False)
    nonce: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the call is authentic and fresh."""
        return self.verdict == VERIFIED


Handler = Callable[[Runtime, dict[str, Any]], Reply]


@dataclass(frozen=True)
class Handling:
    """A validated call: the handler to run, its data, and whether it only reads."""

    handler: Handler
    data: dict[str, Any]
    read_only: bool = False


LIFECYCLE_ANSWERS: dict[type[lifecycle.LifecycleError], tuple[Outcome, str]] = {
    lifecycle.InstanceNotFound: (Outcome.NOT_FOUND, "instance does not exist"),
    lifecycle.InstanceReleased: (Outcome.NOT_FOUND, "instance has been released"),
    lifecycle.StillProvisioning: (
        Outcome.IN_PROGRESS,
        "instance is still being provisioned; try again later",
    ),
    lifecycle.IdConflict: (Outcome.CONFLICT, "the instance id belongs to another creation"),
    lifecycle.InvalidInstanceId: (Outcome.INVALID, "the instance id is not a valid id"),
}


class Endpoint:
    """An adapter's call interface: the pipeline asks it what only the marketplace's contract says."""

    interface: str = ""  # the call log's and the metrics' name of the interface
    activities: frozenset[str] = frozenset()  # the names that may become a metrics label
    # Whose keys verify its calls (and sign its replies); empty: its calls need no key (a bearer token,
    # HTTP Basic), none is read and `verify` gets none.
    key_interface: str = ""

    def keys_for(self, body: dict[str, Any] | None) -> str:
        """The key interface of this call (an activity may have a key of its own)."""
        return self.key_interface

    def replay_window_s(self, settings: Any) -> float:
        """How long a call's timestamp is fresh; its nonce is kept twice as long (the settings' window)."""
        return float(settings.signature_tolerance)

    def lifecycle_reply(self, exc: lifecycle.LifecycleError) -> Reply:
        """The reply to a lifecycle error, in the interface's terms (LIFECYCLE_ANSWERS by default)."""
        if isinstance(exc, lifecycle.ChangeRejected):
            return self.reply(Outcome.INVALID, f"change not acceptable: {exc}"[:255])
        outcome, message = LIFECYCLE_ANSWERS.get(type(exc), (Outcome.INVALID, "not acceptable now"))
        return self.reply(outcome, message)

    def parse(self, raw: bytes, req: Request) -> dict[str, Any] | None:
        """The call's parameters as one object (the JSON body by default), or None."""
        return parse_json_object(raw)

    def record_ids(self, call: CallRecord, body: dict[str, Any]) -> None:
        """Copy the call's ids (never secrets) into its call record."""

    def verify(
        self, req: Request, raw: bytes, body: dict[str, Any] | None, keys: tuple[str, ...], now_ms: float
    ) -> Verification:
        """Authenticate the call with one of `keys`."""
        raise NotImplementedError

    def check(self, call: CallRecord, body: dict[str, Any] | None) -> Reply | Handling:
        """The handler of an authentic call with its validated data, or the reply that rejects it."""
        raise NotImplementedError

    def reply(self, outcome: Outcome, message: str, **fields: Any) -> Reply:
        """The adapter's reply body for `outcome`."""
        raise NotImplementedError

    def render(self, answer: Reply, key: str, status: int, call: CallRecord) -> Response:
        """The signed response carrying `answer` (serialised once, the exact bytes signed)."""
        raise NotImplementedError

    def result_code(self, answer: Reply) -> tuple[str, str | None]:
        """The result code and message of a reply, as logged (an Answer: its HTTP status)."""
        if isinstance(answer, Answer):
            body = answer.body if isinstance(answer.body, dict) else {}
            message = body.get("description") or body.get("error")
            return str(answer.status), message[:255] if isinstance(message, str) else None
        return str(answer.get("resultCode", "")), answer.get("resultMsg")


MAX_DEPTH = 32  # deeper JSON is refused before anything walks it (no marketplace body nests beyond 3)


def nested_deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests objects or arrays more than `limit` levels deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def load_json(text: str | bytes) -> Any:
    """JSON text as a value; ValueError when it is not JSON, NaN/Infinity, or nested beyond MAX_DEPTH."""

    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if nested_deeper_than(value):
        raise ValueError("nested too deeply")
    return value


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (or nests beyond MAX_DEPTH)."""
    try:
        value = load_json(raw.decode("utf-8"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# A NUL as json.dumps writes it: \u0000 after an even number of backslashes (the text "\u0000" is \\u0000).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def storable(value: Any) -> bool:
    """Whether every string in `value` can be stored in both databases (no NUL, no lone surrogate)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, RecursionError):
        return False
    return _ESCAPED_NUL.search(text) is None


class MalformedBody(Exception):
    """The request body could not be read as sent (broken chunked encoding, a client that went away)."""


def read_body(limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (chunked bodies included).

    The app caps the stream at limit + 1 (MAX_CONTENT_LENGTH): reading one byte past the limit is how
    an over-long chunked body shows itself, since Werkzeug cuts those off silently. A body that cannot
    be read (gunicorn's chunk parser refusing it) raises MalformedBody. What the web worker found while
    framing the request (isvserver/web/wire.py) is answered without reading anything.
    """
    problem = request.environ.get(BODY_PROBLEM)
    if problem == TOO_LARGE:
        return None
    if problem == MALFORMED:
        raise MalformedBody(problem)
    chunks, size = [], 0
    try:
        while size <= limit:
            chunk = request.stream.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except RequestEntityTooLarge:
        return None
    except Exception as exc:  # gunicorn.http.errors.*, werkzeug's ClientDisconnected, OSError
        raise MalformedBody(type(exc).__name__) from None
    return None if size > limit else b"".join(chunks)


def signing_keys(settings: Any, interface: str) -> tuple[str, ...]:
    """The active keys of `interface` (the environment's when the database cannot say)."""
    try:
        active = keystore.verification_keys(settings, interface)
    except Exception:  # the database cannot say which keys are retired: the configured ones
        active = ()
    return active or settings.keys(interface)


def source_address(req: Request, trusted: tuple[str, ...]) -> str | None:
    """The caller's address: the peer's, or the last X-Forwarded-For hop when the peer is a trusted proxy."""
    peer = req.remote_addr
    forwarded = req.headers.get("X-Forwarded-For", "")
    if forwarded and ("*" in trusted or peer in trusted):
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1][:64]
    return peer


def counted(changed: bool) -> bool:
    """`changed`, after counting a call that changed nothing because it repeated an earlier one (the
    same business key) as a duplicate."""
    if not changed:
        metrics.DUPLICATES.labels(g.get("call_interface", "unknown"), "business_key").inc()
    return changed


def arrived() -> float:
    """When the current call's request arrived (time.monotonic())."""
    return deadline.arrived(request.environ)


def time_left() -> float:
    """Seconds until the current call's answer must be written (negative once past)."""
    return deadline.answer_by(request.environ, runtime().settings.answer_deadline_ms) - time.monotonic()


def wait_after_commit(budget_ms: int, wait: Callable[[float], Reply | None]) -> None:
    """Once the call has committed, let `wait(until)` replace its answer (None keeps it).

    `until` (time.monotonic()) is `budget_ms` after the request's arrival, or earlier so that the
    answer is written by the call's deadline. The wait is skipped, and the answer stands, when no time
    is left or every waiting slot of this process is taken (waiting calls never hold the threads that
    other calls need).
    """
    environ = request.environ
    until = deadline.wait_until(environ, runtime().settings.answer_deadline_ms, budget_ms)
    threads = deadline.threads_of(environ)
    g.call_waits = True

    def bounded_wait() -> Reply | None:
        if until <= time.monotonic():
            metrics.WAITS.labels("no_time").inc()
            return None
        with deadline.waiting_slot(threads) as free:
            if not free:
                metrics.WAITS.labels("no_thread").inc()
                return None
            metrics.WAITS.labels("waited").inc()
            return wait(until)

    deferred.after_commit(bounded_wait)


def handle(endpoint: Endpoint) -> Response:
    """Run one call through the pipeline and answer it signed."""
    with held_for_call():
        return _handle(endpoint)


def _handle(endpoint: Endpoint) -> Response:
    rt = runtime()
    started = g.call_started = arrived()
    g.call_interface = endpoint.interface
    call = CallRecord(
        request_id=g.request_id,
        interface=endpoint.interface,
        source_address=source_address(request, rt.settings.forwarded_allow_ips),
    )
    status, malformed = 200, False
    try:
        raw = read_body(rt.settings.max_body_bytes)
    except MalformedBody:
        raw, malformed = b"", True
    if raw is None:
        raw, status = b"", 413
    body = endpoint.parse(raw, request)
    if body is not None:
        endpoint.record_ids(call, body)
    keys, reply_keys = _current_keys(rt, endpoint, call, body)
    now_ms = rt.clock()
    verification = endpoint.verify(request, raw, body, keys or (), now_ms)
    call.verdict = verification.verdict
    sign_key = verification.key or (reply_keys[0] if reply_keys else "")
    if status == 413:
        call.verdict, call.reason = "body_too_large", f"body over {rt.settings.max_body_bytes} bytes"
        answer = endpoint.reply(
            Outcome.INVALID, f"request body is larger than {rt.settings.max_body_bytes} bytes"
        )
    elif malformed:
        call.verdict, call.reason = "malformed_body", "the body could not be read (broken chunked encoding)"
        answer = endpoint.reply(Outcome.INVALID, "the request body is malformed")
    elif keys is None:
        call.verdict, call.reason = "keys_unavailable", "access keys could not be read from the database"
        answer = endpoint.reply(Outcome.INTERNAL, "internal error; the call can be retried")
    elif not verification.ok:
        call.reason = verification.message
        answer = endpoint.reply(verification.outcome, verification.message)
    else:
        try:
            with deferred.collecting() as steps, connected():
                answer, response, row = _verified_call(
                    rt, endpoint, call, verification, int(now_ms), body, status, started, steps
                )
                if steps:
                    final = _run_after_commit(call, answer, steps)
                    if final is not answer:
                        response = _signed(endpoint, call, final, sign_key, status, started)
            if row is not None:  # else a replay only counted (beyond the rejected-call bounds)
                log_line(call)
            _track_delivery(call, row, rewrite=call.delivery != delivery.SENT)
            return _counted(endpoint, call, response)
        except Exception:
            log.exception("internal error request_id=%s activity=%s", call.request_id, call.activity)
            answer = endpoint.reply(Outcome.INTERNAL, "internal error; the call can be retried")
    response = _signed(endpoint, call, answer, sign_key, status, started)
    call.delivery = delivery.SENT
    if call.verdict == VERIFIED:
        row = record(call)  # an authentic call that failed inside: every id, for the operator
    else:
        settings = rt.settings
        row = record_rejected(
            call,
            endpoint.activities,
            settings.rejected_log_per_minute,
            int(now_ms // 60_000),
            total=settings.rejected_log_total_per_minute,
        )
    _track_delivery(call, row, rewrite=False)
    return _counted(endpoint, call, response)


def _track_delivery(call: CallRecord, row: int | None, rewrite: bool) -> None:
    """Once the answer was written (or not), make the call's row say so.

    A row stored before a wait (`rewrite`) is rewritten with what was finally sent; any other row was
    stored as sent and is rewritten only when its answer could not be written.
    """

    def delivered(outcome: str) -> None:
        call.delivery = outcome
        if outcome != delivery.SENT:
            log.warning(
                "answer not sent request_id=%s activity=%s delivery=%s",
                call.request_id,
                call.activity,
                outcome,
            )
        if row is None or (outcome == delivery.SENT and not rewrite):
            return
        try:
            with connected():
                update_result(row, call)
        except Exception as exc:
            log.warning("callback log not updated request_id=%s: %s", call.request_id, type(exc).__name__)

    delivery.on_answer(request.environ, delivered)


def _run_after_commit(call: CallRecord, answer: Reply, steps: list[deferred.Step]) -> Reply:
    """The committed call's follow-up steps (queueing jobs, waiting for provisioning) and the final answer.

    A step that fails is logged and skipped: what it would queue is committed and the sweeper finds it.
    """
    for step in steps:
        try:
            answer = step() or answer
        except Exception:
            log.exception(
                "after-commit step failed request_id=%s activity=%s", call.request_id, call.activity
            )
    return answer


def _signed(
    endpoint: Endpoint, call: CallRecord, answer: Reply, key: str, status: int, started: float
) -> Response:
    """The signed reply; the call record gets its result and latency."""
    call.result_code, call.result_msg = endpoint.result_code(answer)
    response = endpoint.render(answer, key, status, call)
    call.latency_ms = (time.monotonic() - started) * 1000
    return response


def _counted(endpoint: Endpoint, call: CallRecord, response: Response) -> Response:
    """Count the call in the metrics and tag the reply with its request id."""
    activity = call.activity if call.activity in endpoint.activities else "unknown"
    interface = endpoint.interface
    metrics.REQUESTS.labels(interface, activity, call.result_code).inc()
    metrics.LATENCY.labels(interface, activity).observe(call.latency_ms / 1000)
    if call.verdict == REPLAYED_NONCE:
        metrics.DUPLICATES.labels(interface, "nonce").inc()
    if call.verdict != VERIFIED:
        metrics.REJECTIONS.labels(interface, call.verdict).inc()
    response.headers["X-Request-Id"] = call.request_id
    return response


def _current_keys(
    rt: Runtime, endpoint: Endpoint, call: CallRecord, body: dict[str, Any] | None
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The active keys of the call's interface (None when unreadable) and the keys replies are signed with."""
    interface = endpoint.keys_for(body)
    if not interface and not endpoint.key_interface:
        return (), ()  # its calls need no key: none is read
    try:
        with connected():
            keys = keystore.verification_keys(rt.settings, interface)
            fallback = keys or keystore.verification_keys(rt.settings, endpoint.key_interface)
    except Exception:
        log.exception("access keys not readable request_id=%s", call.request_id)
        return None, rt.settings.keys(endpoint.key_interface) or rt.settings.keys(interface)
    return keys, fallback or rt.settings.keys(endpoint.key_interface) or rt.settings.keys(interface)


def _verified_call(
    rt: Runtime,
    endpoint: Endpoint,
    call: CallRecord,
    verification: Verification,
    now_ms: int,
    body: dict[str, Any] | None,
    status: int,
    started: float,
    steps: list[deferred.Step],
) -> tuple[Reply, Response, int | None]:
    """The answer to an authentic call, its signed reply and its call-log row, committed.

    One write transaction per call holds the nonce, the change and the call's log row, and a reply
    is never sent for anything that did not commit. A call that changes nothing (a read, every debug
    call, a rejected request) is answered and signed with no transaction open and only then takes the
    write lock (SQLite: BEGIN IMMEDIATE) for its nonce and log row; a nonce already taken turns its
    answer into an authentication failure. A changing call validates first and runs its handler
    inside that transaction, after the nonce.
    """
    keep_ms = int(2 * endpoint.replay_window_s(rt.settings) * 1000)
    nonce, sign_key = verification.nonce, verification.key or ""
    checked = endpoint.check(call, body)
    if not isinstance(checked, Handling) or checked.read_only:
        answer = checked if not isinstance(checked, Handling) else _handled(rt, endpoint, call, checked)
        response = _signed(endpoint, call, answer, sign_key, status, started)
        if not nonce and call.verdict == VERIFIED:
            _mark_delivery(call)
            return answer, response, store(call)  # nothing to check first: one INSERT, no transaction
        with database.atomic():
            if nonce and not replay.first_use(endpoint.interface, nonce, now_ms, keep_ms):
                answer = _replayed(endpoint, call, steps)
                response = _signed(endpoint, call, answer, sign_key, status, started)
            row = _store(rt, endpoint, call, now_ms)
        return answer, response, row
    with database.atomic():
        if not nonce or replay.first_use(endpoint.interface, nonce, now_ms, keep_ms):
            answer = _handled(rt, endpoint, call, checked)
        else:
            answer = _replayed(endpoint, call, steps)
        response = _signed(endpoint, call, answer, sign_key, status, started)
        row = _store(rt, endpoint, call, now_ms)
    return answer, response, row


def _store(rt: Runtime, endpoint: Endpoint, call: CallRecord, now_ms: int) -> int | None:
    """The call's row in the open transaction: all of it when verified, a replay as any rejected call."""
    _mark_delivery(call)
    if call.verdict == VERIFIED:
        return store(call)
    settings = rt.settings
    return store_rejected(
        call,
        endpoint.activities,
        settings.rejected_log_per_minute,
        now_ms // 60_000,
        settings.rejected_log_total_per_minute,
    )


def _mark_delivery(call: CallRecord) -> None:
    """A call that will wait after its commit is stored as not sent (rewritten once its answer is)."""
    call.delivery = delivery.NOT_SENT if g.get("call_waits") else delivery.SENT


def _replayed(endpoint: Endpoint, call: CallRecord, steps: list[deferred.Step]) -> Reply:
    """The answer to a call whose nonce was already used (nothing it would have done is kept)."""
    steps.clear()
    g.call_waits = False
    call.verdict = REPLAYED_NONCE
    call.reason = "nonce was already used"
    return endpoint.reply(Outcome.AUTH_FAILED, "authentication failed: nonce was already used")


def _handled(rt: Runtime, endpoint: Endpoint, call: CallRecord, checked: Handling) -> Reply:
    """The handler's reply, lifecycle and provisioning errors turned into the adapter's answers."""
    try:
        return checked.handler(rt, checked.data)
    except lifecycle.LifecycleError as exc:
        return endpoint.lifecycle_reply(exc)
    except ProvisioningError as exc:
        log.warning("provisioning failed request_id=%s: %s", call.request_id, exc)
        return endpoint.reply(Outcome.INTERNAL, f"provisioning failed: {exc}"[:255])


def _problems(messages: Any, path: str) -> list[str]:
    if isinstance(messages, dict):
        found = []
        for name, inner in messages.items():
            step = f"[{name}]" if isinstance(name, int) else (f".{name}" if path else str(name))
            found.extend(_problems(inner, f"{path}{step}"))
        return found
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, str):
            return [f"{path or 'body'}: {first}"]
        return _problems(first, path)
    return [f"{path or 'body'}: invalid"]


def describe(messages: Any, limit: int = 200) -> str:
    """`field: problem; …` from marshmallow's messages, nested fields as `userList[3].email` (field
    names and rules only, never values), at most `limit` characters."""
    return "; ".join(_problems(messages, ""))[:limit]
