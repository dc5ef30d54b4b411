"""Cross-check of the Kit x-sign HMAC and the clientSecret RSA-OAEP against the JDK (spec §2.2, §4)."""

from __future__ import annotations

import base64
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import example, given, settings
from hypothesis import strategies as st

from isvserver.marketplaces.koogallery_kit import client_secret, signing

from support.jdk import JavaChecker, java_checker, json_values

pytestmark = pytest.mark.jdk
KitJdk = JavaChecker

SOURCE = Path(__file__).with_name("KitCrossCheck.java")
CHECKS = settings(max_examples=300, deadline=None)
RSA_CHECKS = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="session")
def kit_jdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KitJdk]:
    yield from java_checker(tmp_path_factory, SOURCE)


@pytest.fixture(scope="module")
def kit_pair() -> tuple[bytes, bytes]:
    return client_secret.generate_key_pair()


@CHECKS
@given(
    key=st.text(min_size=1, max_size=80),
    nonce=st.text(alphabet=string.printable.strip(), min_size=1, max_size=128),
    timestamp=st.integers(10**12, 10**13 - 1).map(str),
    body=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
)
@example(
    key="9fa6c870-8bb0-4e9b-b71e-4c223300156f",
    nonce="50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA",
    timestamp="1680508066618",
    body={"flag": 1, "name": "华为", "testFlag": 0},
)
def test_x_sign_matches_jdk(kit_jdk: KitJdk, key: str, nonce: str, timestamp: str, body: dict) -> None:
    payload = signing.canonical_payload(body)
    javas = kit_jdk.ask("xsign", key, nonce, timestamp, payload)
    assert signing.kit_signature(key, nonce, timestamp, payload) == javas
    assert signing.matching_key(["other", key], javas.lower(), nonce, timestamp, payload, body) == key


@CHECKS
@given(key=st.text(min_size=1, max_size=40), raw=st.binary(max_size=300))
def test_x_sign_over_raw_bytes_matches_jdk(kit_jdk: KitJdk, key: str, raw: bytes) -> None:
    javas = kit_jdk.ask("xsign", key, "n", "1680508066618", raw)
    assert signing.matching_key([key], javas, "n", "1680508066618", raw, None) == key


plaintexts = st.text(max_size=100).filter(lambda s: "\x00" not in s)


@RSA_CHECKS
@given(mode=st.sampled_from(["sha1", "sha256", "sha256mgf256"]), plain=plaintexts)
@example(mode="sha256", plain="client-secret-01")
def test_java_encrypted_client_secret_decrypts(
    kit_jdk: KitJdk, kit_pair: tuple[bytes, bytes], mode: str, plain: str
) -> None:
    private_pem, public_pem = kit_pair
    value = kit_jdk.ask("oaep", mode, client_secret.public_key_base64(public_pem), plain)
    assert not value.startswith("ERR"), value
    assert client_secret.decrypt_client_secret(client_secret.load_private_key(private_pem), value) == plain


@RSA_CHECKS
@given(plain=plaintexts)
def test_python_encrypted_client_secret_decrypts_in_java(
    kit_jdk: KitJdk, kit_pair: tuple[bytes, bytes], plain: str
) -> None:
    private_pem, public_pem = kit_pair
    value = client_secret.encrypt_client_secret(serialization.load_pem_public_key(public_pem), plain)
    der = client_secret.load_private_key(private_pem).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    answer = kit_jdk.ask("unoaep", base64.b64encode(der).decode(), value)
    assert answer == plain.encode("utf-8").hex()
