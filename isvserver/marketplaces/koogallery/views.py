"""The V2 basic produce endpoint: wire → verify → validate → lifecycle → signed reply."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, g, request
from marshmallow import Schema, ValidationError, fields
from werkzeug.exceptions import RequestEntityTooLarge

from isvserver import keystore, lifecycle, metrics, replay
from isvserver.callbacks import CallRecord, log_line, record, store, update_result
from isvserver.db import connected, database, held_for_call
from isvserver.lifecycle import Action
from isvserver.marketplaces.koogallery.schemas import REPLIES, REQUESTS, RESULT_OUT, is_test_flag, split_ids
from isvserver.marketplaces.koogallery.signing import body_sign
from isvserver.marketplaces.koogallery.verify import Verdict, verify
from isvserver.models import OrderNotification, utcnow
from isvserver.provisioning import AppInfo, InstanceView, ProvisioningError
from isvserver.provisioning.template import render_url
from isvserver.results import (
    AUTH_FAILED,
    IN_PROGRESS,
    INSTANCE_NOT_FOUND,
    INTERNAL_ERROR,
    INVALID_PARAMETERS,
    SUCCESS,
)
from isvserver.runtime import Runtime, runtime

MARKETPLACE = "koogallery"
INTERFACE = "koogallery.v2"
NOTIFY_ACTIVITY = "orderNotify"
SCENE_ACTIONS = {
    "TRIAL_TO_FORMAL": Action.CONVERT_TRIAL,
    "RENEWAL": Action.RENEW,
    "UNSUBSCRIBE_RENEWAL_PERIOD": Action.UNSUBSCRIBE_RENEWAL,
    "RENEWAL_CHANGE": Action.CHANGE_RENEWAL,
}
LIFECYCLE_ANSWERS: dict[type[lifecycle.LifecycleError], tuple[str, str]] = {
    lifecycle.InstanceNotFound: (INSTANCE_NOT_FOUND, "instance does not exist"),
    lifecycle.InstanceReleased: (INSTANCE_NOT_FOUND, "instance has been released"),
    lifecycle.StillProvisioning: (IN_PROGRESS, "instance is still being provisioned; try again later"),
}

log = logging.getLogger("isvserver.koogallery")
bp = Blueprint("koogallery", __name__)

Reply = dict[str, Any]


def reply(code: str, message: str, **fields: Any) -> Reply:
    """A reply body: resultCode, resultMsg, then the activity's own fields."""
    return {"resultCode": code, "resultMsg": message, **fields}


def signed_response(body: Reply, key: str, status: int = 200, activity: str | None = None) -> Response:
    """Serialise once, sign exactly those bytes, send them untouched."""
    schema = (
        REPLIES.get(activity or "", RESULT_OUT)
        if body["resultCode"] in (SUCCESS, IN_PROGRESS)
        else RESULT_OUT
    )
    data = json.dumps(_dumped(schema, body), ensure_ascii=True, separators=(",", ":")).encode("ascii")
    response = Response(data, status=status, content_type="application/json")
    response.headers["Body-Sign"] = body_sign(key, data)
    return response


def _dumped(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    """What `schema.dump(data)` gives for the reply schemas, without marshmallow's per-call machinery.

    The schema's fields in its order, each only when present and not None (OutSchema drops empty
    values), strings as str, nested schemas and lists of them the same way (see _plan).
    """
    out = {}
    for name, key, nested, many in _plan(schema):
        value = data.get(name)
        if value is None:
            continue
        if nested is None:
            out[key] = str(value)
        elif many:
            out[key] = [_dumped(nested, item) for item in value]
        else:
            out[key] = _dumped(nested, value)
    return out


@lru_cache(maxsize=32)
def _plan(schema: Schema) -> tuple[tuple[str, str, Schema | None, bool], ...]:
    """(name, key in the reply, nested schema or None, is a list) of each field, in dump order."""
    plan = []
    for name, field in schema.dump_fields.items():
        inner = field.inner if isinstance(field, fields.List) else field
        if isinstance(inner, fields.Nested):
            plan.append((name, field.data_key or name, inner.schema, inner is not field))
        elif isinstance(inner, fields.String) and inner is field:
            plan.append((name, field.data_key or name, None, False))
        else:
            raise TypeError(f"{type(schema).__name__}.{name}: only strings and nested schemas are dumped")
    return tuple(plan)


def envelope(status: int, code: str, message: str) -> Response:
    """A signed resultCode/resultMsg reply outside the produce flow, keyed with the first active key."""
    settings = runtime().settings
    try:
        active = keystore.verification_keys(settings, keystore.BASIC)
    except Exception:  # the database cannot say which keys are retired: the first configured one
        active = ()
    return signed_response(reply(code, message), (active or settings.access_keys)[0], status=status)


def _parse_json(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""

    def no_constants(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _ids_for_log(call: CallRecord, body: dict[str, Any]) -> None:
    """Copy the business ids of the body into the call record (strings only; callbacks cuts them to fit)."""

    def pick(name: str) -> str | None:
        value = body.get(name)
        return value if isinstance(value, str) else None

    call.activity = pick("activity")
    call.test_flag = is_test_flag(body.get("testFlag"))
    call.instance_id = pick("instanceId")
    call.order_id = pick("orderId")
    call.order_line_id = pick("orderLineId")
    call.business_id = pick("businessId")


@bp.route("", methods=["POST"], strict_slashes=False, provide_automatic_options=False)
def produce() -> Response:
    """Every V2 basic call: authenticate, validate, dispatch on `activity`, answer signed."""
    with held_for_call():
        return _produce()


def _produce() -> Response:
    rt = runtime()
    started = g.call_started = time.perf_counter()
    call = CallRecord(request_id=g.request_id, interface=INTERFACE)
    status = 200
    raw = _read_body(rt.settings.max_body_bytes)
    if raw is None:
        raw, status = b"", 413
    body = _parse_json(raw)
    if body is not None:
        _ids_for_log(call, body)
    keys, reply_keys = _current_keys(rt, call)
    params = {name: request.args.get(name, "") for name in ("signature", "timestamp", "nonce")}
    now_ms = rt.clock()
    verification = verify(params, raw, body, keys or (), now_ms, rt.settings.signature_tolerance)
    call.verdict = verification.verdict.value
    sign_key = verification.key or reply_keys[0]
    if status == 413:
        call.verdict, call.reason = "body_too_large", f"body over {rt.settings.max_body_bytes} bytes"
        answer = reply(INVALID_PARAMETERS, f"request body is larger than {rt.settings.max_body_bytes} bytes")
    elif keys is None:
        call.verdict, call.reason = "keys_unavailable", "access keys could not be read from the database"
        answer = reply(INTERNAL_ERROR, "internal error; the call can be retried")
    elif not verification.ok:
        call.reason = verification.message
        answer = reply(verification.code, verification.message)
    else:
        try:
            g.after_commit = []
            with connected():
                answer, response, row = _verified_call(
                    rt, call, params["nonce"], int(now_ms), body, sign_key, status, started
                )
                if g.after_commit:
                    final = _run_after_commit(call, answer)
                    if final is not answer:
                        response = _signed(call, final, sign_key, status, started)
                        update_result(row, call)
            log_line(call)
            return _counted(call, response)
        except Exception:
            log.exception("internal error request_id=%s activity=%s", call.request_id, call.activity)
            answer = reply(INTERNAL_ERROR, "internal error; the call can be retried")
    response = _signed(call, answer, sign_key, status, started)
    record(call)
    return _counted(call, response)


def after_commit(step: Callable[[], Reply | None]) -> None:
    """Run `step` once the call's transaction has committed; a Reply it returns replaces the answer."""
    g.after_commit.append(step)


def _run_after_commit(call: CallRecord, answer: Reply) -> Reply:
    """The committed call's follow-up steps (queueing jobs, waiting for provisioning) and the final answer.

    A step that fails is logged and skipped: what it would queue is committed and the sweeper finds it.
    """
    for step in g.after_commit:
        try:
            answer = step() or answer
        except Exception:
            log.exception(
                "after-commit step failed request_id=%s activity=%s", call.request_id, call.activity
            )
    return answer


def _signed(call: CallRecord, answer: Reply, key: str, status: int, started: float) -> Response:
    """The signed reply; the call record gets its result and latency."""
    call.result_code = answer["resultCode"]
    call.result_msg = answer["resultMsg"]
    response = signed_response(answer, key, status=status, activity=call.activity)
    call.latency_ms = (time.perf_counter() - started) * 1000
    return response


def _counted(call: CallRecord, response: Response) -> Response:
    """Count the call in the metrics and tag the reply with its request id."""
    _count(call)
    response.headers["X-Request-Id"] = call.request_id
    return response


def _count(call: CallRecord) -> None:
    """The call in the metrics (activity labels only from the known list: input never makes a label)."""
    activity = call.activity if call.activity in REQUESTS else "unknown"
    metrics.REQUESTS.labels(INTERFACE, activity, call.result_code).inc()
    metrics.LATENCY.labels(activity).observe(call.latency_ms / 1000)
    if call.verdict == Verdict.REPLAYED_NONCE:
        metrics.DUPLICATES.labels("nonce").inc()
    if call.verdict != Verdict.VERIFIED:
        metrics.REJECTIONS.labels(call.verdict).inc()


def _duplicate_unless(changed: bool) -> None:
    """Count a call that changed nothing because it repeated an earlier one (same business key)."""
    if not changed:
        metrics.DUPLICATES.labels("business_key").inc()


def _current_keys(rt: Runtime, call: CallRecord) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The active keys of the call's interface (None when unreadable) and the keys replies are signed with."""
    interface = keystore.NOTIFY if call.activity == NOTIFY_ACTIVITY else keystore.BASIC
    try:
        with connected():
            keys = keystore.verification_keys(rt.settings, interface)
            fallback = keys or keystore.verification_keys(rt.settings, keystore.BASIC)
    except Exception:
        log.exception("access keys not readable request_id=%s", call.request_id)
        return None, rt.settings.access_keys
    return keys, fallback or rt.settings.access_keys


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (chunked bodies included).

    The app caps the stream at limit + 1 (MAX_CONTENT_LENGTH): reading one byte past the limit is how
    an over-long chunked body shows itself, since Werkzeug cuts those off silently.
    """
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
    return None if size > limit else b"".join(chunks)


def _storable(value: Any) -> bool:
    """Whether every string in `value` can be stored in both databases (no NUL, no lone surrogate)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, RecursionError):
        return False
    return "\\u0000" not in text


# Activities that change nothing: with testFlag=1 every activity is one of them.
READ_ONLY_ACTIVITIES = frozenset({"queryInstance", "changeInstanceCheck"})
Handler = Callable[[Runtime, dict[str, Any]], Reply]


def _verified_call(
    rt: Runtime,
    call: CallRecord,
    nonce: str,
    now_ms: int,
    body: dict[str, Any] | None,
    sign_key: str,
    status: int,
    started: float,
) -> tuple[Reply, Response, int]:
    """The answer to an authentic call, its signed reply and its callback_log row, committed.

    One write transaction per call holds the nonce, the change and the call's log row, and a reply
    is never sent for anything that did not commit. A call that changes nothing (queryInstance,
    changeInstanceCheck, every testFlag=1 call, a rejected request) is answered and signed with no
    transaction open and only then takes the write lock (SQLite: BEGIN IMMEDIATE) for its nonce and
    log row; a nonce already taken turns its answer into 000001. A changing call validates first and
    runs its handler inside that transaction, after the nonce.
    """
    keep_ms = 2 * rt.settings.signature_tolerance * 1000
    checked = _checked(call, body)
    if isinstance(checked, dict) or checked[0] in _READ_ONLY_HANDLERS:
        answer = checked if isinstance(checked, dict) else _handled(rt, call, *checked)
        response = _signed(call, answer, sign_key, status, started)
        with database.atomic():
            if not replay.first_use(INTERFACE, nonce, now_ms, keep_ms):
                answer = _replayed(call)
                response = _signed(call, answer, sign_key, status, started)
            row = store(call)
        return answer, response, row
    handler, data = checked
    with database.atomic():
        if replay.first_use(INTERFACE, nonce, now_ms, keep_ms):
            answer = _handled(rt, call, handler, data)
        else:
            answer = _replayed(call)
        response = _signed(call, answer, sign_key, status, started)
        row = store(call)
    return answer, response, row


def _replayed(call: CallRecord) -> Reply:
    """The answer to a call whose nonce was already used (nothing it would have done is kept)."""
    g.after_commit = []
    call.verdict = Verdict.REPLAYED_NONCE.value
    call.reason = "nonce was already used"
    return reply(AUTH_FAILED, "authentication failed: nonce was already used")


def _checked(call: CallRecord, body: dict[str, Any] | None) -> Reply | tuple[Handler, dict[str, Any]]:
    """The handler of an authentic call with its validated data, or the reply that rejects the call."""
    if body is None:
        call.reason = "body is not a JSON object"
        return reply(INVALID_PARAMETERS, "body must be a JSON object")
    if not _storable(body):
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
        call.reason = _describe(exc.messages)
        return reply(INVALID_PARAMETERS, f"invalid request parameters: {call.reason}")
    return (TEST_HANDLERS[activity] if data["testFlag"] == "1" else HANDLERS[activity]), data


def _handled(rt: Runtime, call: CallRecord, handler: Handler, data: dict[str, Any]) -> Reply:
    """The handler's reply, lifecycle and provisioning errors turned into their answers."""
    try:
        return handler(rt, data)
    except lifecycle.LifecycleError as exc:
        if isinstance(exc, lifecycle.ChangeRejected):
            return reply(INVALID_PARAMETERS, f"change not acceptable: {exc}"[:255])
        code, message = LIFECYCLE_ANSWERS[type(exc)]
        return reply(code, message)
    except ProvisioningError as exc:
        log.warning("provisioning failed request_id=%s: %s", call.request_id, exc)
        return reply(INTERNAL_ERROR, f"provisioning failed: {exc}"[:255])


def _describe(messages: Any) -> str:
    """`field: problem; …` from marshmallow's messages (field names and rules only, no values)."""
    if isinstance(messages, dict):
        parts = []
        for name, problems in messages.items():
            first = problems[0] if isinstance(problems, list) and problems else problems
            parts.append(f"{name}: {first if isinstance(first, str) else 'invalid'}")
        return "; ".join(parts)[:200]
    return "invalid"


def _app_info_out(info: AppInfo) -> dict[str, str | None]:
    return {
        "frontEndUrl": info.front_end_url,
        "adminUrl": info.admin_url,
        "userName": info.user_name,
        "password": info.password,
        "memo": info.memo,
    }


# --- real calls ---------------------------------------------------------------------------------


def new_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Create (once per order line) and provision the instance, waiting for it within the budget."""
    instance, created = lifecycle.create_instance(
        MARKETPLACE,
        data["orderId"],
        data["orderLineId"],
        data["businessId"],
        rt.provisioner,
        rt.settings.data_key,
    )
    _duplicate_unless(created)
    instance_id = instance.instance_id
    if created:
        _fetch_order_line(rt, data)
    if instance.state not in lifecycle.NOT_PROVISIONED:
        return reply(SUCCESS, "success", instanceId=instance_id)
    deadline = g.call_started + rt.settings.provision_budget_ms / 1000

    def provision_within_budget() -> Reply:
        rt.jobs.deliver_soon(instance_id)
        return _provisioning_answer(instance_id, lifecycle.await_provisioning(instance_id, deadline))

    after_commit(provision_within_budget)
    return reply(IN_PROGRESS, "instance is being provisioned", instanceId=instance_id)


def _provisioning_answer(instance_id: str, state: str) -> Reply:
    """newInstance's answer once the wait for provisioning has ended in `state`."""
    if state == lifecycle.State.PROVISIONING:
        return reply(IN_PROGRESS, "instance is being provisioned", instanceId=instance_id)
    if state == lifecycle.State.FAILED:
        return reply(INTERNAL_ERROR, "provisioning failed; a resend starts it again", instanceId=instance_id)
    return reply(SUCCESS, "success", instanceId=instance_id)


def _fetch_order_line(rt: Runtime, data: dict[str, Any]) -> None:
    """After commit, have the call's order line fetched from the order-query API (when AK/SK are set)."""
    after_commit(lambda: rt.jobs.fetch_soon(MARKETPLACE, data["orderId"], data["orderLineId"]))


def _recorded(rt: Runtime, instance_id: str, changed: bool) -> bool:
    """`changed`, after counting a repeat that changed nothing, or having the change just recorded
    handed (after commit) to a provisioner that is not inline."""
    _duplicate_unless(changed)
    if changed and not rt.provisioner.inline:
        after_commit(lambda: rt.jobs.deliver_soon(instance_id))
    return changed


def query_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """AppInfo of up to 100 instances, read in one query."""
    ids = split_ids(data["instanceId"])
    found = lifecycle.find_instances(ids)
    info, waiting = [], False
    for instance_id in ids:
        instance = found.get(instance_id)
        if instance is None or instance.state == lifecycle.State.RELEASED:
            continue
        app_info = lifecycle.app_info(instance, rt.settings.data_keys)
        if instance.state in lifecycle.NOT_PROVISIONED or app_info is None:
            waiting = True
            info.append({"instanceId": instance_id})
        else:
            info.append({"instanceId": instance_id, "appInfo": _app_info_out(app_info)})
    if not info:
        return reply(INSTANCE_NOT_FOUND, "instance does not exist")
    if waiting:
        return reply(IN_PROGRESS, "an instance is still being provisioned", info=info)
    return reply(SUCCESS, "success", info=info)


def refresh_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Renewal, trial to formal, unsubscribed renewal period or renewal change: a new expiry."""
    changed = lifecycle.change_expiry(
        data["instanceId"],
        SCENE_ACTIONS[data["scene"]],
        data["orderId"],
        data["orderLineId"],
        data["expireTime"],
        data.get("productId"),
        outbox=not rt.provisioner.inline,
    )
    if _recorded(rt, data["instanceId"], changed):
        _fetch_order_line(rt, data)
    return reply(SUCCESS, "success")


def update_instance_status(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Freeze (keep data) or unfreeze."""
    changed = lifecycle.set_frozen(
        data["instanceId"], data["status"] == "FREEZE", outbox=not rt.provisioner.inline
    )
    _recorded(rt, data["instanceId"], changed)
    return reply(SUCCESS, "success")


def release_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Mark released; a repeated release succeeds."""
    changed = lifecycle.release(
        data["instanceId"], data.get("orderId"), data.get("orderLineId"), outbox=not rt.provisioner.inline
    )
    _recorded(rt, data["instanceId"], changed)
    return reply(SUCCESS, "success")


def upgrade_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Record the upgrade order (the new spec is read from the order-query API)."""
    changed = lifecycle.upgrade(
        data["instanceId"], data["orderId"], data["orderLineId"], outbox=not rt.provisioner.inline
    )
    if _recorded(rt, data["instanceId"], changed):
        _fetch_order_line(rt, data)
    return reply(SUCCESS, "success")


def change_instance_check(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Whether the product accepts the renewal change."""
    lifecycle.check_change(data["instanceId"], data["productInfo"], rt.provisioner)
    return reply(SUCCESS, "success")


def order_notify(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Remember the notified order line (one row per line, counted)."""
    now = utcnow()
    OrderNotification.insert(
        marketplace=MARKETPLACE,
        order_id=data["orderId"],
        order_line_id=data["orderLineId"],
        times_received=1,
        first_received_at=now,
        last_received_at=now,
    ).on_conflict(
        conflict_target=[
            OrderNotification.marketplace,
            OrderNotification.order_id,
            OrderNotification.order_line_id,
        ],
        update={
            OrderNotification.times_received: OrderNotification.times_received + 1,
            OrderNotification.last_received_at: now,
        },
    ).execute()
    _fetch_order_line(rt, data)
    return reply(SUCCESS, "success")


HANDLERS: dict[str, Callable[[Runtime, dict[str, Any]], Reply]] = {
    "newInstance": new_instance,
    "queryInstance": query_instance,
    "refreshInstance": refresh_instance,
    "updateInstanceStatus": update_instance_status,
    "releaseInstance": release_instance,
    "upgradeInstance": upgrade_instance,
    "changeInstanceCheck": change_instance_check,
    "orderNotify": order_notify,
}


# --- testFlag=1: verified and logged, never touching a real instance (spec §5 decision) -------------


def test_instance_id(order_id: str, order_line_id: str) -> str:
    """The deterministic instanceId answered to a debug newInstance of this order line."""
    return "test-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"koogallery:{order_id}\n{order_line_id}"))


def test_new_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """A deterministic id, nothing created."""
    return reply(
        SUCCESS, "success (debug request)", instanceId=test_instance_id(data["orderId"], data["orderLineId"])
    )


def test_query_instance(rt: Runtime, data: dict[str, Any]) -> Reply:
    """The configured test appInfo for every id."""
    info = []
    for instance_id in split_ids(data["instanceId"]):
        if rt.settings.test_app_info is not None:
            app_info = dict(rt.settings.test_app_info)
        else:
            ids = InstanceView(instance_id, MARKETPLACE, "", "", None, None, False)
            settings = rt.settings
            app_info = {"frontEndUrl": render_url(settings.frontend_url_template, ids)}
            if settings.admin_url_template:
                app_info["adminUrl"] = render_url(settings.admin_url_template, ids)
            app_info["memo"] = "debug request (testFlag=1): no real instance"
        info.append({"instanceId": instance_id, "appInfo": app_info})
    return reply(SUCCESS, "success (debug request)", info=info)


def test_success(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Success, nothing touched."""
    return reply(SUCCESS, "success (debug request)")


TEST_HANDLERS: dict[str, Callable[[Runtime, dict[str, Any]], Reply]] = {
    **dict.fromkeys(HANDLERS, test_success),
    "newInstance": test_new_instance,
    "queryInstance": test_query_instance,
}

# The handlers that only read: answered before the call's write transaction (see _verified_call).
_READ_ONLY_HANDLERS = frozenset({*(HANDLERS[a] for a in READ_ONLY_ACTIVITIES), *TEST_HANDLERS.values()})
