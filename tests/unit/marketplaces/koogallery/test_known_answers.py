"""Known answers of spec §2.1, §3 and §4, and properties of the credential encryption."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import example, given
from hypothesis import strategies as st

from isvserver.marketplaces.koogallery import credentials, signing
from isvserver.marketplaces.koogallery.credentials import (
    decrypt_credential,
    derive_aes_key,
    encrypt_credential,
)

SEED = "9fa6c870-8bb0-4e9b-b71e-4c223300156f"
KEY = "test-access-key"
IV = "AbCdEfGh12345678"
ADMIN_ENCRYPTED = "AbCdEfGh12345678W43tI2dt8gxhcQWLYvk4hg=="

NEW_INSTANCE_BODY = (
    b'{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8",'
    b'"orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}'
)
NEW_INSTANCE_TS = "1680508066618"
NEW_INSTANCE_NONCE = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA"
NEW_INSTANCE_INNER = "933006ebc2ad4994c0e2e02a628049e35eb61dd2998bc94bc2efae7b23cb8ea7"
NEW_INSTANCE_SIGNATURE = "271544ACDAC82601D0A6615631C4DB54120D5EA32FC968493C8064281E125C7A"

BODY_SIGN = re.compile(r'sign_type="HMAC-SHA256", signature="([A-Za-z0-9+/]{43}=)"')


def _raw_encrypt(data: bytes, pad: bool = True) -> str:
    """A credential built without encrypt_credential, to plant bad padding or bad UTF-8."""
    if pad:
        padder = padding.PKCS7(128).padder()
        data = padder.update(data) + padder.finalize()
    encryptor = Cipher(algorithms.AES(derive_aes_key(KEY, 1)), modes.CBC(IV.encode())).encryptor()
    return IV + base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()


# --- §4 SHA1PRNG key derivation -------------------------------------------------------------------


def test_sha1prng_key_128() -> None:
    assert derive_aes_key(SEED, 2).hex() == "6de9c7fe5a9cd34b86611483e5124a8f"


def test_sha1prng_key_256() -> None:
    assert derive_aes_key(SEED, 1).hex() == "6de9c7fe5a9cd34b86611483e5124a8fdd1fc74c4f54543ee7cd43c5195a3198"


def test_sha1prng_128_is_the_double_sha1_shortcut_but_256_is_not() -> None:
    shortcut = hashlib.sha1(hashlib.sha1(SEED.encode()).digest()).digest()  # noqa: S324
    assert derive_aes_key(SEED, 2) == shortcut[:16]
    assert derive_aes_key(SEED, 1)[:20] == shortcut
    assert derive_aes_key(SEED, 1)[20:] != hashlib.sha1(shortcut).digest()[:12]  # noqa: S324


def test_sha1prng_state_update_uses_java_signed_carry_and_the_unchanged_rule() -> None:
    # 0x80 + 0xFF + 1 in signed bytes is -128 - 1 + 1 = -128: unchanged, carry -1; then -128 + 1 - 1 ...
    state = bytearray([0x80] * 20)
    credentials._update_state(state, bytes([0xFF] + [0x01] * 19))
    assert state == bytearray([0x81] + [0x80] * 19)
    # unsigned 160-bit addition would carry 1 out of byte 0; the signed sum 127 + 127 + 1 = 255 carries 0
    state = bytearray([0x7F, 0x00] + [0x00] * 18)
    credentials._update_state(state, bytes([0x7F] + [0x00] * 19))
    assert state == bytearray([0xFF] + [0x00] * 19)
    # -1 + -1 + 1 = -1: byte 0xFF, carry -1, so the next byte 0x05 + 0 - 1 = 0x04
    state = bytearray([0xFF, 0x05] + [0x00] * 18)
    credentials._update_state(state, bytes([0xFF] + [0x00] * 19))
    assert state[:2] == bytearray([0xFF, 0x04])


@pytest.mark.parametrize("encrypt_type", [0, 3, -1, True, "1", None])
def test_derive_rejects_unknown_encrypt_type(encrypt_type: object) -> None:
    with pytest.raises(ValueError):
        derive_aes_key(KEY, encrypt_type)  # type: ignore[arg-type]


# --- §4 AES-CBC credentials -----------------------------------------------------------------------


def test_encrypt_admin_known_answer() -> None:
    assert encrypt_credential(KEY, "admin", 1, iv=IV) == ADMIN_ENCRYPTED


def test_decrypt_admin_known_answer() -> None:
    assert decrypt_credential(KEY, ADMIN_ENCRYPTED, 1) == "admin"


@pytest.mark.parametrize("encrypt_type", [1, 2])
def test_round_trip_with_random_iv(encrypt_type: int) -> None:
    value = encrypt_credential(KEY, "pässwörd-密码", encrypt_type)
    assert re.fullmatch(r"[A-Za-z0-9]{16}[A-Za-z0-9+/]+=*", value)
    assert decrypt_credential(KEY, value, encrypt_type) == "pässwörd-密码"
    assert encrypt_credential(KEY, "x", encrypt_type)[:16] != encrypt_credential(KEY, "x", encrypt_type)[:16]


def test_aes_128_and_256_differ() -> None:
    assert encrypt_credential(KEY, "admin", 2, iv=IV) != ADMIN_ENCRYPTED
    with pytest.raises(ValueError):
        decrypt_credential(KEY, ADMIN_ENCRYPTED, 2)


def test_length_limit_is_128_characters_79_utf8_bytes() -> None:
    # 79 bytes pad to 80 → 108 Base64 chars → 124; 80 bytes pad to 96 → 128 Base64 chars → 144 > 128
    assert len(encrypt_credential(KEY, "a" * 79)) == 124
    assert len(encrypt_credential(KEY, "é" * 39 + "a")) == 124
    for too_long in ("a" * 80, "é" * 40, "密" * 27):
        with pytest.raises(ValueError) as raised:
            encrypt_credential(KEY, too_long)
        assert too_long not in str(raised.value)


@pytest.mark.parametrize("iv", ["short", "AbCdEfGh1234567!", "AbCdEfGh123456789", "AbCdEfGh1234567é"])
def test_encrypt_rejects_bad_iv(iv: str) -> None:
    with pytest.raises(ValueError):
        encrypt_credential(KEY, "admin", iv=iv)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(IV, id="iv-only"),
        pytest.param(ADMIN_ENCRYPTED[:30], id="short"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4hg", id="unpadded-base64"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4h!==", id="bad-base64-char"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4hh==", id="non-canonical-base64"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4hg==\n", id="trailing-newline"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4hg==W43tI2dt8gxhcQWLYvk4hg==", id="padding-inside"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4hgAA", id="not-whole-blocks"),
        pytest.param("AbCdEfGh1234567é" + "W43tI2dt8gxhcQWLYvk4hg==", id="non-ascii-iv"),
        pytest.param(IV + "W43tI2dt8gxhcQWLYvk4hé==", id="non-ascii-base64"),
        pytest.param(_raw_encrypt(b"admin" + bytes(11), pad=False), id="bad-padding"),
        pytest.param(_raw_encrypt(b"adm\xffin"), id="bad-utf8"),
        pytest.param(encrypt_credential("another-key", "admin", iv=IV), id="wrong-key"),
    ],
)
def test_decrypt_rejects_malformed_values_without_leaking(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        decrypt_credential(KEY, value)
    message = str(raised.value)
    assert KEY not in message and "admin" not in message and "adm" not in message
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# --- §2.1 V2 request signature --------------------------------------------------------------------


def test_v2_signature_known_answer() -> None:
    inner = hmac.new(KEY.encode(), NEW_INSTANCE_BODY, hashlib.sha256).hexdigest()
    assert inner == NEW_INSTANCE_INNER
    signature = signing.request_signature(KEY, NEW_INSTANCE_BODY, NEW_INSTANCE_NONCE, NEW_INSTANCE_TS)
    assert signature == NEW_INSTANCE_SIGNATURE


def test_v2_example_body_is_already_canonical() -> None:
    assert signing.canonical_payload(json.loads(NEW_INSTANCE_BODY)) == NEW_INSTANCE_BODY


@pytest.mark.parametrize("received", [NEW_INSTANCE_SIGNATURE, NEW_INSTANCE_SIGNATURE.lower()])
def test_v2_known_signature_matches_key_in_any_case(received: str) -> None:
    keys = ["old-key", KEY]
    found = signing.matching_key(keys, received, NEW_INSTANCE_NONCE, NEW_INSTANCE_TS, NEW_INSTANCE_BODY, None)
    assert found == KEY


def test_v2_signature_over_reordered_body_matches_through_canonical_form() -> None:
    parsed = json.loads(NEW_INSTANCE_BODY)
    reordered = json.dumps(dict(reversed(parsed.items())), separators=(", ", ": ")).encode()
    assert reordered != NEW_INSTANCE_BODY
    found = signing.matching_key(
        [KEY], NEW_INSTANCE_SIGNATURE, NEW_INSTANCE_NONCE, NEW_INSTANCE_TS, reordered, json.loads(reordered)
    )
    assert found == KEY


def test_v2_signature_rejects_other_timestamp_nonce_or_key() -> None:
    args = (NEW_INSTANCE_SIGNATURE, NEW_INSTANCE_NONCE, NEW_INSTANCE_TS, NEW_INSTANCE_BODY, None)
    assert signing.matching_key(["wrong-key"], *args) is None
    assert signing.matching_key([KEY], args[0], args[1], "1680508066619", args[3], None) is None
    assert signing.matching_key([KEY], args[0], args[1][:-1] + "B", args[2], args[3], None) is None
    assert signing.matching_key([KEY], args[0][:-1], *args[1:]) is None


def test_canonical_sorts_only_the_top_level() -> None:
    body = {"b": {"z": 1, "a": 2}, "a": [{"y": 1, "x": 2}]}
    assert signing.canonical_payload(body) == b'{"a":[{"y":1,"x":2}],"b":{"z":1,"a":2}}'


def test_canonical_drops_only_top_level_nulls() -> None:
    body = {"b": None, "a": {"n": None}, "c": [None]}
    assert signing.canonical_payload(body) == b'{"a":{"n":null},"c":[null]}'


def test_canonical_keeps_non_ascii_raw_and_slash_unescaped() -> None:
    body = {"memo": "云商店 é", "url": "https://a.example/x/y"}
    expected = '{"memo":"云商店 é","url":"https://a.example/x/y"}'.encode()
    assert signing.canonical_payload(body) == expected


def test_canonical_is_compact_and_keeps_integers() -> None:
    assert signing.canonical_payload({"flag": 1, "ok": True, "s": "1"}) == b'{"flag":1,"ok":true,"s":"1"}'


# --- §3 Body-Sign ---------------------------------------------------------------------------------


def test_body_sign_format() -> None:
    body = b'{"resultCode":"000000","resultMsg":"success"}'
    header = signing.body_sign(KEY, body)
    match = BODY_SIGN.fullmatch(header)
    assert match is not None
    assert base64.b64decode(match.group(1)) == hmac.new(KEY.encode(), body, hashlib.sha256).digest()
    assert signing.body_sign_valid(KEY, body, header)


def test_body_sign_rejects_any_one_byte_change() -> None:
    body = b'{"resultCode":"000000","resultMsg":"success"}'
    header = signing.body_sign(KEY, body)
    for i in range(len(body)):
        changed = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        assert not signing.body_sign_valid(KEY, changed, header)
    assert not signing.body_sign_valid(KEY, body + b" ", header)
    assert not signing.body_sign_valid("other-key", body, header)
    assert not signing.body_sign_valid(KEY, body, header.replace("HMAC-SHA256", "hmac-sha256"))
    assert not signing.body_sign_valid(KEY, body, None)


# --- properties -----------------------------------------------------------------------------------

fitting_plaintexts = st.text().filter(lambda s: len(s.encode("utf-8")) <= 79)
keys = st.text(max_size=50)


@given(key=keys, plaintext=fitting_plaintexts, encrypt_type=st.sampled_from([1, 2]))
@example(key=KEY, plaintext="", encrypt_type=1)
@example(key=KEY, plaintext="a" * 79, encrypt_type=2)
def test_decrypt_inverts_encrypt(key: str, plaintext: str, encrypt_type: int) -> None:
    value = encrypt_credential(key, plaintext, encrypt_type)
    assert len(value) <= 128
    assert decrypt_credential(key, value, encrypt_type) == plaintext


@given(
    key=keys,
    plaintext=fitting_plaintexts,
    encrypt_type=st.sampled_from([1, 2]),
    data=st.data(),
)
def test_one_changed_character_is_rejected_or_changes_the_plaintext(
    key: str, plaintext: str, encrypt_type: int, data: st.DataObject
) -> None:
    value = encrypt_credential(key, plaintext, encrypt_type)
    index = data.draw(st.integers(credentials.IV_LENGTH, len(value) - 1), label="index")
    replacement = data.draw(
        st.sampled_from("A/+=0z\n\x00é") | st.characters(codec="ascii") | st.characters(), label="replacement"
    )
    if replacement == value[index]:
        return
    tampered = value[:index] + replacement + value[index + 1 :]
    try:
        result = decrypt_credential(key, tampered, encrypt_type)
    except ValueError:
        return
    assert result != plaintext
