"""Buyer PII at rest: sealing optional values, comparing them with what is stored, masking for display."""

from __future__ import annotations

from isvserver.sealing import DataKeys, UnsealError, seal, unseal

UNREADABLE = "<unreadable>"


def seal_optional(data_keys: DataKeys, value: str | None) -> str | None:
    """`value` sealed, or None for None."""
    return None if value is None else seal(data_keys, value)


def unseal_optional(data_keys: DataKeys, token: str | None) -> str | None:
    """The plaintext of a sealed column value, or None for None (UnsealError when no key opens it)."""
    return None if token is None else unseal(data_keys, token)


def same_as_stored(data_keys: DataKeys, token: str | None, value: str | None) -> bool:
    """Whether the sealed `token` holds `value` (a token no key opens counts as different)."""
    if token is None or value is None:
        return token is None and value is None
    try:
        return unseal(data_keys, token) == value
    except UnsealError:
        return False


def mask(value: str | None) -> str | None:
    """A display form that shows the shape, not the value: `z***`, `z***@example.com`."""
    if value is None or value == "":
        return value
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{value[:1]}***"


def shown(data_keys: DataKeys, token: str | None, show_pii: bool) -> str | None:
    """A sealed column value for an operator: plaintext when asked for, masked otherwise."""
    try:
        value = unseal_optional(data_keys, token)
    except UnsealError:
        return UNREADABLE
    return value if show_pii else mask(value)
