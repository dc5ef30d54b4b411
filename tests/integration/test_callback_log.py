"""The callback log: one row and one log line per call, with ids and verdict, never a secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from typing import Any
from urllib.parse import urlencode

import pytest

from isvserver import lifecycle
from isvserver.db import connected
from isvserver.models import CallLog

from support.harness import ACCESS_KEY, DATA_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY
from support.tables import ALL_MODELS

NOW_MS = 1_700_000_000_000
CALLS_LOGGER = "isvserver.calls"


def sign(key: str, payload: bytes, nonce: str, timestamp: str) -> str:
    """The spec §2.1 signature."""
    inner = hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()
    return (
        hmac.new(key.encode(), (key + nonce + timestamp + inner).encode(), hashlib.sha256).hexdigest().upper()
    )


def compact(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def log_rows() -> list[dict[str, Any]]:
    with connected():
        return list(CallLog.select().order_by(CallLog.id).dicts())


class Caller:
    """Sends signed calls at a pinned time and remembers every signature and nonce it sent."""

    def __init__(self, marketplace):
        self.marketplace = marketplace
        self.signatures: list[str] = []
        self.nonces: list[str] = []
        self.queries: list[str] = []

    def params(
        self, raw: bytes, key: str = ACCESS_KEY, timestamp: str = str(NOW_MS), nonce: str | None = None
    ) -> dict[str, str]:
        nonce = nonce or secrets.token_hex(32).upper()
        signature = sign(key, raw, nonce, timestamp)
        self.signatures.append(signature)
        self.nonces.append(nonce)
        return {"signature": signature, "timestamp": timestamp, "nonce": nonce}

    def send(self, body: dict[str, Any] | bytes, params: dict[str, str] | str | None = None, **kw):
        """POST; `params` defaults to a fresh valid signature by `key` (default the first access key)."""
        raw = body if isinstance(body, bytes) else compact(body)
        key = kw.pop("key", ACCESS_KEY)
        reply_key = kw.pop("reply_key", key)
        if params is None:
            params = self.params(raw, key)
        query = params if isinstance(params, str) else urlencode(params)
        self.queries.append(query)
        return self.marketplace.send(raw, query=query, reply_key=reply_key)


@pytest.fixture
def caller(marketplace, clock):
    clock.now_ms = NOW_MS
    return Caller(marketplace)


def one_new_row(caller: Caller, *args, **kwargs) -> tuple[Any, dict[str, Any]]:
    """Send a call; assert it added exactly one callback_log row carrying its request id; return both."""
    before = log_rows()
    answer = caller.send(*args, **kwargs)
    after = log_rows()
    assert len(after) == len(before) + 1
    row = after[-1]
    assert row["request_id"] == answer.headers["X-Request-Id"]
    assert row["result_code"] == answer.code
    assert row["result_msg"] == answer.json["resultMsg"]
    assert row["latency_ms"] > 0
    assert row["interface"] == "koogallery.v2"
    return answer, row


NEW = {"activity": "newInstance", "orderId": "CS100", "orderLineId": "CS100-000001", "businessId": "biz-100"}


def test_verified_call_row(caller):
    """A successful newInstance: activity, order/line/business ids, verdict verified, no reason."""
    answer, row = one_new_row(caller, NEW)
    assert answer.code == "000000"
    assert row["activity"] == "newInstance"
    assert (row["order_id"], row["order_line_id"], row["business_id"]) == ("CS100", "CS100-000001", "biz-100")
    assert row["instance_id"] is None
    assert row["test_flag"] is False
    assert row["verdict"] == "verified"
    assert row["reason"] is None
    assert row["result_msg"] == "success"


def test_debug_query_row_carries_test_flag_and_instance_ids(caller):
    """A testFlag=1 queryInstance logs test_flag true and the instanceId list as sent."""
    body = {"activity": "queryInstance", "instanceId": "i-1,i-2", "testFlag": "1"}
    answer, row = one_new_row(caller, body)
    assert answer.code == "000000"
    assert row["test_flag"] is True
    assert row["instance_id"] == "i-1,i-2"
    assert row["verdict"] == "verified"


def _spoil_signature(p):
    p["signature"] = p["signature"][::-1]


def _stale(p):
    p["timestamp"] = str(NOW_MS - 61_000)


def _drop(name):
    return lambda p: p.pop(name)


def _bad_timestamp(p):
    p["timestamp"] = "yesterday"


def _bad_nonce(p):
    p["nonce"] = "x" * 129


@pytest.mark.parametrize(
    ("spoil", "verdict", "code", "reason_word"),
    [
        (_spoil_signature, "bad_signature", "000001", "signature"),
        (_stale, "stale_timestamp", "000002", "window"),
        (_drop("nonce"), "missing_nonce", "000002", "nonce"),
        (_drop("timestamp"), "missing_timestamp", "000002", "timestamp"),
        (_drop("signature"), "missing_signature", "000001", "signature"),
        (_bad_timestamp, "bad_timestamp", "000002", "timestamp"),
        (_bad_nonce, "bad_nonce", "000002", "nonce"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_rejected_call_row(caller, spoil, verdict, code, reason_word):
    """A call failing authentication is logged with its verdict, a reason, its code and the body's ids."""
    raw = compact(NEW)
    params = caller.params(raw)
    spoil(params)
    answer, row = one_new_row(caller, raw, params)
    assert answer.code == code
    assert row["verdict"] == verdict
    assert reason_word in row["reason"]
    assert row["activity"] == "newInstance"
    assert (row["order_id"], row["order_line_id"], row["business_id"]) == ("CS100", "CS100-000001", "biz-100")


def test_replayed_call_row(caller):
    """A replayed call is logged as replayed_nonce with 000001."""
    raw = compact(NEW)
    query = urlencode(caller.params(raw))
    assert caller.send(raw, query).code == "000000"
    answer, row = one_new_row(caller, raw, query)
    assert answer.code == "000001"
    assert row["verdict"] == "replayed_nonce"
    assert "nonce" in row["reason"]


def test_invalid_parameters_row_names_the_field(caller):
    """A verified call with a missing field: verdict verified, 000002, the reason names the field."""
    answer, row = one_new_row(caller, {"activity": "newInstance", "orderId": "CS1", "businessId": "b"})
    assert answer.code == "000002"
    assert row["verdict"] == "verified"
    assert "orderLineId" in row["reason"]
    assert "orderLineId" in row["result_msg"]


def test_not_json_row(caller):
    """A verified body that is not a JSON object: 000002, no activity, a reason."""
    answer, row = one_new_row(caller, b"[1,2,3]")
    assert answer.code == "000002"
    assert row["activity"] is None
    assert row["verdict"] == "verified"
    assert "JSON" in row["reason"]


def test_unknown_instance_row(caller):
    """refreshInstance of an unknown instance: 000003 with instance, order and line ids logged."""
    body = {
        "activity": "refreshInstance",
        "instanceId": "missing-1",
        "orderId": "CS7",
        "orderLineId": "CS7-000001",
        "scene": "RENEWAL",
        "expireTime": "20300101000000",
    }
    answer, row = one_new_row(caller, body)
    assert answer.code == "000003"
    assert (row["instance_id"], row["order_id"], row["order_line_id"]) == ("missing-1", "CS7", "CS7-000001")
    assert row["activity"] == "refreshInstance"


def test_order_notify_row(caller):
    """orderNotify (its own key) is logged like any call."""
    body = {"activity": "orderNotify", "orderId": "CSN", "orderLineId": "CSN-000001"}
    answer, row = one_new_row(caller, body, key=NOTIFY_KEY)
    assert answer.code == "000000"
    assert (row["activity"], row["verdict"], row["order_id"]) == ("orderNotify", "verified", "CSN")


def test_internal_error_row(caller, app, monkeypatch):
    """A crash in provisioning is answered 000005 and still logged, verdict verified."""

    def broken(instance):
        raise RuntimeError("backend down")

    monkeypatch.setattr(app.extensions["isvserver"].provisioner, "provision", broken)
    answer, row = one_new_row(caller, NEW)
    assert answer.code == "000005"
    assert row["verdict"] == "verified"
    assert row["order_id"] == "CS100"


@pytest.fixture
def isvserver_logs(caplog, app):
    """caplog, also attached to the `isvserver` logger (which the app set not to propagate)."""
    logger = logging.getLogger("isvserver")
    added = caplog.handler not in logger.handlers
    if added:
        logger.addHandler(caplog.handler)
    yield caplog
    if added:
        logger.removeHandler(caplog.handler)


def test_each_call_has_one_calls_log_line_with_its_request_id(caller, isvserver_logs):
    """Every call logs one isvserver.calls line naming the request id sent back in X-Request-Id."""
    caplog = isvserver_logs
    caplog.set_level(logging.INFO)
    raw = compact(NEW)
    bad = caller.params(raw)
    bad["signature"] = "0" * 64
    answers = [
        caller.send(NEW),
        caller.send(raw, bad),
        caller.send({"activity": "queryInstance", "instanceId": "i", "testFlag": "1"}),
        caller.send(b"not json"),
    ]
    ids = [a.headers["X-Request-Id"] for a in answers]
    assert len(set(ids)) == len(ids)
    assert all(len(i) >= 16 for i in ids)
    records = {id(r): r for r in caplog.records}.values()  # each record once, however it was routed
    lines = [r.getMessage() for r in records if r.name == CALLS_LOGGER]
    for answer, request_id in zip(answers, ids, strict=True):
        mine = [line for line in lines if f"request_id={request_id}" in line]
        assert len(mine) == 1
        assert f"code={answer.code}" in mine[0]
    assert [r["request_id"] for r in log_rows()] == ids


# --- no secret in any log line or any callback_log column -----------------------------------------


@pytest.fixture
def debug_env(env):
    env["ISV_LOG_LEVEL"] = "DEBUG"
    return env


@pytest.fixture
def all_logs(debug_env, isvserver_logs):
    """Every log record at DEBUG, the `isvserver` logger included (it does not propagate)."""
    isvserver_logs.set_level(logging.DEBUG)
    isvserver_logs.set_level(logging.DEBUG, logger="isvserver")
    return isvserver_logs


def test_secrets_never_logged_nor_stored(all_logs, caller, app, capfd, monkeypatch):
    """Across a full lifecycle, failures and an internal error, no key, signature, nonce or password leaks."""
    answer = caller.send(NEW)
    assert answer.code == "000000"
    instance_id = answer.json["instanceId"]
    queried = caller.send({"activity": "queryInstance", "instanceId": instance_id})
    assert queried.code == "000000"
    password = queried.json["info"][0]["appInfo"]["password"]
    assert len(password) >= 12

    refresh = {
        "activity": "refreshInstance",
        "instanceId": instance_id,
        "orderId": "CS101",
        "orderLineId": "CS101-000001",
        "scene": "RENEWAL",
        "expireTime": "20301231235959000",
    }
    assert caller.send(refresh, key=SECOND_ACCESS_KEY).code == "000000"
    for status in ("FREEZE", "UNFREEZE"):
        body = {"activity": "updateInstanceStatus", "instanceId": instance_id, "status": status}
        assert caller.send(body).code == "000000"
    upgrade = {
        "activity": "upgradeInstance",
        "instanceId": instance_id,
        "orderId": "U1",
        "orderLineId": "U1-1",
    }
    assert caller.send(upgrade).code == "000000"
    check = {"activity": "changeInstanceCheck", "instanceId": instance_id, "productInfo": {"sku": "big"}}
    assert caller.send(check).code == "000000"
    notify = {"activity": "orderNotify", "orderId": "CS100", "orderLineId": "CS100-000001"}
    assert caller.send(notify, key=NOTIFY_KEY).code == "000000"
    assert caller.send({**NEW, "testFlag": "1"}).code == "000000"
    assert caller.send({"activity": "newInstance", "orderId": "CS102"}).code == "000002"

    raw = compact(NEW)
    forged = caller.params(raw, key="attacker-key-123")
    assert caller.send(raw, forged).code == "000001"
    replay_query = caller.queries[0]
    assert caller.send(raw, replay_query).code == "000001"
    stale = caller.params(raw, timestamp=str(NOW_MS - 3_600_000))
    assert caller.send(raw, stale).code == "000002"

    def failing_seal(data_key, plaintext):
        raise RuntimeError("sealing failed")

    monkeypatch.setattr(lifecycle, "seal", failing_seal)
    crash = {"activity": "newInstance", "orderId": "CS103", "orderLineId": "CS103-1", "businessId": "b103"}
    assert caller.send(crash).code == "000005"
    monkeypatch.undo()

    assert caller.send({"activity": "queryInstance", "instanceId": instance_id}).code == "000000"
    release = {"activity": "releaseInstance", "instanceId": instance_id}
    assert caller.send(release).code == "000000"

    records = all_logs.records
    assert any(r.name == CALLS_LOGGER for r in records)
    assert any(r.name.startswith("peewee") and r.levelno == logging.DEBUG for r in records)
    assert any(r.exc_info or r.exc_text for r in records)  # the internal error was logged with its trace
    haystack = "\n".join(
        [
            all_logs.text,
            *(r.getMessage() for r in records),
            *(repr(r.args) for r in records),
            capfd.readouterr().err,
            *(repr(row) for row in log_rows()),
        ]
    ).lower()
    secrets_sent = {
        "access key": ACCESS_KEY,
        "second access key": SECOND_ACCESS_KEY,
        "notify key": NOTIFY_KEY,
        "data key": DATA_KEY,
        "password": password,
        **{f"signature {i}": s for i, s in enumerate(caller.signatures)},
        **{f"nonce {i}": n for i, n in enumerate(caller.nonces)},
    }
    leaked = [name for name, value in secrets_sent.items() if value.lower() in haystack]
    assert leaked == []


def test_secrets_never_stored_in_any_table_but_their_own(caller):
    """Keys, signatures and nonces appear in no table; the password only sealed (not in clear)."""
    answer = caller.send(NEW)
    instance_id = answer.json["instanceId"]
    password = caller.send({"activity": "queryInstance", "instanceId": instance_id}).json["info"][0][
        "appInfo"
    ]["password"]
    with connected():
        text = "\n".join(repr(row) for model in ALL_MODELS for row in model.select().dicts()).lower()
    for value in [
        ACCESS_KEY,
        SECOND_ACCESS_KEY,
        NOTIFY_KEY,
        DATA_KEY,
        password,
        *caller.signatures,
        *caller.nonces,
    ]:
        assert value.lower() not in text


# --- bodies the database cannot store as they are --------------------------------------------------

ODD_BODIES = {
    "lone_surrogate_order": b'{"activity":"newInstance","orderId":"\\ud800","orderLineId":"l",'
    b'"businessId":"b"}',
    "lone_surrogate_activity": b'{"activity":"\\udfffx","orderId":"o"}',
    "nul_in_ids": b'{"activity":"newInstance","orderId":"a\\u0000b","orderLineId":"l\\u0000",'
    b'"businessId":"b"}',
}


@pytest.mark.parametrize("raw", ODD_BODIES.values(), ids=ODD_BODIES.keys())
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_odd_body_still_leaves_one_row(caller, raw, signed):
    """A body with a lone surrogate or NUL in its ids is answered 000001/000002 and still logged once."""
    params = caller.params(raw)
    if not signed:
        params["signature"] = "F" * 64
    before = len(log_rows())
    answer = caller.send(raw, params)
    assert answer.code in (("000000", "000002") if signed else ("000001",))
    assert "X-Request-Id" in answer.headers
    rows = log_rows()
    assert len(rows) == before + 1
    assert rows[-1]["request_id"] == answer.headers["X-Request-Id"]
    assert rows[-1]["verdict"] == ("verified" if signed else "bad_signature")


def test_oversized_body_still_leaves_one_row(caller, settings):
    """A body over ISV_MAX_BODY_BYTES is refused (413) — and, like every call, logged once."""
    raw = b'{"activity":"newInstance","pad":"' + b"x" * settings.max_body_bytes + b'"}'
    before = len(log_rows())
    response = caller.marketplace.client.post(
        f"{settings.of('koogallery').produce_path}?{urlencode(caller.params(raw))}",
        data=raw,
        headers={"Content-Type": "application/json;charset=utf8"},
    )
    assert response.status_code == 413
    rows = log_rows()
    assert len(rows) == before + 1
    assert rows[-1]["request_id"] == response.headers.get("X-Request-Id")
