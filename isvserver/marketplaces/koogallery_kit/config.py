"""The Kit adapter's settings: its keys, the seller's private key for client secrets, the produce path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from isvserver.adapters import KeyInterface
from isvserver.marketplaces.koogallery_kit.client_secret import PrivateKeyError, load_private_key
from isvserver.marketplaces.koogallery_kit.sso_config import SsoSettings, load_sso
from isvserver.settings import Problems, SettingsError, read, read_flag, read_path

KIT = KeyInterface("kit", "ISV_KIT_KEYS", "the keys of the joint-operation Kit sync interfaces")
SYNC_PATH = "/produceAPI/v2"


@dataclass(frozen=True)
class KitSettings:
    """What the Kit adapter reads from the environment."""

    produce_path: str
    private_key: rsa.RSAPrivateKey | None = field(repr=False)
    send_secrets: bool
    sso: SsoSettings = field(default_factory=SsoSettings)


def _private_key(env: Mapping[str, str], production: bool) -> rsa.RSAPrivateKey | None:
    """ISV_KIT_PRIVATE_KEY, required in production (applicationSync's client secrets need it)."""
    pem = read(env, "ISV_KIT_PRIVATE_KEY")
    if not pem:
        if production:
            raise SettingsError(
                "ISV_KIT_PRIVATE_KEY (or ISV_KIT_PRIVATE_KEY_FILE) is required in production: "
                "`isvserver kit keygen` makes a key pair"
            )
        return None
    try:
        return load_private_key(pem)
    except PrivateKeyError as exc:
        raise SettingsError(f"ISV_KIT_PRIVATE_KEY: {exc}") from None


def load(env: Mapping[str, str], production: bool) -> KitSettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    path = problems.take(read_path, env, "ISV_PRODUCE_PATH", "/saasproduce", default="/saasproduce")
    private_key = problems.take(_private_key, env, production)
    send_secrets = problems.take(read_flag, env, "ISV_WEBHOOK_SEND_SECRETS", default=False)
    sso = load_sso(env, production, problems)
    problems.raise_any()
    return KitSettings(
        produce_path=path.rstrip("/") + SYNC_PATH,
        private_key=private_key,
        send_secrets=send_secrets,
        sso=sso,
    )
