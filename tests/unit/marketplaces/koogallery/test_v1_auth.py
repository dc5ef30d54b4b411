"""V1 authToken (spec §2.3), its window and replay keeping, the §4 known answers as V1 uses them, and the
Ed25519 license token."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isvserver import licenses
from isvserver.freshness import Verdict
from isvserver.marketplaces.koogallery.credentials import decrypt_credential, encrypt_credential
from isvserver.marketplaces.koogallery.v1 import auth
from isvserver.marketplaces.koogallery.v1.handlers import MAX_PLAIN_BYTES, app_info_check, encrypted_app_info
from isvserver.marketplaces.koogallery.v1.marketplace import signed_query
from isvserver.marketplaces.koogallery.v1.schemas import decode_extend_params, encode_extend_params
from isvserver.models import Instance
from isvserver.provisioning import AppInfo

KEY = "test-access-key"
TS = "20240101120000000"
NOW_MS = datetime(2024, 1, 1, 12, 0, tzinfo=UTC).timestamp() * 1000


def by_hand(key: str, pairs: dict[str, str]) -> str:
    """The spec's formula written out here, independent of isvserver's code."""
    joined = "&".join(f"{k}={pairs[k]}" for k in sorted(pairs) if k != "authToken")
    digest = hmac.new((key + pairs["timeStamp"]).encode(), joined.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def query(pairs: dict[str, str], token: str, encode_plus: bool = True) -> str:
    def q(value: str) -> str:
        return quote(value, safe="" if encode_plus else "+")

    return "&".join(f"{k}={q(v)}" for k, v in {**pairs, "authToken": token}.items())


def test_auth_token_is_the_documented_formula() -> None:
    pairs = {"timeStamp": TS, "orderId": "CS1", "activity": "newInstance", "businessId": "b-1"}
    token = by_hand(KEY, pairs)
    assert auth.auth_token(KEY, pairs) == token
    checked = auth.verify(query(pairs, token), [KEY], NOW_MS, 60)
    assert checked.verdict == Verdict.VERIFIED and checked.key == KEY and checked.params["orderId"] == "CS1"


def test_the_first_value_of_a_repeated_name_is_signed() -> None:
    pairs = {"activity": "queryInstance", "instanceId": "i-1", "timeStamp": TS}
    token = by_hand(KEY, pairs)
    raw = query(pairs, token) + "&instanceId=i-2"
    assert auth.verify(raw, [KEY], NOW_MS, 60).verdict == Verdict.VERIFIED


def test_names_sort_in_java_order_utf16() -> None:
    # U+FF21 (BMP) sorts after U+1F600 (a surrogate pair) in Java, before it by code point.
    pairs = {"\uff21": "1", "\U0001f600": "2", "timeStamp": TS}
    assert auth.joined(pairs).startswith("timeStamp=")
    assert auth.joined(pairs).index("\U0001f600") < auth.joined(pairs).index("\uff21")


def test_a_literal_plus_is_retried_with_plus_kept_and_its_values_used() -> None:
    encrypted = "AbCdEfGh12345678W43tI2dt8gxhcQWLYvk4hg+A=="  # a Base64 value holding a +
    pairs = {"activity": "newInstance", "mobilePhone": encrypted, "timeStamp": TS}
    token = by_hand(KEY, pairs)
    raw = query(pairs, token, encode_plus=False)
    assert "+" in raw
    checked = auth.verify(raw, [KEY], NOW_MS, 60)
    assert checked.verdict == Verdict.VERIFIED
    assert checked.params["mobilePhone"] == encrypted


def test_rotation_any_configured_key_verifies() -> None:
    pairs = {"activity": "queryInstance", "instanceId": "i", "timeStamp": TS}
    checked = auth.verify(query(pairs, by_hand("new-key", pairs)), ["old-key", "new-key"], NOW_MS, 60)
    assert checked.verdict == Verdict.VERIFIED and checked.key == "new-key"


@pytest.mark.parametrize(
    ("raw", "verdict"),
    [
        ("activity=x&authToken=abc", Verdict.MISSING_TIMESTAMP),
        (f"activity=x&timeStamp={TS}", Verdict.MISSING_SIGNATURE),
        ("activity=x&timeStamp=2024-01-01&authToken=a", Verdict.BAD_TIMESTAMP),
        ("activity=x&timeStamp=20241301120000000&authToken=a", Verdict.BAD_TIMESTAMP),
        ("activity=x&timeStamp=20240101120200000&authToken=a", Verdict.STALE_TIMESTAMP),
        (f"activity=x&timeStamp={TS}&authToken=a", Verdict.BAD_SIGNATURE),
    ],
)
def test_rejections(raw: str, verdict: Verdict) -> None:
    assert auth.verify(raw, [KEY], NOW_MS, 60).verdict == verdict


def test_window_zero_turns_the_check_off_and_no_key_is_refused() -> None:
    pairs = {"activity": "queryInstance", "instanceId": "i", "timeStamp": "20000101000000000"}
    raw = query(pairs, by_hand(KEY, pairs))
    assert auth.verify(raw, [KEY], NOW_MS, 60).verdict == Verdict.STALE_TIMESTAMP
    assert auth.verify(raw, [KEY], NOW_MS, 0).verdict == Verdict.VERIFIED
    assert auth.verify(raw, [], NOW_MS, 0).verdict == Verdict.NO_KEY


@settings(max_examples=300)
@given(
    params=st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(
            lambda n: n not in ("authToken", "timeStamp")
        ),
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_any_single_change_to_a_v1_query_string_fails_verification(
    params: dict[str, str], data: st.DataObject
) -> None:
    raw = signed_query(KEY, params, TS)
    assert auth.verify(raw, [KEY], NOW_MS, 0).verdict == Verdict.VERIFIED
    pairs = raw.split("&")
    index = data.draw(st.integers(0, len(pairs) - 1))
    name, _, value = pairs[index].partition("=")
    change = data.draw(st.sampled_from(["value", "drop", "name"]))
    if change == "value":
        new = data.draw(st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=4))
        pairs[index] = f"{name}={quote(value + new, safe='')}"
    elif change == "drop":
        pairs.pop(index)
    else:
        pairs[index] = f"{name}X={value}"
    assert auth.verify("&".join(pairs), [KEY], NOW_MS, 0).verdict != Verdict.VERIFIED


def test_spec_4_known_answer_is_what_v1_sends() -> None:
    assert (
        encrypt_credential(KEY, "admin", 1, "AbCdEfGh12345678") == "AbCdEfGh12345678W43tI2dt8gxhcQWLYvk4hg=="
    )
    out = encrypted_app_info({"frontEndUrl": "https://x", "userName": "admin", "password": "p@ss"}, KEY, 2)
    assert out["frontEndUrl"] == "https://x"
    assert decrypt_credential(KEY, out["userName"], 2) == "admin"
    assert decrypt_credential(KEY, out["password"], 2) == "p@ss"
    assert len(encrypt_credential(KEY, "é" * 39 + "a", 1)) <= 128  # 79 bytes fit


def test_credentials_v1_cannot_carry_are_refused_at_provisioning_only_for_v1_instances() -> None:
    v1 = Instance(creation_key="v1:instance:2:O1", marketplace="koogallery")
    v2 = Instance(creation_key="order:2:O1:O1-1", marketplace="koogallery")
    fits = AppInfo("https://x", user_name="u" * MAX_PLAIN_BYTES, password="é" * 39)
    too_long = AppInfo("https://x", password="p" * (MAX_PLAIN_BYTES + 1))
    assert app_info_check(v1, fits) is None
    assert "password is 80 UTF-8 bytes" in app_info_check(v1, too_long)
    assert app_info_check(v2, too_long) is None


def test_saas_extend_params_round_trip_and_refusals() -> None:
    encoded = encode_extend_params({"domain": "a.example", "seats": "5"})
    assert decode_extend_params(encoded) == {"domain": "a.example", "seats": "5"}
    assert decode_extend_params(quote(encoded, safe="")) == {"domain": "a.example", "seats": "5"}
    from marshmallow import ValidationError

    for bad in ("%%%", base64.b64encode(b'{"a":1}').decode(), base64.b64encode(b'[{"name":1}]').decode()):
        with pytest.raises(ValidationError):
            decode_extend_params(bad)


def test_license_token_verifies_offline_and_any_change_breaks_it() -> None:
    seed_text, public = licenses.keygen()
    seed = base64.urlsafe_b64decode(seed_text + "=")
    grant = licenses.Grant(
        "lid-1", "inst-1", "sku-1", datetime(2030, 1, 1), 1, "koogallery", datetime(2024, 1, 1)
    )
    token = licenses.issue(seed, grant)
    payload = licenses.verify(token, public)
    assert payload == {
        "lid": "lid-1",
        "iid": "inst-1",
        "sku": "sku-1",
        "exp": 1893456000,
        "iat": 1704067200,
        "ver": 1,
        "mkt": "koogallery",
    }
    assert not licenses.expired(payload, datetime(2029, 1, 1, tzinfo=UTC))
    assert licenses.expired(payload, datetime(2031, 1, 1, tzinfo=UTC))
    head, body, sig = token.split(".")
    forged = base64.urlsafe_b64encode(base64.urlsafe_b64decode(body + "==").replace(b"sku-1", b"sku-9"))
    for bad in (
        f"{head}.{forged.decode().rstrip('=')}.{sig}",
        f"{head}.{body}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}",
        "x.y",
        token + ".",
    ):
        with pytest.raises(licenses.LicenseError):
            licenses.verify(bad, public)
    with pytest.raises(licenses.LicenseError):
        licenses.verify(token, licenses.keygen()[1])
    with pytest.raises(licenses.LicenseError):
        licenses.verify(token, "short")


def test_the_python_license_verifier_example() -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).parents[4] / "examples" / "license_verify.py"
    seed_text, public = licenses.keygen()
    seed = base64.urlsafe_b64decode(seed_text + "=")
    grant = licenses.Grant("lid-9", "inst-9", "sku", None, 1, "koogallery", datetime(2024, 1, 1))
    token = licenses.issue(seed, grant)
    good = subprocess.run([sys.executable, str(example), public, token], capture_output=True, text=True)
    assert good.returncode == 0 and "'iid': 'inst-9'" in good.stdout, good.stderr
    bad = subprocess.run(
        [sys.executable, str(example), licenses.keygen()[1], token], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "InvalidSignature" in bad.stderr


def test_v1_changes_have_no_order_line_to_fetch() -> None:
    from types import SimpleNamespace

    from isvserver.marketplaces.koogallery.order_jobs import OrderJobs
    from isvserver.provisioning import InstanceView, LifecycleEvent

    view = InstanceView("i-1", "koogallery", "V1ORDER", None, "p", None, False)
    event = LifecycleEvent("evt_1", "instance.created", datetime(2024, 1, 1), view, {"kind": "created"})

    class Unreachable:
        def __getattr__(self, name: str) -> None:
            raise AssertionError("the order-query API was called for a V1 order")

    jobs = SimpleNamespace(client=Unreachable(), settings=None)
    assert OrderJobs.enrich(jobs, event) is event  # type: ignore[arg-type]
