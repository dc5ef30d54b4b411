"""The buyer of a V1 instance: `mobilePhone` and `email` decrypted (spec §4), then stored sealed.

Nothing here logs a value: a field that does not decrypt is named, never shown.
"""

from __future__ import annotations

from typing import Any

from isvserver.marketplaces.koogallery.credentials import decrypt_credential
from isvserver.marketplaces.koogallery.v1.models import V1Buyer
from isvserver.sealing import seal

ENCRYPTED_FIELDS = ("mobilePhone", "email")
MAX_PLAIN = {"mobilePhone": 32, "email": 128}


class BadCiphertext(ValueError):
    """A buyer field did not decrypt with the key that verified the call; the message names the field."""


def decrypted(data: dict[str, Any], key: str, encrypt_type: int) -> dict[str, Any]:
    """`data` with mobilePhone and email decrypted; BadCiphertext naming the first that does not."""
    out = dict(data)
    for name in ENCRYPTED_FIELDS:
        value = data.get(name)
        if not value:
            out.pop(name, None)
            continue
        try:
            plain = decrypt_credential(key, value, encrypt_type)
        except ValueError:
            raise BadCiphertext(
                f"{name} does not decrypt with the access key (AES, encryptType {encrypt_type})"
            ) from None
        if not plain.strip() or len(plain) > MAX_PLAIN[name] or not plain.isprintable():
            raise BadCiphertext(f"{name} decrypts to no valid {name} (empty, too long or not printable)")
        out[name] = plain
    return out


def store(instance_id: str, data: dict[str, Any], data_key: bytes) -> None:
    """The buyer of a new instance, once (a resend finds the row there and changes nothing)."""

    def sealed(name: str) -> str | None:
        value = data.get(name)
        return seal(data_key, value) if value else None

    V1Buyer.insert(
        instance_id=instance_id,
        customer_id=data["customerId"],
        user_id=data.get("userId"),
        customer_name_sealed=sealed("customerName"),
        user_name_sealed=sealed("userName"),
        mobile_phone_sealed=sealed("mobilePhone"),
        email_sealed=sealed("email"),
    ).on_conflict_ignore().execute()
