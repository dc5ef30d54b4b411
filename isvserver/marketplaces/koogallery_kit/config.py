"""The Kit adapter's settings: its keys, the seller's private key for client secrets, the produce path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from isvserver.adapters import KeyInterface
from isvserver.marketplaces.koogallery_kit.client_secret import (
    PrivateKeyError,
    generate_key_pair,
    load_private_key,
    public_key_base64,
)
from isvserver.marketplaces.koogallery_kit.sso_config import SsoSettings, load_sso
from isvserver.settings import Problems, SettingsError, read, read_flag, read_int, read_path

KIT = KeyInterface("kit", "ISV_KIT_KEYS", "the keys of the joint-operation Kit sync interfaces")
API_PATH = "/produceAPI"  # the adapter's prefix: V1 Kit at /<activity>, V2 Kit at /v2/<activity>
SYNC_PATH = "/produceAPI/v2"
V1_CHECK_WINDOW_DEFAULT = 60


@dataclass(frozen=True)
class KitSettings:
    """What the Kit adapter reads from the environment."""

    produce_path: str  # {ISV_PRODUCE_PATH}/produceAPI: V1 Kit's base; V2 Kit's is under /v2
    private_key: rsa.RSAPrivateKey | None = field(repr=False)
    send_secrets: bool
    v1_check_window: int = V1_CHECK_WINDOW_DEFAULT  # ISV_V1_CHECK_WINDOW, shared with V1 basic
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


def new_private_key() -> str:
    """A new RSA private key (PEM), made in development where ISV_KIT_PRIVATE_KEY is unset."""
    return generate_key_pair()[0].decode("ascii")


def public_key_of(private_pem: str) -> str:
    """The Base64 DER public key of a private key, as `isvserver kit keygen` prints it."""
    public = load_private_key(private_pem).public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public_key_base64(pem)


def load(env: Mapping[str, str], production: bool) -> KitSettings:
    """The adapter's settings from the environment (every problem named at once)."""
    problems = Problems()
    path = problems.take(read_path, env, "ISV_PRODUCE_PATH", "/saasproduce", default="/saasproduce")
    private_key = problems.take(_private_key, env, production)
    send_secrets = problems.take(read_flag, env, "ISV_WEBHOOK_SEND_SECRETS", default=False)
    window = problems.take(
        read_int,
        env,
        "ISV_V1_CHECK_WINDOW",
        V1_CHECK_WINDOW_DEFAULT,
        0,
        86400,
        default=V1_CHECK_WINDOW_DEFAULT,
    )
    sso = load_sso(env, production, problems)
    problems.raise_any()
    return KitSettings(
        produce_path=path.rstrip("/") + API_PATH,
        private_key=private_key,
        send_secrets=send_secrets,
        v1_check_window=window,
        sso=sso,
    )
