"""Secrets at rest, sealed with ISV_DATA_KEY (Fernet): the first key seals, every listed key unseals."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

DataKeys = bytes | Sequence[bytes]  # one key, or the keys of ISV_DATA_KEY with the sealing key first


class UnsealError(Exception):
    """A stored secret cannot be opened with any configured data key."""


def _key_tuple(keys: DataKeys) -> tuple[bytes, ...]:
    """`keys` as a non-empty tuple, first first."""
    keys = (keys,) if isinstance(keys, bytes | str) else tuple(keys)
    if not keys:
        raise ValueError("no data key given")
    return tuple(k.encode("ascii") if isinstance(k, str) else k for k in keys)


def _fernets(keys: DataKeys) -> MultiFernet:
    """A MultiFernet over `keys`: encrypts with the first, decrypts with any."""
    return _multi(_key_tuple(keys))


@lru_cache(maxsize=16)
def _multi(keys: tuple[bytes, ...]) -> MultiFernet:
    """Built once per key tuple (it was built again for every row of a 100-id queryInstance)."""
    return MultiFernet([_fernet(key) for key in keys])


@lru_cache(maxsize=16)
def _fernet(key: bytes) -> Fernet:
    """One key's Fernet (stateless: it only holds the key), built once per key."""
    return Fernet(key)


def seal(keys: DataKeys, plaintext: str) -> str:
    """Encrypt and authenticate `plaintext` for storage with the first key."""
    return _fernet(_key_tuple(keys)[0]).encrypt(plaintext.encode("utf-8")).decode("ascii")


def unseal(keys: DataKeys, token: str) -> str:
    """Open a value made by `seal` with any of `keys`; UnsealError when none opens it or it was altered."""
    try:
        return _fernets(keys).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise UnsealError("a stored secret could not be decrypted with ISV_DATA_KEY") from exc


def sealed_with_first(keys: DataKeys, token: str) -> bool:
    """Whether the first key alone opens `token` (a Fernet token names no key: trying is the only way)."""
    try:
        _fernet(_key_tuple(keys)[0]).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def reseal(keys: DataKeys, token: str) -> str:
    """`token` sealed again with the first key (opened with any); UnsealError when none opens it."""
    try:
        return _fernets(keys).rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeError) as exc:
        raise UnsealError("a stored secret could not be decrypted with ISV_DATA_KEY") from exc
