"""applicationSync `clientSecret`: RSA-OAEP ciphertext (Base64) under the seller's ≥ 3072-bit key (§4)."""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MIN_BITS = 3072
WHITESPACE = re.compile(rb"\s+")


class ClientSecretError(Exception):
    """The clientSecret could not be decrypted (the message never holds the value)."""


class PrivateKeyError(ValueError):
    """The configured Kit private key is unusable (the message never holds the key)."""


def _oaep(label_hash: hashes.HashAlgorithm, mgf_hash: hashes.HashAlgorithm) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm=mgf_hash), algorithm=label_hash, label=None)


# Tried in order. Java's "OAEPWithSHA-256AndMGF1Padding" means SHA-256 for the label but MGF1-SHA-1 (SunJCE);
# an explicit OAEPParameterSpec with MGF1ParameterSpec.SHA256 gives SHA-256 for both.
PADDINGS = (
    ("sha256-mgf1sha1", _oaep(hashes.SHA256(), hashes.SHA1())),  # noqa: S303 - OAEP's MGF1, not a signature
    ("sha256-mgf1sha256", _oaep(hashes.SHA256(), hashes.SHA256())),
    ("sha1-mgf1sha1", _oaep(hashes.SHA1(), hashes.SHA1())),  # noqa: S303
)
ENCRYPT_PADDING = _oaep(hashes.SHA256(), hashes.SHA256())


def generate_key_pair(bits: int = MIN_BITS) -> tuple[bytes, bytes]:
    """A new RSA key pair: (PKCS#8 private PEM, SubjectPublicKeyInfo public PEM); upload the public one."""
    if bits < MIN_BITS:
        raise PrivateKeyError(f"an RSA key for the Kit clientSecret needs at least {MIN_BITS} bits")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def public_key_base64(public_pem: bytes) -> str:
    """The bare Base64 of the public key's DER (SubjectPublicKeyInfo), the form seller consoles ask for."""
    key = serialization.load_pem_public_key(public_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def load_private_key(pem: bytes | str, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """The RSA private key in `pem` (PKCS#8 or PKCS#1); PrivateKeyError when unusable or under 3072 bits."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise PrivateKeyError("the Kit private key is not a readable PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PrivateKeyError("the Kit private key must be an RSA key")
    if key.key_size < MIN_BITS:
        raise PrivateKeyError(
            f"the Kit private key has {key.key_size} bits; the marketplace requires at least {MIN_BITS}"
        )
    return key


def _ciphertext(value: str, size: int) -> bytes:
    try:
        data = base64.b64decode(WHITESPACE.sub(b"", value.encode("ascii")), validate=True)
    except (UnicodeError, binascii.Error, ValueError) as exc:
        raise ClientSecretError("clientSecret is not Base64") from exc
    if len(data) != size:
        raise ClientSecretError("clientSecret does not have the length of a ciphertext of this key")
    return data


def decrypt_client_secret(private_key: rsa.RSAPrivateKey, value: str) -> str:
    """The plain clientSecret; ClientSecretError when no accepted OAEP variant decrypts it."""
    data = _ciphertext(value, (private_key.key_size + 7) // 8)
    for _, scheme in PADDINGS:
        try:
            plain = private_key.decrypt(data, scheme)
        except ValueError:
            continue
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ClientSecretError("clientSecret does not decrypt to UTF-8 text") from exc
    raise ClientSecretError("clientSecret could not be decrypted with the Kit private key")


def encrypt_client_secret(public_key: rsa.RSAPublicKey, plain: str) -> str:
    """Base64 RSA-OAEP (SHA-256, MGF1-SHA-256) of `plain`: what the marketplace sends (simulators, tests)."""
    return base64.b64encode(public_key.encrypt(plain.encode("utf-8"), ENCRYPT_PADDING)).decode("ascii")
