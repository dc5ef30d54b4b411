"""Several ISV_DATA_KEY keys: how they are read, and sealing with them (the first seals, all unseal)."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from isvserver.sealing import UnsealError, reseal, seal, sealed_with_first, unseal
from isvserver.settings import SettingsError, load_settings

from support.harness import ACCESS_KEY, DATA_KEY, NOTIFY_KEY

NEW_KEY = "0dkqMcI6nHuWJ6nEvS3h8GZ4a4nJm1C9tLz0Q2pX7yE="
THIRD_KEY = "u5aC0bS2L0mDkX9fR4o1HqWn3ZyT7eVgJ8iP6sQ2w0k="


def production(tmp_path: Path, data_key: str) -> dict[str, str]:
    """A minimal production environment with this ISV_DATA_KEY."""
    return {
        "ISV_ENV": "production",
        "ISV_ACCESS_KEYS": ACCESS_KEY,
        "ISV_NOTIFY_KEYS": NOTIFY_KEY,
        "ISV_DATA_KEY": data_key,
        "ISV_INSTANCE_DIR": str(tmp_path / "instance"),
        "ISV_FRONTEND_URL_TEMPLATE": "https://app.example.com/t/{instance_id}",
    }


def refused(env: dict[str, str]) -> str:
    """Everything an operator sees when start-up fails: the message and the whole traceback."""
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    return "".join(traceback.format_exception(info.value))


# --- settings -----------------------------------------------------------------------------------------


def test_one_key_is_the_sealing_key_and_the_only_key(tmp_path: Path) -> None:
    settings = load_settings(production(tmp_path, DATA_KEY))

    assert settings.data_key == DATA_KEY.encode()
    assert settings.data_keys == (DATA_KEY.encode(),)


@pytest.mark.parametrize(
    "raw",
    [f"{NEW_KEY},{DATA_KEY},{THIRD_KEY}", f" {NEW_KEY} ,\n{DATA_KEY},, {THIRD_KEY} ,"],
    ids=["plain", "blanks-and-trailing-comma"],
)
def test_several_keys_keep_their_order_and_the_first_seals(tmp_path: Path, raw: str) -> None:
    settings = load_settings(production(tmp_path, raw))

    assert settings.data_keys == (NEW_KEY.encode(), DATA_KEY.encode(), THIRD_KEY.encode())
    assert settings.data_key == NEW_KEY.encode()


def test_several_keys_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "data.key"
    key_file.write_text(f"{NEW_KEY},{DATA_KEY}\n", encoding="utf-8")
    env = production(tmp_path, "")
    del env["ISV_DATA_KEY"]
    env["ISV_DATA_KEY_FILE"] = str(key_file)

    settings = load_settings(env)

    assert settings.data_keys == (NEW_KEY.encode(), DATA_KEY.encode())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (f"{NEW_KEY},{DATA_KEY},{NEW_KEY}", "ISV_DATA_KEY: a key is listed twice"),
        (f"{DATA_KEY}, {DATA_KEY}", "ISV_DATA_KEY: a key is listed twice"),
        (f"{NEW_KEY},not-a-key-SECRET-0123456789", "ISV_DATA_KEY: key 2 of 2 is not 32 random bytes"),
        (f"{NEW_KEY[:-2]},{DATA_KEY}", "ISV_DATA_KEY: key 1 of 2 is not 32 random bytes"),
        (" , ,", "ISV_DATA_KEY holds no key"),
    ],
    ids=["duplicate", "duplicate-with-blank", "second-invalid", "first-invalid", "only-commas"],
)
def test_invalid_key_lists_name_the_variable_never_a_key(tmp_path: Path, raw: str, message: str) -> None:
    shown = refused(production(tmp_path, raw))

    assert message in shown
    for secret in (NEW_KEY, DATA_KEY, NEW_KEY[:-2], "not-a-key-SECRET"):
        assert secret not in shown


def test_repr_shows_no_data_key(tmp_path: Path) -> None:
    settings = load_settings(production(tmp_path, f"{NEW_KEY},{DATA_KEY}"))

    for text in (repr(settings), str(settings)):
        assert NEW_KEY not in text and DATA_KEY not in text


# --- sealing with several keys ----------------------------------------------------------------------------

OLD, NEW, UNKNOWN = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
PLAINTEXT = "Secret-Pw-42!"


def test_the_first_key_seals_and_every_key_unseals() -> None:
    token = seal((NEW, OLD), PLAINTEXT)

    assert unseal(NEW, token) == PLAINTEXT
    with pytest.raises(UnsealError):
        unseal(OLD, token)
    assert unseal((NEW, OLD), seal(OLD, PLAINTEXT)) == PLAINTEXT
    assert unseal([UNKNOWN, NEW], token) == PLAINTEXT


def test_reseal_moves_a_secret_to_the_first_key() -> None:
    old_token = seal(OLD, PLAINTEXT)

    new_token = reseal((NEW, OLD), old_token)

    assert unseal(NEW, new_token) == PLAINTEXT
    assert sealed_with_first((NEW, OLD), new_token)
    assert not sealed_with_first((NEW, OLD), old_token)


def test_reseal_of_a_secret_no_key_opens_fails_discreetly() -> None:
    token = seal(UNKNOWN, PLAINTEXT)

    with pytest.raises(UnsealError) as caught:
        reseal((NEW, OLD), token)

    shown = "".join(traceback.format_exception(caught.value))
    for secret in (PLAINTEXT, NEW.decode(), OLD.decode(), UNKNOWN.decode()):
        assert secret not in shown


@pytest.mark.parametrize("token", ["", "not a token", "é" * 10])
def test_garbage_is_not_sealed_with_the_first_key(token: str) -> None:
    assert not sealed_with_first((NEW, OLD), token)
    with pytest.raises(UnsealError):
        reseal((NEW, OLD), token)


def test_no_key_at_all_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no data key"):
        seal((), PLAINTEXT)
