"""The Kit adapter's settings: its keys, the seller's private key for client secrets, the produce path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from isvserver.adapters import KeyInterface
from isvserver.marketplaces.koogallery_kit.client_secret import PrivateKeyError, load_private_key
from isvserver.settings import SettingsError, read, read_flag

KIT = KeyInterface("kit", "ISV_KIT_KEYS", "the keys of the joint-operation Kit sync interfaces")
SYNC_PATH = "/produceAPI/v2"


@dataclass(frozen=True)
class KitSettings:
    """What the Kit adapter reads from the environment."""

    produce_path: str
    private_key: rsa.RSAPrivateKey | None = field(repr=False)
    send_secrets: bool


def load(env: Mapping[str, str], production: bool) -> KitSettings:
    """The adapter's settings; the private key is required in production (applicationSync needs it)."""
    path = read(env, "ISV_PRODUCE_PATH") or "/saasproduce"
    if not path.startswith("/") or "?" in path or "#" in path:
        raise SettingsError("ISV_PRODUCE_PATH must be a path starting with /")
    pem = read(env, "ISV_KIT_PRIVATE_KEY")
    if not pem and production:
        raise SettingsError(
            "ISV_KIT_PRIVATE_KEY (or ISV_KIT_PRIVATE_KEY_FILE) is required in production: "
            "`isvserver kit keygen` makes a key pair"
        )
    try:
        private_key = load_private_key(pem) if pem else None
    except PrivateKeyError as exc:
        raise SettingsError(f"ISV_KIT_PRIVATE_KEY: {exc}") from None
    return KitSettings(
        produce_path=path.rstrip("/") + SYNC_PATH,
        private_key=private_key,
        send_secrets=read_flag(env, "ISV_WEBHOOK_SEND_SECRETS"),
    )
