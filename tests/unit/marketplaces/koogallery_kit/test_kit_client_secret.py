"""applicationSync clientSecret: RSA-OAEP under the seller's key, the three digest pairings seen."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from isvserver.marketplaces.koogallery_kit import client_secret
from isvserver.marketplaces.koogallery_kit.client_secret import (
    ClientSecretError,
    PrivateKeyError,
    decrypt_client_secret,
    encrypt_client_secret,
    generate_key_pair,
    load_private_key,
    public_key_base64,
)

SECRET = "s3cr3t-客户端-密钥"
SHA1 = hashes.SHA1()  # noqa: S303 - OAEP label hash and MGF1, as Java senders use them


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="module")
def other_pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


def _encrypt(public_pem: bytes, label: hashes.HashAlgorithm, mgf: hashes.HashAlgorithm, plain: str) -> str:
    key = serialization.load_pem_public_key(public_pem)
    scheme = padding.OAEP(mgf=padding.MGF1(mgf), algorithm=label, label=None)
    return base64.b64encode(key.encrypt(plain.encode(), scheme)).decode()


def test_generated_pair_has_the_expected_forms(pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = pair
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    key = load_private_key(private_pem)
    assert key.key_size == 3072
    bare = public_key_base64(public_pem)
    assert "\n" not in bare and "BEGIN" not in bare
    der = base64.b64decode(bare, validate=True)
    assert serialization.load_der_public_key(der).public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    ("label", "mgf"),
    [
        (hashes.SHA256(), SHA1),  # Java "OAEPWithSHA-256AndMGF1Padding" (SunJCE default MGF1)
        (hashes.SHA256(), hashes.SHA256()),  # OAEPParameterSpec with MGF1ParameterSpec.SHA256
        (SHA1, SHA1),  # "OAEPWithSHA-1AndMGF1Padding"
    ],
    ids=["sha256-mgf1sha1", "sha256-mgf1sha256", "sha1"],
)
def test_each_accepted_pairing_round_trips(pair: tuple[bytes, bytes], label, mgf) -> None:
    private_pem, public_pem = pair
    value = _encrypt(public_pem, label, mgf, SECRET)
    assert decrypt_client_secret(load_private_key(private_pem), value) == SECRET


def test_own_encryption_round_trips_and_tolerates_line_breaks(pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = pair
    value = encrypt_client_secret(serialization.load_pem_public_key(public_pem), SECRET)
    wrapped = "\r\n".join(value[i : i + 76] for i in range(0, len(value), 76))  # Java's MIME encoder
    assert decrypt_client_secret(load_private_key(private_pem), value) == SECRET
    assert decrypt_client_secret(load_private_key(private_pem), wrapped) == SECRET


def test_other_pairings_are_refused(pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = pair
    value = _encrypt(public_pem, SHA1, hashes.SHA256(), SECRET)
    with pytest.raises(ClientSecretError):
        decrypt_client_secret(load_private_key(private_pem), value)
    pkcs1 = serialization.load_pem_public_key(public_pem).encrypt(SECRET.encode(), padding.PKCS1v15())
    with pytest.raises(ClientSecretError):
        decrypt_client_secret(load_private_key(private_pem), base64.b64encode(pkcs1).decode())


def test_wrong_key_fails_without_naming_the_value(pair, other_pair) -> None:
    value = encrypt_client_secret(serialization.load_pem_public_key(other_pair[1]), SECRET)
    with pytest.raises(ClientSecretError) as caught:
        decrypt_client_secret(load_private_key(pair[0]), value)
    assert value not in str(caught.value) and SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-8] + "A" * 8 if not v.endswith("A" * 8) else v[:-8] + "B" * 8,  # garbage tail
        lambda v: v[: len(v) // 2],  # truncated
        lambda v: v[:-4],  # truncated by one Base64 quantum
        lambda v: "%%%not base64%%%",
        lambda v: v[:10] + "é" + v[11:],  # non-ASCII
        lambda v: "",
        lambda v: base64.b64encode(b"\x00" * 384).decode(),  # right length, not a ciphertext
        lambda v: v.rstrip("=") + "*",
    ],
    ids=["garbage", "half", "short", "not-base64", "non-ascii", "empty", "zeros", "bad-char"],
)
def test_undecryptable_values_raise_client_secret_error(pair: tuple[bytes, bytes], mangle) -> None:
    private_pem, public_pem = pair
    value = encrypt_client_secret(serialization.load_pem_public_key(public_pem), SECRET)
    with pytest.raises(ClientSecretError) as caught:
        decrypt_client_secret(load_private_key(private_pem), mangle(value))
    assert SECRET not in str(caught.value)


def test_non_utf8_plaintext_is_refused(pair: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = pair
    key = serialization.load_pem_public_key(public_pem)
    raw = key.encrypt(b"\xff\xfe", client_secret.ENCRYPT_PADDING)
    with pytest.raises(ClientSecretError):
        decrypt_client_secret(load_private_key(private_pem), base64.b64encode(raw).decode())


def test_small_and_unreadable_keys_are_refused_clearly() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PrivateKeyError, match=r"2048 bits.*at least 3072"):
        load_private_key(pem)
    with pytest.raises(PrivateKeyError, match="not a readable PEM"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(PrivateKeyError):
        generate_key_pair(2048)


def test_pkcs1_pem_and_str_are_accepted(pair: tuple[bytes, bytes]) -> None:
    key = load_private_key(pair[0].decode())
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert load_private_key(pkcs1).key_size == 3072


def test_each_refusal_says_what_is_wrong_word_for_word(pair: tuple[bytes, bytes]) -> None:
    """The messages an operator reads (the call log's reason, the CLI), never holding the value."""
    from cryptography.hazmat.primitives.asymmetric import ec

    private_pem, public_pem = pair
    key = load_private_key(private_pem)
    public = serialization.load_pem_public_key(public_pem)
    cases = [
        (lambda: decrypt_client_secret(key, "%%%"), "^clientSecret is not Base64$"),
        (
            lambda: decrypt_client_secret(key, base64.b64encode(b"x" * 10).decode()),
            "^clientSecret does not have the length of a ciphertext of this key$",
        ),
        (
            lambda: decrypt_client_secret(key, base64.b64encode(b"\x00" * 384).decode()),
            "^clientSecret could not be decrypted with the Kit private key$",
        ),
        (
            lambda: decrypt_client_secret(
                key, base64.b64encode(public.encrypt(b"\xff", client_secret.ENCRYPT_PADDING)).decode()
            ),
            "^clientSecret does not decrypt to UTF-8 text$",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ClientSecretError, match=message):
            call()
    with pytest.raises(
        PrivateKeyError, match=r"^an RSA key for the Kit clientSecret needs at least 3072 bits$"
    ):
        generate_key_pair(2048)
    with pytest.raises(PrivateKeyError, match=r"^the Kit private key is not a readable PEM private key$"):
        load_private_key(b"not a key")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PrivateKeyError, match=r"^the Kit private key must be an RSA key$"):
        load_private_key(ec_pem)


def test_a_password_protected_key_is_read_with_its_password(pair: tuple[bytes, bytes]) -> None:
    key = load_private_key(pair[0])
    protected = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"kit-pass"),
    )
    assert load_private_key(protected, password=b"kit-pass").key_size == 3072
    with pytest.raises(PrivateKeyError, match="not a readable PEM"):
        load_private_key(protected)
