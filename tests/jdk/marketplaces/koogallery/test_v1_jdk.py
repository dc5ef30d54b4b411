"""V1 against the JDK: the authToken (Java's TreeMap order, HMAC-SHA256 keyed key + timeStamp), what V1
decrypts (mobilePhone/email encrypted by Java) and encrypts (appInfo decrypted by Java), both AES sizes,
and the Java license verifier of examples/ (spec §2.3, §4)."""

from __future__ import annotations

import string
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from isvserver import licenses
from isvserver.freshness import Verdict
from isvserver.marketplaces.koogallery import credentials
from isvserver.marketplaces.koogallery.v1 import auth, buyers
from isvserver.marketplaces.koogallery.v1.handlers import encrypted_app_info
from isvserver.marketplaces.koogallery.v1.marketplace import signed_query

from support.jdk import JavaChecker, java_checker

pytestmark = pytest.mark.jdk

HERE = Path(__file__).parent
ROOT = HERE.parents[3]
CHECKS = settings(max_examples=200, deadline=None)
TS = "20240101120000000"
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10).filter(
    lambda n: n not in ("authToken", "timeStamp")
)
values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
ivs = st.text(alphabet=credentials.IV_ALPHABET, min_size=16, max_size=16)


@pytest.fixture(scope="session")
def v1_jdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JavaChecker]:
    yield from java_checker(tmp_path_factory, HERE / "V1CrossCheck.java")


@pytest.fixture(scope="session")
def aes_jdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JavaChecker]:
    yield from java_checker(
        tmp_path_factory,
        HERE / "CrossCheck.java",
        ("--add-opens", "java.base/sun.security.provider=ALL-UNNAMED"),
    )


@CHECKS
@given(key=st.text(min_size=1, max_size=40), params=st.dictionaries(names, values, min_size=1, max_size=8))
@example(key="k", params={"\uff21": "1", "\U0001f600": "2", "a": "3"})  # UTF-16 order, not code points
def test_auth_token_matches_java(v1_jdk: JavaChecker, key: str, params: dict[str, str]) -> None:
    full = {**params, "timeStamp": TS}
    pairs = [x for item in full.items() for x in item]
    javas = v1_jdk.ask("token", key, *pairs)
    assert auth.auth_token(key, full) == javas
    raw = signed_query(key, params, TS)
    checked = auth.verify(raw, ["other", key], 0, 0)
    assert checked.verdict == Verdict.VERIFIED and checked.token == javas


@CHECKS
@given(
    key=st.text(min_size=1, max_size=60),
    mobile=st.text(alphabet=string.digits + "+-", min_size=1, max_size=32),
    email=st.emails().filter(lambda e: len(e) <= 79),
    iv=ivs,
    encrypt_type=st.sampled_from([1, 2]),
)
def test_buyer_fields_encrypted_by_java_decrypt(
    aes_jdk: JavaChecker, key: str, mobile: str, email: str, iv: str, encrypt_type: int
) -> None:
    bits = 256 if encrypt_type == 1 else 128
    data = {
        "mobilePhone": aes_jdk.ask("enc", key, bits, iv, mobile),
        "email": aes_jdk.ask("enc", key, bits, iv, email),
    }
    assert buyers.decrypted(data, key, encrypt_type) == {"mobilePhone": mobile, "email": email}
    with pytest.raises(buyers.BadCiphertext):
        buyers.decrypted({"email": aes_jdk.ask("enc", key + "x", bits, iv, email)}, key, encrypt_type)


@CHECKS
@given(
    key=st.text(min_size=1, max_size=60),
    user=st.text(max_size=79).filter(lambda s: 0 < len(s.encode()) <= 79),
    password=st.text(max_size=79).filter(lambda s: 0 < len(s.encode()) <= 79),
    encrypt_type=st.sampled_from([1, 2]),
)
def test_app_info_v1_sends_decrypts_in_java(
    aes_jdk: JavaChecker, key: str, user: str, password: str, encrypt_type: int
) -> None:
    bits = 256 if encrypt_type == 1 else 128
    out = encrypted_app_info(
        {"frontEndUrl": "https://x", "userName": user, "password": password}, key, encrypt_type
    )
    assert len(out["userName"]) <= 128 and len(out["password"]) <= 128
    assert aes_jdk.ask("dec", key, bits, out["userName"]) == user.encode().hex()
    assert aes_jdk.ask("dec", key, bits, out["password"]) == password.encode().hex()


def test_the_java_license_verifier_example(tmp_path: Path) -> None:
    seed_text, public = licenses.keygen()
    seed = licenses._unb64(seed_text)
    grant = licenses.Grant("lid", "inst", "sku", datetime(2099, 1, 1), 3, "koogallery", datetime(2024, 1, 1))
    token = licenses.issue(seed, grant)
    example_source = ROOT / "examples" / "LicenseVerify.java"
    good = subprocess.run(
        ["java", str(example_source), public, token], capture_output=True, text=True, timeout=120
    )
    assert good.returncode == 0, good.stderr
    assert '"iid":"inst"' in good.stdout and '"ver":3' in good.stdout
    head, body, sig = token.split(".")
    forged = subprocess.run(
        ["java", str(example_source), public, f"{head}.{body}.{sig[::-1]}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert forged.returncode != 0
    expired = licenses.issue(
        seed, licenses.Grant("l", "i", "s", datetime(2001, 1, 1), 1, "k", datetime(2000, 1, 1))
    )
    late = subprocess.run(
        ["java", str(example_source), public, expired], capture_output=True, text=True, timeout=120
    )
    assert late.returncode != 0 and "expired" in late.stderr
