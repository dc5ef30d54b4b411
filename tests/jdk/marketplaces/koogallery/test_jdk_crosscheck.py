"""Cross-check of SHA1PRNG, AES credentials and the HMAC signatures against the JDK (spec §2.1, §3, §4)."""

from __future__ import annotations

import hashlib
import hmac
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from isvserver.marketplaces.koogallery import credentials, signing

from support.jdk import JavaChecker, java_checker, json_values

pytestmark = pytest.mark.jdk
Jdk = JavaChecker

SOURCE = Path(__file__).with_name("CrossCheck.java")
KNOWN_SEED = "9fa6c870-8bb0-4e9b-b71e-4c223300156f"
CHECKS = settings(max_examples=300, deadline=None)


@pytest.fixture(scope="session")
def jdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jdk]:
    # SHA1PRNG's state is read through sun.security.provider
    yield from java_checker(
        tmp_path_factory, SOURCE, ("--add-opens", "java.base/sun.security.provider=ALL-UNNAMED")
    )


seeds = st.text(max_size=300) | st.text(alphabet=string.hexdigits + "-", min_size=32, max_size=40)
hmac_keys = st.text(min_size=1, max_size=80)  # SecretKeySpec rejects an empty key; so does the console
ivs = st.text(alphabet=credentials.IV_ALPHABET, min_size=16, max_size=16)
fitting_plaintexts = st.text(max_size=79).filter(lambda s: len(s.encode("utf-8")) <= 79)


def test_jdk_is_the_cross_checker(jdk: Jdk) -> None:
    assert jdk.ask("keygen", KNOWN_SEED, 256) == credentials.derive_aes_key(KNOWN_SEED, 1).hex()


@CHECKS
@given(seed=seeds)
@example(seed=KNOWN_SEED)
@example(seed="")
@example(seed="密钥-ключ-🔑-é")
@example(seed="x" * 5000)
def test_aes_keys_match_keygenerator_with_sha1prng(jdk: Jdk, seed: str) -> None:
    assert jdk.ask("keygen", seed, 128) == credentials.derive_aes_key(seed, 2).hex()
    assert jdk.ask("keygen", seed, 256) == credentials.derive_aes_key(seed, 1).hex()


@CHECKS
@given(seed=st.binary(max_size=200), length=st.integers(0, 130))
def test_sha1prng_stream_matches_jdk(jdk: Jdk, seed: bytes, length: int) -> None:
    assert jdk.ask("prng", seed, length) == credentials.sha1prng(seed, length).hex()


edge_bytes = st.sampled_from([0x00, 0x01, 0x7E, 0x7F, 0x80, 0x81, 0xFE, 0xFF]) | st.integers(0, 255)


@CHECKS
@given(
    state=st.lists(edge_bytes, min_size=20, max_size=20),
    output=st.lists(edge_bytes, min_size=20, max_size=20),
)
@example(state=[0x80] * 20, output=[0xFF] + [0x01] * 19)  # no byte changes: the s[0] += 1 rule
@example(state=[0xFF] * 20, output=[0xFF] * 20)
@example(state=[0x7F] * 20, output=[0x00] * 20)
def test_sha1prng_state_update_matches_jdk(jdk: Jdk, state: list[int], output: list[int]) -> None:
    answer = jdk.ask("update", bytes(state), bytes(output))
    if answer.startswith("ERR"):
        pytest.skip(f"this JDK does not expose SecureRandom.updateState: {answer}")
    ours = bytearray(state)
    credentials._update_state(ours, bytes(output))
    assert answer == ours.hex()


@CHECKS
@given(key=st.text(max_size=60), plaintext=fitting_plaintexts, iv=ivs, encrypt_type=st.sampled_from([1, 2]))
@example(key="test-access-key", plaintext="admin", iv="AbCdEfGh12345678", encrypt_type=1)
def test_aes_credentials_match_jdk_both_ways(
    jdk: Jdk, key: str, plaintext: str, iv: str, encrypt_type: int
) -> None:
    bits = 256 if encrypt_type == 1 else 128
    ours = credentials.encrypt_credential(key, plaintext, encrypt_type, iv=iv)
    javas = jdk.ask("enc", key, bits, iv, plaintext)
    assert ours == javas
    assert jdk.ask("dec", key, bits, ours) == plaintext.encode("utf-8").hex()
    assert credentials.decrypt_credential(key, javas, encrypt_type) == plaintext


@CHECKS
@given(
    key=hmac_keys,
    nonce=st.text(alphabet=string.printable.strip(), min_size=1, max_size=128),
    timestamp=st.integers(10**12, 10**13 - 1).map(str),
    body=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
)
def test_v2_request_signature_matches_jdk(jdk: Jdk, key: str, nonce: str, timestamp: str, body: dict) -> None:
    payload = signing.canonical_payload(body)
    inner, outer = jdk.ask("sig", key, nonce, timestamp, payload).split(" ")
    assert inner == hmac.new(key.encode("utf-8"), payload, hashlib.sha256).hexdigest()
    assert signing.request_signature(key, payload, nonce, timestamp) == outer
    assert signing.matching_key(["other", key], outer.lower(), nonce, timestamp, payload, body) == key


@CHECKS
@given(key=hmac_keys, body=st.binary(max_size=400))
def test_body_sign_matches_jdk(jdk: Jdk, key: str, body: bytes) -> None:
    javas = jdk.ask("bodysign", key, body)
    assert signing.body_sign(key, body) == f'sign_type="HMAC-SHA256", signature="{javas}"'
    assert signing.body_sign_valid(key, body, f'sign_type="HMAC-SHA256", signature="{javas}"')
