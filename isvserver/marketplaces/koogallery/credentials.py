"""V1 credential encryption: AES-CBC keyed by Java's SecureRandom("SHA1PRNG") (spec §4)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import string
from functools import lru_cache

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_SIZES = {1: 32, 2: 16}  # encryptType → AES key bytes: 1 = AES-256, 2 = AES-128

MAX_ENCRYPTED_LENGTH = 128
IV_LENGTH = 16
IV_ALPHABET = string.ascii_letters + string.digits
_BLOCK_BYTES = 16


def _signed(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def _update_state(state: bytearray, output: bytes) -> None:
    # sun.security.provider.SecureRandom.updateState: state += output + 1, byte by byte on Java's
    # signed bytes, so the carry is the arithmetic shift of a signed sum and may be -1, 0 or 1.
    carry = 1
    changed = False
    for i, out in enumerate(output):
        total = _signed(state[i]) + _signed(out) + carry
        changed |= state[i] != total & 0xFF
        state[i] = total & 0xFF
        carry = total >> 8
    if not changed:
        state[0] = (state[0] + 1) & 0xFF


def _sha1(data: bytes | bytearray) -> bytes:
    return hashlib.sha1(data).digest()  # noqa: S324 -- the marketplace's Java side fixes SHA1PRNG


def sha1prng(seed: bytes, length: int) -> bytes:
    """The first `length` bytes of Java's SecureRandom("SHA1PRNG") after setSeed(seed), in one nextBytes."""
    state = bytearray(_sha1(seed))
    result = bytearray()
    while len(result) < length:
        output = _sha1(state)
        _update_state(state, output)
        result += output
    return bytes(result[:length])


def derive_aes_key(access_key: str, encrypt_type: int) -> bytes:
    """The AES key Huawei's Java code derives from the access key for this `encryptType`."""
    size = KEY_SIZES.get(encrypt_type) if type(encrypt_type) is int else None
    if size is None:
        raise ValueError("encryptType must be 1 (AES-256) or 2 (AES-128)")
    return _derived(access_key, size)


@lru_cache(maxsize=16)
def _derived(access_key: str, size: int) -> bytes:
    """Derived once per access key and size (V1 encrypts two credentials per instance of a reply)."""
    return sha1prng(access_key.encode("utf-8"), size)


def _cipher(access_key: str, encrypt_type: int, iv: bytes) -> Cipher:
    return Cipher(algorithms.AES(derive_aes_key(access_key, encrypt_type)), modes.CBC(iv))


def encrypt_credential(access_key: str, plaintext: str, encrypt_type: int = 1, iv: str | None = None) -> str:
    """`iv + Base64(AES-CBC-PKCS5(plaintext))`, at most 128 characters."""
    if iv is None:
        iv = "".join(secrets.choice(IV_ALPHABET) for _ in range(IV_LENGTH))
    elif len(iv) != IV_LENGTH or any(c not in IV_ALPHABET for c in iv):
        raise ValueError("iv must be 16 characters from [A-Za-z0-9]")
    data = plaintext.encode("utf-8")
    padded_length = (len(data) // _BLOCK_BYTES + 1) * _BLOCK_BYTES
    if IV_LENGTH + 4 * -(-padded_length // 3) > MAX_ENCRYPTED_LENGTH:
        raise ValueError("credential too long: the encrypted form would exceed 128 characters")
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    encryptor = _cipher(access_key, encrypt_type, iv.encode("ascii")).encryptor()
    ciphertext = encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
    return iv + base64.b64encode(ciphertext).decode("ascii")


def decrypt_credential(access_key: str, value: str, encrypt_type: int = 1) -> str:
    """The plaintext of an `iv + Base64(ciphertext)` credential; ValueError if it is malformed."""
    if len(value) < IV_LENGTH + 24:
        raise ValueError("encrypted credential too short")
    iv_text, encoded = value[:IV_LENGTH], value[IV_LENGTH:]
    if not iv_text.isascii():
        raise ValueError("encrypted credential has a non-ASCII iv")
    try:
        ciphertext = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError("encrypted credential is not valid Base64") from None
    # Non-canonical Base64 (stray bits in the last character) would decode like a different string.
    if base64.b64encode(ciphertext).decode("ascii") != encoded:
        raise ValueError("encrypted credential is not canonical Base64")
    if not ciphertext or len(ciphertext) % _BLOCK_BYTES:
        raise ValueError("encrypted credential is not a whole number of AES blocks")
    decryptor = _cipher(access_key, encrypt_type, iv_text.encode("ascii")).decryptor()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        data = unpadder.update(decryptor.update(ciphertext) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise ValueError("encrypted credential has bad padding (wrong key or corrupted)") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("encrypted credential does not decrypt to UTF-8 text (wrong key?)") from None
