"""Spec §2.1 request authentication through the HTTP surface: parameters, window, keys, replay."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import urlencode

import pytest

from isvserver import replay
from isvserver.db import connected
from isvserver.marketplaces.koogallery.models import OrderNotification
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.models import CallLog, Instance, Nonce, RejectedCallCount, RejectedCallMinute

from support.harness import ACCESS_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY
from support.tables import ALL_MODELS

NOW_MS = 1_700_000_000_000  # a multiple of 1000, so the same instant is also a 10-digit seconds value
UNKNOWN_KEY = "not-a-configured-key-9"

DEBUG_NEW = {
    "activity": "newInstance",
    "businessId": "biz-debug",
    "orderId": "CSDEBUG",
    "orderLineId": "CSDEBUG-000001",
    "testFlag": "1",
}


def sign(key: str, payload: bytes, nonce: str, timestamp: str) -> str:
    """The spec §2.1 signature, written out independently of isvserver's signing module."""
    inner = hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()
    outer = (key + nonce + timestamp + inner).encode()
    return hmac.new(key.encode(), outer, hashlib.sha256).hexdigest().upper()


def compact(body: dict[str, Any]) -> bytes:
    """Sorted, compact, raw UTF-8 — how the marketplace sends documented bodies."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def params_for(
    raw: bytes, key: str = ACCESS_KEY, timestamp: str = str(NOW_MS), nonce: str | None = None
) -> dict[str, str]:
    """signature/timestamp/nonce for `raw`, with a fresh nonce unless one is given."""
    nonce = nonce if nonce is not None else secrets.token_hex(32).upper()
    return {"signature": sign(key, raw, nonce, timestamp), "timestamp": timestamp, "nonce": nonce}


def table_state() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table except the call log's and the rejected-call counters (which record each
    call on purpose)."""
    with connected():
        return {
            model._meta.table_name: list(model.select().order_by(model._meta.primary_key).dicts())
            for model in ALL_MODELS
            if model not in (CallLog, RejectedCallCount, RejectedCallMinute)
        }


def all_table_text() -> str:
    """Every value of every table, as text."""
    with connected():
        return "\n".join(repr(row) for model in ALL_MODELS for row in model.select().dicts().iterator())


@pytest.fixture
def pinned(clock):
    """The app's clock pinned at NOW_MS."""
    clock.now_ms = NOW_MS
    return clock


@pytest.fixture
def send(marketplace, pinned):
    """POST `raw` with these query parameters (dict or query string); check Body-Sign by `reply_key`."""

    def _send(raw: bytes, params: dict[str, str] | str, reply_key: str = ACCESS_KEY):
        query = params if isinstance(params, str) else urlencode(params)
        return marketplace.send(raw, query=query, reply_key=reply_key)

    return _send


# --- missing and malformed parameters -------------------------------------------------------------


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
@pytest.mark.parametrize(
    ("name", "code"), [("timestamp", "000002"), ("nonce", "000002"), ("signature", "000001")]
)
def test_missing_parameter(send, name, code, empty):
    """A missing or empty timestamp/nonce is invalid input; a missing signature is an auth failure."""
    raw = compact(DEBUG_NEW)
    params = params_for(raw)
    if empty:
        params[name] = ""
    else:
        del params[name]
    answer = send(raw, params)
    assert answer.status == 200
    assert answer.code == code
    assert name in answer.json["resultMsg"]


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


MALFORMED_SIGNATURES = {
    "short": lambda sig: sig[:63],
    "long": lambda sig: sig + "0",
    "non_hex_letter": lambda sig: sig[:-1] + "G",
    "leading_space": lambda sig: " " + sig[1:],
    "trailing_space": lambda sig: sig + " ",
    "fullwidth_non_ascii": _fullwidth,
    "accented_non_ascii": lambda sig: sig[:-1] + "é",
    "base64": lambda sig: "cw7C1Cr3BgkPoWFWMcTbVBINXqMvyWhJPIBkKB4eXHo=",
}


@pytest.mark.parametrize("mangle", MALFORMED_SIGNATURES.values(), ids=MALFORMED_SIGNATURES.keys())
def test_malformed_signature_is_auth_failure(send, mangle):
    """A signature that is not exactly 64 ASCII hex characters fails with 000001 (never a crash)."""
    raw = compact(DEBUG_NEW)
    params = params_for(raw)
    params["signature"] = mangle(params["signature"])
    answer = send(raw, params)
    assert answer.code == "000001"
    assert "authentication failed" in answer.json["resultMsg"]


@pytest.mark.parametrize(
    "timestamp",
    [
        "0" + str(NOW_MS),  # 14 digits, same number
        str(NOW_MS) + ".0",
        " " + str(NOW_MS),
        str(NOW_MS) + " ",
        "+" + str(NOW_MS),
        "-" + str(NOW_MS)[1:],
        _fullwidth(str(NOW_MS)),  # non-ASCII digits of the same instant
        "".join(chr(0x0660 + int(d)) for d in str(NOW_MS)),  # Arabic-Indic digits
        "1.7e12",
        str(NOW_MS)[:11],  # 11 digits
        str(NOW_MS)[:12],  # 12 digits
        str(NOW_MS // 1000)[:9],  # 9 digits
        "0x18bcfe56800",
    ],
)
def test_malformed_timestamp_is_invalid_parameters(send, timestamp):
    """Only 13 (ms) or 10 (s) ASCII digits are a timestamp; near-misses of now fail with 000002."""
    raw = compact(DEBUG_NEW)
    answer = send(raw, params_for(raw, timestamp=timestamp))
    assert answer.code == "000002"
    assert "timestamp" in answer.json["resultMsg"]


@pytest.mark.parametrize(
    "nonce",
    [
        "N" * 129,
        "0123456789ABCDEF" * 8 + "X",
        "abc\x00def",
        "\x01" + "A" * 31,
        "A" * 31 + "\x7f",
        "tab\there",
        "line\nbreak",
        "noncé",
        "nonce\u200b",
        "云商店",
    ],
    ids=["129", "129hex", "nul", "soh", "del", "tab", "newline", "accent", "zwsp", "cjk"],
)
def test_bad_nonce_is_invalid_parameters(send, nonce):
    """A nonce over 128 characters or with non-printable / non-ASCII characters fails with 000002."""
    raw = compact(DEBUG_NEW)
    answer = send(raw, params_for(raw, nonce=nonce))
    assert answer.code == "000002"
    assert "nonce" in answer.json["resultMsg"]


@pytest.mark.parametrize("nonce", ["N" * 128, "x", "Ab3-_.~!*()'", "0123456789abcdef"], ids=str)
def test_acceptable_nonces(send, nonce):
    """Any 1..128 printable ASCII characters are a nonce (up to exactly 128)."""
    raw = compact(DEBUG_NEW)
    assert send(raw, params_for(raw, nonce=nonce)).code == "000000"


@pytest.mark.parametrize(
    "case", [str.upper, str.lower, lambda s: "".join(c.lower() if i % 2 else c for i, c in enumerate(s))]
)
def test_signature_hex_case_is_ignored(send, case):
    """Upper-case (as the marketplace sends), lower-case and mixed-case hex all verify."""
    raw = compact(DEBUG_NEW)
    params = params_for(raw)
    params["signature"] = case(params["signature"])
    answer = send(raw, params)
    assert answer.code == "000000"
    assert answer.json["instanceId"].startswith("test-")


# --- the payload: raw bytes first, then the canonical form ----------------------------------------


CANONICAL_BODY = {
    "orderLineId": "CS9-000001",
    "testFlag": "1",
    "activity": "newInstance",
    "productId": None,
    "businessId": "业务-9/x",
    "orderId": "CS9",
}


def canonical(body: dict[str, Any]) -> bytes:
    """Spec §2.1: top-level keys sorted, top-level nulls dropped, compact, raw UTF-8, '/' unescaped."""
    kept = {k: body[k] for k in sorted(body) if body[k] is not None}
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode()


SENT_FORMS = {
    "unsorted_compact": lambda b: json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode(),
    "pretty_unsorted": lambda b: json.dumps(b, indent=2, ensure_ascii=False).encode(),
    "ascii_escaped": lambda b: json.dumps(b, ensure_ascii=True).encode(),
    "surrounding_whitespace": lambda b: b"  \n" + json.dumps(b, ensure_ascii=False).encode() + b"\r\n ",
    "nulls_dropped_unsorted": lambda b: json.dumps(
        {k: v for k, v in b.items() if v is not None}, separators=(", ", ": "), ensure_ascii=False
    ).encode(),
}


@pytest.mark.parametrize("form", SENT_FORMS.values(), ids=SENT_FORMS.keys())
def test_canonical_fallback_accepts_reformatted_body(send, form):
    """Signed over the canonical form but sent unsorted / spaced / escaped / with nulls: accepted."""
    sent = form(CANONICAL_BODY)
    assert sent != canonical(CANONICAL_BODY)
    answer = send(sent, params_for(canonical(CANONICAL_BODY)))
    assert answer.code == "000000"
    assert answer.json["instanceId"].startswith("test-")


def test_signature_over_raw_unsorted_bytes_is_accepted(send):
    """A body signed over exactly the bytes sent (not canonical) is accepted."""
    sent = b'{ "testFlag":"1", "orderId":"CS8", "orderLineId":"CS8-000001", "activity":"newInstance",'
    sent += b' "businessId":"b8", "memo":null }'
    assert send(sent, params_for(sent)).code == "000000"


def test_signature_over_a_different_body_is_rejected(send):
    """The canonical fallback does not accept a body whose content differs from what was signed."""
    signed = canonical(CANONICAL_BODY)
    sent = canonical({**CANONICAL_BODY, "orderId": "CS10"})
    answer = send(sent, params_for(signed))
    assert answer.code == "000001"


def test_canonical_form_sorts_top_level_keys_only(send):
    """Nested objects keep their received key order: a signature over nested-sorted keys does not verify."""
    body = {
        "testFlag": "1",
        "activity": "changeInstanceCheck",
        "productInfo": {"skuCode": "s", "amount": 1},
        "instanceId": "i-1",
    }
    sent = json.dumps(body, separators=(",", ":")).encode()
    nested_sorted = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert send(sent, params_for(nested_sorted)).code == "000001"
    top_sorted = canonical(body)
    assert top_sorted != sent
    assert send(sent, params_for(top_sorted)).code == "000000"


# --- keys: rotation and the separate orderNotify key ------------------------------------------------


def test_second_access_key_is_accepted_and_signs_the_reply(send):
    """During rotation the second key verifies, and the reply is signed with that key, not the first."""
    raw = compact({"activity": "newInstance", "orderId": "ROT", "orderLineId": "ROT-1", "businessId": "rot"})
    answer = send(raw, params_for(raw, key=SECOND_ACCESS_KEY), reply_key=SECOND_ACCESS_KEY)
    assert answer.code == "000000"
    assert not body_sign_valid(ACCESS_KEY, answer.raw, answer.headers["Body-Sign"])
    with connected():
        assert Instance.select().where(Instance.order_id == "ROT").count() == 1


def test_verified_call_with_bad_input_is_signed_with_the_verifying_key(send):
    """A call verified by the second key but failing validation (000002) is still signed with that key."""
    raw = compact({"activity": "newInstance", "orderId": "X", "testFlag": "1"})
    answer = send(raw, params_for(raw, key=SECOND_ACCESS_KEY), reply_key=SECOND_ACCESS_KEY)
    assert answer.code == "000002"


def test_internal_error_after_second_key_verified_is_signed_with_that_key(send, app, monkeypatch):
    """Spec §3: the reply is keyed with the key that verified the call — also when it then fails 000005."""

    def broken(instance):
        raise RuntimeError("product backend down")

    monkeypatch.setattr(app.extensions["isvserver"].provisioner, "provision", broken)
    raw = compact({"activity": "newInstance", "orderId": "ERR", "orderLineId": "ERR-1", "businessId": "e"})
    answer = send(raw, params_for(raw, key=SECOND_ACCESS_KEY), reply_key=SECOND_ACCESS_KEY)
    assert answer.code == "000005"


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: p.update(signature=sign(UNKNOWN_KEY, b"x", p["nonce"], p["timestamp"])),
        lambda p: p.update(timestamp=str(NOW_MS - 3_600_000)),
        lambda p: p.pop("signature"),
        lambda p: p.pop("nonce"),
    ],
    ids=["bad_signature", "stale", "no_signature", "no_nonce"],
)
def test_failed_call_reply_is_signed_with_first_access_key(send, spoil):
    """A call that fails authentication is answered signed with the first configured access key."""
    raw = compact(DEBUG_NEW)
    params = params_for(raw, key=SECOND_ACCESS_KEY)
    spoil(params)
    answer = send(raw, params, reply_key=ACCESS_KEY)
    assert answer.code in ("000001", "000002")
    assert not body_sign_valid(SECOND_ACCESS_KEY, answer.raw, answer.headers["Body-Sign"])


def test_unconfigured_key_is_rejected(send):
    """A signature made with a key the server does not hold fails with 000001."""
    raw = compact(DEBUG_NEW)
    answer = send(raw, params_for(raw, key=UNKNOWN_KEY))
    assert answer.code == "000001"
    assert "signature" in answer.json["resultMsg"]


NOTIFY = {"activity": "orderNotify", "orderId": "CSN1", "orderLineId": "CSN1-000001"}


def notifications() -> list[dict[str, Any]]:
    with connected():
        return list(OrderNotification.select().dicts())


def test_order_notify_verifies_with_notify_key_and_signs_reply_with_it(send):
    """orderNotify signed with the notify key succeeds, records the line, and its reply is signed with it."""
    raw = compact(NOTIFY)
    answer = send(raw, params_for(raw, key=NOTIFY_KEY), reply_key=NOTIFY_KEY)
    assert answer.code == "000000"
    assert not body_sign_valid(ACCESS_KEY, answer.raw, answer.headers["Body-Sign"])
    rows = notifications()
    assert [(r["order_id"], r["order_line_id"], r["times_received"]) for r in rows] == [
        ("CSN1", "CSN1-000001", 1)
    ]


@pytest.mark.parametrize("key", [ACCESS_KEY, SECOND_ACCESS_KEY])
def test_order_notify_rejects_the_access_keys(send, key):
    """The basic interface's keys do not verify orderNotify (its own key, spec §1); nothing is recorded."""
    raw = compact(NOTIFY)
    answer = send(raw, params_for(raw, key=key), reply_key=NOTIFY_KEY)
    assert answer.code == "000001"
    assert notifications() == []


def test_notify_key_does_not_verify_basic_activities(send):
    """The notify key is bound to orderNotify only: a basic activity signed with it fails with 000001."""
    raw = compact(DEBUG_NEW)
    answer = send(raw, params_for(raw, key=NOTIFY_KEY), reply_key=ACCESS_KEY)
    assert answer.code == "000001"


@pytest.fixture
def no_notify_keys(env):
    env["ISV_NOTIFY_KEYS"] = ""
    return env


def test_order_notify_without_notify_key_never_falls_back_to_access_key(no_notify_keys, send):
    """With no notify key configured, orderNotify signed with the access key still fails with 000001."""
    raw = compact(NOTIFY)
    answer = send(raw, params_for(raw, key=ACCESS_KEY), reply_key=ACCESS_KEY)
    assert answer.code == "000001"
    assert notifications() == []


# --- the window -------------------------------------------------------------------------------------


@pytest.mark.parametrize("beyond_ms", [0, 1], ids=["at_tolerance", "1ms_beyond"])
@pytest.mark.parametrize("direction", [-1, 1], ids=["past", "future"])
@pytest.mark.parametrize("unit", ["ms", "s"])
def test_window_boundary(send, clock, unit, direction, beyond_ms):
    """|now - timestamp| equal to the tolerance is accepted; 1 ms more is rejected with 000002, both ways."""
    distance = 60_000 + beyond_ms
    raw = compact(DEBUG_NEW)
    if unit == "ms":
        timestamp = str(NOW_MS + direction * distance)
        clock.now_ms = NOW_MS
    else:
        timestamp = str(NOW_MS // 1000)
        assert len(timestamp) == 10
        clock.now_ms = NOW_MS - direction * distance
    answer = send(raw, params_for(raw, timestamp=timestamp))
    if beyond_ms == 0:
        assert answer.code == "000000"
    else:
        assert answer.code == "000002"
        assert "window" in answer.json["resultMsg"]


@pytest.fixture(params=[5, 300])
def tolerance(request, env):
    """ISV_SIGNATURE_TOLERANCE set to a non-default number of seconds."""
    env["ISV_SIGNATURE_TOLERANCE"] = str(request.param)
    return request.param


def test_configured_tolerance_moves_the_boundary(tolerance, send):
    """ISV_SIGNATURE_TOLERANCE moves both edges of the window; the default 60 s no longer applies."""

    def code_at(offset_ms: int) -> str:
        raw = compact(DEBUG_NEW)
        return send(raw, params_for(raw, timestamp=str(NOW_MS + offset_ms))).code

    edge = tolerance * 1000
    assert code_at(-edge) == "000000"
    assert code_at(edge) == "000000"
    assert code_at(-edge - 1) == "000002"
    assert code_at(edge + 1) == "000002"
    default_edge = 60_001
    assert code_at(-default_edge) == ("000002" if tolerance < 60 else "000000")


# --- replay ---------------------------------------------------------------------------------------


def _real(activity: str, **fields: str) -> bytes:
    return compact({"activity": activity, **fields})


@pytest.fixture
def instance_id(send):
    """A real, active instance."""
    raw = _real("newInstance", orderId="CSR", orderLineId="CSR-000001", businessId="inst-replay")
    answer = send(raw, params_for(raw))
    assert answer.code == "000000"
    return answer.json["instanceId"]


def test_replayed_request_is_rejected_and_changes_nothing(send, instance_id):
    """Replaying a captured FREEZE after an UNFREEZE fails with 000001 and leaves every table as it was."""
    freeze = _real("updateInstanceStatus", instanceId=instance_id, status="FREEZE")
    captured = urlencode(params_for(freeze))
    assert send(freeze, captured).code == "000000"
    unfreeze = _real("updateInstanceStatus", instanceId=instance_id, status="UNFREEZE")
    assert send(unfreeze, params_for(unfreeze)).code == "000000"
    before = table_state()

    answer = send(freeze, captured)

    assert answer.code == "000001"
    assert "nonce" in answer.json["resultMsg"]
    assert table_state() == before
    assert before["instance"][0]["state"] == "active"


def test_replayed_new_instance_is_rejected(send):
    """The same signed newInstance twice: the second is 000001, one instance exists."""
    raw = _real("newInstance", orderId="CSD", orderLineId="CSD-000001", businessId="dup")
    query = urlencode(params_for(raw))
    assert send(raw, query).code == "000000"
    before = table_state()
    assert send(raw, query).code == "000001"
    assert table_state() == before
    assert len(before["instance"]) == 1


def test_replayed_order_notify_is_not_counted_again(send):
    """A replayed orderNotify fails with 000001 and its line's count stays at 1."""
    raw = compact(NOTIFY)
    query = urlencode(params_for(raw, key=NOTIFY_KEY))
    assert send(raw, query, reply_key=NOTIFY_KEY).code == "000000"
    before = table_state()
    assert send(raw, query, reply_key=NOTIFY_KEY).code == "000001"
    assert table_state() == before
    assert [r["times_received"] for r in notifications()] == [1]


def test_replayed_query_instance_is_rejected_and_logged(send, instance_id):
    """queryInstance is answered before its short write transaction: replayed, it is still 000001, its
    nonce is stored once, and its log row says replayed_nonce."""
    raw = _real("queryInstance", instanceId=instance_id)
    query = urlencode(params_for(raw))
    assert send(raw, query).code == "000000"
    before = table_state()
    answer = send(raw, query)
    assert answer.code == "000001"
    assert "nonce" in answer.json["resultMsg"]
    assert "info" not in answer.json
    assert table_state() == before
    with connected():
        last = CallLog.select().order_by(CallLog.id.desc()).first()
    assert (last.activity, last.verdict, last.result_code) == ("queryInstance", "replayed_nonce", "000001")


def test_same_nonce_with_other_body_and_timestamp_is_rejected(send):
    """A nonce already used is refused even under a new body, timestamp and valid signature."""
    nonce = secrets.token_hex(32).upper()
    first = compact(DEBUG_NEW)
    assert send(first, params_for(first, nonce=nonce)).code == "000000"
    before = table_state()
    other = _real("newInstance", orderId="CSO", orderLineId="CSO-000001", businessId="other")
    answer = send(other, params_for(other, nonce=nonce, timestamp=str(NOW_MS + 1)))
    assert answer.code == "000001"
    assert table_state() == before
    answer = send(other, params_for(other, key=SECOND_ACCESS_KEY, nonce=nonce), reply_key=SECOND_ACCESS_KEY)
    assert answer.code == "000001"
    assert table_state() == before


def test_rejected_call_does_not_burn_its_nonce(send):
    """A nonce sent with a bad signature is not stored: the genuine call with that nonce still succeeds."""
    nonce = secrets.token_hex(32).upper()
    raw = compact(DEBUG_NEW)
    forged = params_for(raw, key=UNKNOWN_KEY, nonce=nonce)
    assert send(raw, forged).code == "000001"
    assert send(raw, params_for(raw, nonce=nonce)).code == "000000"


def test_nonces_are_stored_only_as_sha256_digests(send, instance_id):
    """Accepted nonces are kept as 64-hex SHA-256 digests; the nonce text appears in no table."""
    nonces = ["PLAINNONCE" + secrets.token_hex(8).upper(), "lower-nonce-" + secrets.token_hex(8), "n" * 128]
    for nonce in nonces:
        raw = _real("queryInstance", instanceId=instance_id)
        assert send(raw, params_for(raw, nonce=nonce)).code == "000000"
    with connected():
        digests = [row.digest for row in Nonce.select()]
    assert len(digests) == len(nonces) + 1  # + the newInstance of the fixture
    assert all(len(d) == 64 and set(d) <= set("0123456789abcdef") for d in digests)
    text = all_table_text().lower()
    for nonce in nonces:
        assert nonce.lower() not in text


def test_nonce_outlives_its_timestamp_window_despite_pruning(send, clock, monkeypatch):
    """Pruning (forced on every call) keeps a nonce while its timestamp could still pass the window."""
    monkeypatch.setattr(replay, "PRUNE_ONE_IN", 1)
    raw = compact(DEBUG_NEW)
    timestamp = str(NOW_MS + 60_000)  # accepted at NOW_MS, at the future edge of the window
    captured = urlencode(params_for(raw, timestamp=timestamp))
    assert send(raw, captured).code == "000000"
    clock.now_ms = int(timestamp) + 60_000  # the last instant at which that timestamp still passes
    other = _real("queryInstance", instanceId="nobody", testFlag="1")
    assert send(other, params_for(other, timestamp=str(int(clock.now_ms)))).code == "000000"  # prunes
    assert send(raw, captured).code == "000001"
