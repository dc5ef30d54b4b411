"""Secrets at rest (generated passwords), sealed with ISV_DATA_KEY (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class UnsealError(Exception):
    """A stored secret cannot be opened with the configured data key."""


def seal(data_key: bytes, plaintext: str) -> str:
    """Encrypt and authenticate `plaintext` for storage."""
    return Fernet(data_key).encrypt(plaintext.encode("utf-8")).decode("ascii")


def unseal(data_key: bytes, token: str) -> str:
    """Open a value made by `seal`; UnsealError when the key is wrong or the value was altered."""
    try:
        return Fernet(data_key).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise UnsealError("a stored secret could not be decrypted with ISV_DATA_KEY") from exc
