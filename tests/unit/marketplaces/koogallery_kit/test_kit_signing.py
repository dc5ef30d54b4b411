"""Kit sync request authentication (spec §2.2): known answers, rotation, raw vs canonical, verdicts."""

from __future__ import annotations

import json

import pytest

from isvserver.marketplaces.koogallery_kit import signing
from isvserver.marketplaces.koogallery_kit.signing import Verdict, kit_signature, matching_key, verify

KEY = "9fa6c870-8bb0-4e9b-b71e-4c223300156f"
NONCE = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA"
TS = "1680508066618"
BODY = (
    '{"domainName":"example.huaweicloud.com","flag":1,"instanceId":"10e758d0-31ad-4c4b-8f1b-81d03469a10e",'
    '"name":"华为测试企业","orderId":"CS2211181819B4LVS","tenantCode":"hwtest",'
    '"tenantId":"68cbc86abc2018ab880d92f36422fa0e","testFlag":0,"timeStamp":"20220420114117642"}'
).encode()
# Computed with `openssl dgst -sha256 -hmac KEY` over KEY + NONCE + TS + BODY.
KNOWN = "FAAD2DD747C92E7D96D26C91D96D68C4A5738E5970A5E7B6694ED9584D820D7F"
# The basic interface's formula (inner HMAC of the body) over the same input: must not verify here.
BASIC_STYLE = "CEA4DFC77F33497EE3C6E968D6E7C75CC0F61CC5FD4FECB89632D3287A4E1C7D"
NOW_MS = 1680508066618


def headers(sign: str = KNOWN, ts: str = TS, nonce: str = NONCE) -> dict[str, str]:
    return {"x-sign": sign, "x-timestamp": ts, "x-nonce": nonce}


def check(hdrs: dict[str, str], raw: bytes = BODY, keys: list[str] | None = None, now: float = NOW_MS):
    return verify(hdrs, raw, json.loads(raw), [KEY] if keys is None else keys, now, 60)


def test_known_answers() -> None:
    assert kit_signature(KEY, NONCE, TS, BODY) == KNOWN
    assert (
        kit_signature("k", NONCE, TS, b"{}")
        == "13A869A93ACB6B383C1AE60B5AB18C15F299A56219A32A31D507E15BFD0D563E"
    )


def test_known_body_is_already_canonical() -> None:
    assert signing.canonical_payload(json.loads(BODY)) == BODY


def test_verified_call_names_key_and_nonce() -> None:
    result = check(headers())
    assert result.ok and result.verdict == Verdict.VERIFIED == "verified"
    assert (result.code, result.message) == ("000000", "success")
    assert result.key == KEY and result.nonce == NONCE and result.timestamp_ms == NOW_MS


def test_lower_and_upper_case_both_verify() -> None:
    assert check(headers(KNOWN.lower())).ok
    assert check(headers(KNOWN.upper())).ok
    assert check(headers(KNOWN[:32].lower() + KNOWN[32:])).ok


@pytest.mark.parametrize("position", [0, 31, 63])
def test_one_wrong_character_fails(position: int) -> None:
    wrong = "0" if KNOWN[position] != "0" else "1"
    sign = KNOWN[:position] + wrong + KNOWN[position + 1 :]
    result = check(headers(sign))
    assert result.verdict == Verdict.BAD_SIGNATURE and result.code == "000001" and result.key is None


def test_basic_interface_style_signature_does_not_verify() -> None:
    assert check(headers(BASIC_STYLE)).verdict == Verdict.BAD_SIGNATURE


@pytest.mark.parametrize("sign", ["", "zz" * 32, KNOWN[:-1], KNOWN + "0", "é" * 64, KNOWN[:-2] + " 0"])
def test_malformed_sign_is_an_auth_failure(sign: str) -> None:
    result = check(headers(sign))
    assert result.code == "000001"
    assert matching_key([KEY], sign, NONCE, TS, BODY, json.loads(BODY)) is None


def test_missing_sign_header() -> None:
    result = check({"x-timestamp": TS, "x-nonce": NONCE})
    assert result.verdict == Verdict.MISSING_SIGNATURE and result.code == "000001"


@pytest.mark.parametrize(
    ("hdrs", "verdict"),
    [
        ({"x-sign": KNOWN, "x-nonce": NONCE}, Verdict.MISSING_TIMESTAMP),
        (headers(ts=""), Verdict.MISSING_TIMESTAMP),
        ({"x-sign": KNOWN, "x-timestamp": TS}, Verdict.MISSING_NONCE),
        (headers(nonce=""), Verdict.MISSING_NONCE),
        (headers(ts="16805080666"), Verdict.BAD_TIMESTAMP),
        (headers(ts="168050806661a"), Verdict.BAD_TIMESTAMP),
        (headers(ts="١٦٨٠٥٠٨٠٦٦٦١٨"), Verdict.BAD_TIMESTAMP),
        (headers(nonce="x" * 129), Verdict.BAD_NONCE),
        (headers(nonce="nonce\n"), Verdict.BAD_NONCE),
        (headers(nonce="nöncé"), Verdict.BAD_NONCE),
    ],
)
def test_parameter_problems_are_invalid_parameters(hdrs: dict[str, str], verdict: Verdict) -> None:
    result = check(hdrs)
    assert result.verdict == verdict and result.code == "000002" and not result.ok


def test_header_names_are_case_insensitive() -> None:
    assert check({"X-Sign": KNOWN, "X-Timestamp": TS, "X-NONCE": NONCE}).ok


def test_seconds_timestamp_and_two_sided_window() -> None:
    seconds = "1680508066"
    sign = kit_signature(KEY, NONCE, seconds, BODY)
    assert check(headers(sign, ts=seconds), now=1680508066000).ok
    assert check(headers(), now=NOW_MS + 60_000).ok
    assert check(headers(), now=NOW_MS - 60_000).ok
    assert check(headers(), now=NOW_MS + 60_001).verdict == Verdict.STALE_TIMESTAMP
    assert check(headers(), now=NOW_MS - 60_001).verdict == Verdict.STALE_TIMESTAMP
    assert check(headers(), now=NOW_MS - 60_001).code == "000002"


def test_rotation_any_key_verifies_and_none_configured_fails() -> None:
    assert check(headers(), keys=["new-key", KEY]).key == KEY
    assert check(headers(), keys=["new-key"]).verdict == Verdict.BAD_SIGNATURE
    result = check(headers(), keys=[])
    assert result.verdict == Verdict.NO_KEY and result.code == "000001"


def test_canonical_form_verifies_when_raw_bytes_differ() -> None:
    body = {"testFlag": 0, "flag": 2, "appId": "应用", "clientId": None}
    pretty = json.dumps(body, indent=2).encode()
    canonical = '{"appId":"应用","flag":2,"testFlag":0}'.encode()
    assert signing.canonical_payload(body) == canonical
    sign = kit_signature(KEY, NONCE, TS, canonical)
    assert verify(headers(sign), pretty, body, [KEY], NOW_MS, 60).ok
    raw_sign = kit_signature(KEY, NONCE, TS, pretty)
    assert verify(headers(raw_sign), pretty, body, [KEY], NOW_MS, 60).ok
    # integers stay numbers: a body signed with "flag":"2" is another payload
    as_string = canonical.replace(b'"flag":2', b'"flag":"2"')
    assert verify(
        headers(kit_signature(KEY, NONCE, TS, as_string)), pretty, body, [KEY], NOW_MS, 60
    ).code == ("000001")


def test_nested_objects_keep_their_order_in_canonical_form() -> None:
    body = {"b": {"z": 1, "a": 2}, "a": [{"y": None}]}
    assert signing.canonical_payload(body) == b'{"a":[{"y":null}],"b":{"z":1,"a":2}}'


def test_body_without_a_canonical_form_still_verifies_raw() -> None:
    raw = b'{"name":"\\ud800"}'
    sign = kit_signature(KEY, NONCE, TS, raw)
    assert verify(headers(sign), raw, json.loads(raw), [KEY], NOW_MS, 60).ok
    assert verify(headers(KNOWN), raw, json.loads(raw), [KEY], NOW_MS, 60).code == "000001"


def test_repr_names_no_secret() -> None:
    text = repr(check(headers()))
    assert KEY not in text and NONCE not in text


def test_a_rejected_verdict_keeps_the_time_the_call_claimed() -> None:
    """Stale, wrongly signed or keyless: the verdict tells the call's time (ms) once it could be read."""
    assert check(headers(), now=NOW_MS + 60_001).timestamp_ms == NOW_MS
    assert check(headers("0" * 64)).timestamp_ms == NOW_MS
    assert check(headers(), keys=[]).timestamp_ms == NOW_MS
    assert check(headers(ts="168050806661a")).timestamp_ms is None


def test_a_nonce_of_exactly_128_printable_characters_verifies() -> None:
    nonce = "~" + "n" * 126 + " "
    sign = kit_signature(KEY, nonce, TS, BODY)
    assert check(headers(sign, nonce=nonce)).ok
    assert check(headers(kit_signature(KEY, nonce + "x", TS, BODY), nonce=nonce + "x")).verdict == (
        Verdict.BAD_NONCE
    )


@pytest.mark.parametrize(
    ("hdrs", "now", "keys", "message"),
    [
        (headers(), NOW_MS, None, "success"),
        ({"x-sign": KNOWN, "x-nonce": NONCE}, NOW_MS, None, "x-timestamp is missing"),
        ({"x-sign": KNOWN, "x-timestamp": TS}, NOW_MS, None, "x-nonce is missing"),
        ({"x-timestamp": TS, "x-nonce": NONCE}, NOW_MS, None, "authentication failed: x-sign is missing"),
        (
            headers(ts="16805080666"),
            NOW_MS,
            None,
            "x-timestamp must be UNIX time in milliseconds (13 digits) or seconds (10 digits)",
        ),
        (headers(nonce="x" * 129), NOW_MS, None, "x-nonce must be 1 to 128 printable ASCII characters"),
        (headers(), NOW_MS + 60_001, None, "x-timestamp is outside the accepted window; check the clock"),
        (headers(), NOW_MS, [], "authentication failed: no Kit key is configured"),
        (headers("0" * 64), NOW_MS, None, "authentication failed: x-sign does not match"),
    ],
    ids=["ok", "no-ts", "no-nonce", "no-sign", "bad-ts", "bad-nonce", "stale", "no-key", "bad-sign"],
)
def test_each_verdict_is_answered_with_its_message(
    hdrs: dict[str, str], now: float, keys: list[str] | None, message: str
) -> None:
    assert check(hdrs, keys=keys, now=now).message == message
