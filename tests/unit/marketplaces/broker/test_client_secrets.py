"""Client secrets: argon2 hashes, and the bounded memo of successful checks (never of failures)."""

from __future__ import annotations

import pytest

from isvserver.marketplaces.broker import clients


@pytest.fixture(autouse=True)
def empty_memo() -> None:
    clients._verified.clear()


def test_a_secret_matches_its_hash_only() -> None:
    stored = clients.HASHER.hash("right-secret")
    assert clients.secret_matches(stored, "right-secret")
    assert clients.secret_matches(stored, "right-secret")  # from the memo
    assert not clients.secret_matches(stored, "wrong-secret")
    assert not clients.secret_matches(None, "right-secret")  # an unknown client
    assert not clients.secret_matches("not-a-hash", "right-secret")
    assert len(clients._verified) == 1  # only the success is remembered


def test_a_new_hash_is_checked_again_and_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "VERIFIED_CACHE_SIZE", 2)
    first, second = clients.HASHER.hash("s1"), clients.HASHER.hash("s1")
    assert clients.secret_matches(first, "s1") and clients.secret_matches(second, "s1")
    third = clients.HASHER.hash("s3")
    assert clients.secret_matches(third, "s3")
    assert len(clients._verified) == 2
    assert not clients.secret_matches(third, "s1")  # another client's hash: the memo does not help


def test_only_client_credentials_and_the_two_secret_methods() -> None:
    client = clients.OAuthClient(None, "isv-x")
    assert client.get_client_id() == "isv-x"
    assert client.check_grant_type("client_credentials") and not client.check_grant_type("password")
    assert client.check_endpoint_auth_method("client_secret_basic", "token")
    assert not client.check_endpoint_auth_method("none", "token")
    assert not client.check_client_secret("anything")
