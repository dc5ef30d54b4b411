"""Properties: signatures verify only untouched calls; any input at all gets a signed 200 with a sane code."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from isvserver import db
from isvserver.marketplaces.koogallery.schemas import ACTIVITIES
from isvserver.marketplaces.koogallery.signing import body_sign_valid, matching_key
from isvserver.marketplaces.koogallery.verify import Verdict, verify
from isvserver.models import Instance

from support.harness import ACCESS_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY

NOW_MS = 1_700_000_000_000
TOLERANCE_S = 60
PURE = settings(max_examples=100, deadline=None)
HTTP = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no slow "explain"
)
HEX = "0123456789abcdefABCDEF"
PRINTABLE_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def sign(key: str, payload: bytes, nonce: str, timestamp: str) -> str:
    """The spec §2.1 signature, written out independently of isvserver."""
    inner = hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()
    return (
        hmac.new(key.encode(), (key + nonce + timestamp + inner).encode(), hashlib.sha256).hexdigest().upper()
    )


def canonical(body: dict[str, Any]) -> bytes:
    """Spec §2.1 canonical payload: top-level keys sorted, top-level nulls dropped, compact, raw UTF-8."""
    kept = {k: body[k] for k in sorted(body) if body[k] is not None}
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode()


def replace_at(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


# --- (a) pure: sign → verify -------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=40)
nonces = st.text(PRINTABLE_ASCII, min_size=1, max_size=128)
timestamps = st.integers(10**12, 10**13 - 1).map(str)
bodies = st.binary(max_size=400)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
json_objects = st.dictionaries(st.text(max_size=12), json_values, max_size=8)


@st.composite
def key_rings(draw) -> tuple[list[str], str]:
    """Some distinct keys and the one among them that signs."""
    ring = draw(st.lists(keys, min_size=1, max_size=4, unique=True))
    return ring, draw(st.sampled_from(ring))


@PURE
@given(ring=key_rings(), body=bodies, nonce=nonces, timestamp=timestamps, drift=st.integers(-60_000, 60_000))
def test_sign_then_verify_round_trip(ring, body, nonce, timestamp, drift):
    """Any body, key ring, printable nonce and 13-digit timestamp verifies, naming the key that signed."""
    keys_, key = ring
    signature = sign(key, body, nonce, timestamp)
    params = {"signature": signature, "timestamp": timestamp, "nonce": nonce}
    result = verify(params, body, None, keys_, int(timestamp) + drift, TOLERANCE_S)
    assert result.verdict == Verdict.VERIFIED
    assert result.key == key
    assert result.timestamp_ms == int(timestamp)
    assert matching_key(keys_, signature.lower(), nonce, timestamp, body, None) == key


@PURE
@given(ring=key_rings(), body=json_objects, nonce=nonces, timestamp=timestamps, data=st.data())
def test_canonical_signature_verifies_any_reformatting(ring, body, nonce, timestamp, data):
    """Signed over the canonical form, a JSON object verifies however its top level is ordered or spaced."""
    keys_, key = ring
    shuffled = dict(data.draw(st.permutations(list(body.items()))))
    sent = json.dumps(
        shuffled, indent=data.draw(st.sampled_from([None, 1])), ensure_ascii=data.draw(st.booleans())
    )
    signature = sign(key, canonical(body), nonce, timestamp)
    raw = sent.encode()
    assert matching_key(keys_, signature, nonce, timestamp, raw, json.loads(raw)) == key


@PURE
@given(ring=key_rings(), body=bodies.filter(bool), nonce=nonces, timestamp=timestamps, data=st.data())
def test_any_single_byte_change_to_the_body_fails(ring, body, nonce, timestamp, data):
    """Changing one byte of the signed body makes the signature fail."""
    keys_, key = ring
    params = {"signature": sign(key, body, nonce, timestamp), "timestamp": timestamp, "nonce": nonce}
    index = data.draw(st.integers(0, len(body) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    changed = body[:index] + bytes([byte]) + body[index + 1 :]
    result = verify(params, changed, None, keys_, int(timestamp), TOLERANCE_S)
    assert result.verdict == Verdict.BAD_SIGNATURE
    assert matching_key(keys_, params["signature"], nonce, timestamp, changed, None) is None


@PURE
@given(ring=key_rings(), body=bodies, nonce=nonces, timestamp=timestamps, data=st.data())
def test_any_single_character_change_to_the_nonce_fails(ring, body, nonce, timestamp, data):
    """Changing one character of the nonce makes the signature fail."""
    keys_, key = ring
    signature = sign(key, body, nonce, timestamp)
    index = data.draw(st.integers(0, len(nonce) - 1))
    char = data.draw(PRINTABLE_ASCII.filter(lambda c: c != nonce[index]))
    params = {"signature": signature, "timestamp": timestamp, "nonce": replace_at(nonce, index, char)}
    assert verify(params, body, None, keys_, int(timestamp), TOLERANCE_S).verdict == Verdict.BAD_SIGNATURE


@PURE
@given(ring=key_rings(), body=bodies, nonce=nonces, timestamp=timestamps, data=st.data())
def test_any_single_digit_change_to_the_timestamp_fails(ring, body, nonce, timestamp, data):
    """Changing one digit of the timestamp makes the call fail (stale, or else a bad signature)."""
    keys_, key = ring
    signature = sign(key, body, nonce, timestamp)
    index = data.draw(st.integers(0, len(timestamp) - 1))
    digit = data.draw(st.sampled_from("0123456789").filter(lambda c: c != timestamp[index]))
    changed = replace_at(timestamp, index, digit)
    params = {"signature": signature, "timestamp": changed, "nonce": nonce}
    result = verify(params, body, None, keys_, int(timestamp), TOLERANCE_S)
    assert result.verdict in (Verdict.BAD_SIGNATURE, Verdict.STALE_TIMESTAMP)
    if abs(int(changed) - int(timestamp)) <= TOLERANCE_S * 1000:
        assert result.verdict == Verdict.BAD_SIGNATURE


@PURE
@given(
    ring=key_rings(),
    body=bodies,
    nonce=nonces,
    timestamp=timestamps,
    index=st.integers(0, 63),
    data=st.data(),
)
def test_any_single_character_change_to_the_signature_fails(ring, body, nonce, timestamp, index, data):
    """Changing one character of the signature (to another hex value or a non-hex character) fails."""
    keys_, key = ring
    signature = sign(key, body, nonce, timestamp)
    old = signature[index].lower()
    char = data.draw(st.characters().filter(lambda c: c.lower() != old))
    params = {"signature": replace_at(signature, index, char), "timestamp": timestamp, "nonce": nonce}
    assert verify(params, body, None, keys_, int(timestamp), TOLERANCE_S).verdict == Verdict.BAD_SIGNATURE


@PURE
@given(
    ring=key_rings(),
    body=bodies,
    nonce=nonces,
    timestamp=timestamps,
    offset=st.integers(-200_000, 200_000),
    tolerance=st.integers(1, 120),
)
def test_window_is_symmetric_and_inclusive(ring, body, nonce, timestamp, offset, tolerance):
    """A correctly signed call verifies exactly when |now - timestamp| <= tolerance, else it is stale."""
    keys_, key = ring
    params = {"signature": sign(key, body, nonce, timestamp), "timestamp": timestamp, "nonce": nonce}
    result = verify(params, body, None, keys_, int(timestamp) + offset, tolerance)
    expected = Verdict.VERIFIED if abs(offset) <= tolerance * 1000 else Verdict.STALE_TIMESTAMP
    assert result.verdict == expected


# --- (b) HTTP: arbitrary input only ever gets a signed 000001 / 000002 --------------------------------

PARAM_NAMES = st.sampled_from(
    ["signature", "timestamp", "nonce", "Signature", "timeStamp", "authToken", "", "x"]
)
ESCAPES = st.sampled_from(
    [
        "%",
        "%0",
        "%ZZ",
        "%00",
        "%ff",
        "%FE%FF",
        "%e9",
        "%c3%a9",
        "%ED%A0%80",
        "%ud800",
        "%2B",
        "+",
        "%26",
        "%3D",
    ]
)
JUNK = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(exclude_categories=()), max_size=20),
    ESCAPES,
    st.lists(st.one_of(ESCAPES, st.text(max_size=5)), max_size=6).map("".join),
)
PLAUSIBLE = st.one_of(
    st.just(str(NOW_MS)),
    st.just(str(NOW_MS // 1000)),
    st.text(HEX, min_size=64, max_size=64),
    st.text(PRINTABLE_ASCII, min_size=1, max_size=130),
)
PAIRS = st.lists(st.tuples(PARAM_NAMES, st.one_of(JUNK, PLAUSIBLE)), max_size=7)
QUERIES = st.one_of(
    PAIRS.map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)),
    st.text(max_size=120),
    st.builds(
        lambda sig, nonce, extra: (
            urlencode({"signature": sig, "timestamp": str(NOW_MS), "nonce": nonce}) + extra
        ),
        st.text(HEX, min_size=64, max_size=64),
        st.text(PRINTABLE_ASCII, min_size=1, max_size=128),
        st.one_of(st.just(""), PAIRS.map(lambda p: "".join(f"&{k}={v}" for k, v in p))),
    ),
)

LONE_SURROGATES = st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "\\udc00\\ud800", "x\\ud800y"])
activity_like = st.fixed_dictionaries(
    {"activity": st.one_of(st.sampled_from(ACTIVITIES), st.text(max_size=30))},
    optional={
        name: st.one_of(json_values, st.text(max_size=80))
        for name in ("orderId", "orderLineId", "businessId", "instanceId", "testFlag", "status", "scene")
    },
)


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(_encode, json_values, st.booleans()),
    st.builds(_encode, activity_like, st.booleans()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(300, 6000).map(lambda digits: b'{"activity":"newInstance","n":' + b"9" * digits + b"}"),
    st.sampled_from([b'{"n":1e999}', b'{"n":-1e999}', b'{"n":NaN}', b'{"n":Infinity}', b"null", b"", b"{}"]),
    st.builds(
        lambda field, text: f'{{"activity":"newInstance","{field}":"{text}"}}'.encode(),
        st.sampled_from(["activity", "orderId", "orderLineId", "businessId", "instanceId", "testFlag"]),
        st.lists(st.one_of(LONE_SURROGATES, st.text("ab", max_size=2)), min_size=1, max_size=3).map("".join),
    ),
)


def is_order_notify(raw: bytes) -> bool:
    """Whether the body is a JSON object whose activity is orderNotify (answered with the notify key)."""

    def reject(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=reject)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("activity") == "orderNotify"


def post(client, raw: bytes, query: str):
    return client.post(
        "/saasproduce", query_string=query, data=raw, content_type="application/json;charset=utf8"
    )


def assert_signed_failure(response, raw: bytes) -> dict[str, Any]:
    """HTTP 200, JSON {resultCode, resultMsg}, Body-Sign by the first key of the interface, 000001/000002."""
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    key = NOTIFY_KEY if is_order_notify(raw) else ACCESS_KEY
    assert body_sign_valid(key, response.data, response.headers.get("Body-Sign"))
    reply = json.loads(response.data)
    assert set(reply) == {"resultCode", "resultMsg"}
    assert reply["resultCode"] in ("000001", "000002"), reply
    assert 0 < len(reply["resultMsg"]) <= 255
    return reply


@pytest.fixture
def pinned_client(client, clock):
    clock.now_ms = NOW_MS
    return client


@HTTP
@given(query=QUERIES, raw=BODIES)
@example(query="signature=&timestamp=&nonce=", raw=b"")
@example(
    query=f"signature={'A' * 64}&timestamp={NOW_MS}&nonce=x", raw=b'{"activity":"x","orderId":"\\ud800"}'
)
def test_arbitrary_query_and_body_get_a_signed_auth_or_input_failure(pinned_client, query, raw):
    """Whatever the query string and body, the answer is a signed 200 with 000001 or 000002."""
    assert_signed_failure(post(pinned_client, raw, query), raw)


@HTTP
@given(raw=BODIES)
def test_arbitrary_body_with_well_formed_fresh_parameters_is_rejected_cleanly(pinned_client, raw):
    """A fresh timestamp and well-formed nonce and signature that does not match: signed 000001."""
    query = urlencode(
        {"signature": secrets.token_hex(32), "timestamp": str(NOW_MS), "nonce": secrets.token_hex(8)}
    )
    reply = assert_signed_failure(post(pinned_client, raw, query), raw)
    assert reply["resultCode"] == "000001"


LONE_SURROGATE_BODIES = [
    b'{"activity":"newInstance","orderId":"\\ud800","orderLineId":"l","businessId":"b"}',
    b'{"activity":"\\udfff"}',
    b'{"activity":"queryInstance","instanceId":"a\\ud83d"}',
]


@pytest.mark.parametrize("raw", LONE_SURROGATE_BODIES, ids=["order_id", "activity", "instance_id"])
def test_lone_surrogate_in_unsigned_body_is_an_auth_failure(pinned_client, raw):
    """A lone surrogate escaped in the JSON of a forged call: signed 000001, not an internal error."""
    query = urlencode({"signature": "A" * 64, "timestamp": str(NOW_MS), "nonce": "n1"})
    reply = assert_signed_failure(post(pinned_client, raw, query), raw)
    assert reply["resultCode"] == "000001"


def test_deeply_nested_body_never_causes_internal_error(pinned_client):
    """Nesting near Python's recursion limit under a well-formed, fresh, wrong signature: always 000001."""
    limit = sys.getrecursionlimit()
    codes = {}
    for depth in range(max(1, limit - 120), limit + 5):
        raw = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
        query = urlencode({"signature": "B" * 64, "timestamp": str(NOW_MS), "nonce": f"deep-{depth}"})
        response = post(pinned_client, raw, query)
        assert response.status_code == 200
        assert body_sign_valid(ACCESS_KEY, response.data, response.headers.get("Body-Sign"))
        codes.setdefault(json.loads(response.data)["resultCode"], []).append(depth)
    assert set(codes) == {"000001"}, {code: (min(d), max(d)) for code, d in codes.items()}


# --- (c) validly signed arbitrary bodies: never an internal error ------------------------------------

FIELD_VALUES = st.one_of(
    st.text(max_size=70),
    st.text(st.characters(exclude_categories=()), max_size=10),
    st.sampled_from(
        [
            "0",
            "1",
            "FREEZE",
            "UNFREEZE",
            "RENEWAL",
            "TRIAL_TO_FORMAL",
            "UNSUBSCRIBE_RENEWAL_PERIOD",
            "RENEWAL_CHANGE",
            "20300101000000",
            "20300101000000123",
            "99991231235959",
            "00000101000000",
            "20230230000000",
            "inst-existing",
            "inst-existing,nobody",
            ",,,",
            "CS1",
            "CS1-000001",
            "x" * 64,
            "x" * 65,
            ",".join(f"id{i}" for i in range(101)),
            '{"sku":"big"}',
            "[1]",
            "\ud800",
            "inst-existing\udfff",
            "a\x00b",
        ]
    ),
    st.integers(),
    st.none(),
    json_values,
)
SIGNED_BODIES = st.fixed_dictionaries(
    {"activity": st.one_of(st.sampled_from(ACTIVITIES), st.text(max_size=25))},
    optional={
        name: FIELD_VALUES
        for name in (
            "orderId",
            "orderLineId",
            "businessId",
            "instanceId",
            "testFlag",
            "scene",
            "expireTime",
            "status",
            "productId",
            "productInfo",
            "extra",
        )
    },
)


@pytest.fixture
def existing_instance(marketplace, clock):
    """An active instance the signed bodies may name, created with the current clock."""
    clock.now_ms = None
    answer = marketplace.new_instance("CS-EXIST", business_id="inst-existing")
    assert answer.code == "000000"
    assert answer.json["instanceId"] == "inst-existing"
    return "inst-existing"


@HTTP
@given(body=SIGNED_BODIES, ascii_only=st.booleans(), second_key=st.booleans())
@example(body={"activity": "queryInstance", "instanceId": "inst-existing"}, ascii_only=True, second_key=False)
@example(body={"activity": "newInstance", "orderId": "\ud800"}, ascii_only=True, second_key=False)
@example(body={"activity": "releaseInstance", "instanceId": "a\x00"}, ascii_only=True, second_key=True)
def test_validly_signed_arbitrary_body_never_internal_error(
    marketplace, existing_instance, body, ascii_only, second_key
):
    """A genuine call with any fields and values gets 000000/000002/000003/000004, signed, never 000005."""
    try:
        raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate cannot be sent raw; send it escaped
        raw = json.dumps(body).encode()
    key = SECOND_ACCESS_KEY if second_key else ACCESS_KEY
    if body["activity"] == "orderNotify":
        key = NOTIFY_KEY
    answer = marketplace.send(raw, key)
    assert answer.status == 200
    assert answer.code in ("000000", "000002", "000003", "000004"), answer.json


SIGNED_ODD_BODIES = {
    "surrogate_order_id": {
        "activity": "newInstance",
        "orderId": "\ud800",
        "orderLineId": "l",
        "businessId": "b",
    },
    "surrogate_instance_id": {"activity": "queryInstance", "instanceId": "i\udfff"},
    "surrogate_release": {"activity": "releaseInstance", "instanceId": "\ud800"},
    "nul_order_id": {"activity": "newInstance", "orderId": "a\x00b", "orderLineId": "l", "businessId": "b"},
    "nul_instance_id": {"activity": "updateInstanceStatus", "instanceId": "\x00", "status": "FREEZE"},
}


@pytest.mark.parametrize("body", SIGNED_ODD_BODIES.values(), ids=SIGNED_ODD_BODIES.keys())
def test_signed_body_with_unstorable_text_is_not_an_internal_error(marketplace, body):
    """Ids holding a lone surrogate or NUL are invalid input (000002) or unknown (000003), never 000005."""
    answer = marketplace.send(json.dumps(body).encode())
    assert answer.code in ("000002", "000003"), answer.json
    with db.connected():
        assert Instance.select().count() == 0  # refused: nothing created
