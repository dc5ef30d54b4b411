"""The verdicts every HMAC-signed interface shares and the result code each is answered with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pytest

from isvserver.freshness import Verdict, Verification

AUTH_FAILED = {Verdict.MISSING_SIGNATURE, Verdict.NO_KEY, Verdict.BAD_SIGNATURE, Verdict.REPLAYED_NONCE}


class Codes(Verification):
    """An interface with codes of its own."""

    CODES = ("S", "A", "I")
    MESSAGES: ClassVar[Mapping[Verdict, str]] = {v: f"message for {v.value}" for v in Verdict}


@pytest.mark.parametrize("verdict", list(Verdict), ids=[v.value for v in Verdict])
def test_each_verdict_is_success_an_authentication_failure_or_invalid_input(verdict: Verdict) -> None:
    expected = "000000" if verdict == Verdict.VERIFIED else "000001" if verdict in AUTH_FAILED else "000002"
    assert Verification(verdict).code == expected
    assert Codes(verdict).code == {"000000": "S", "000001": "A", "000002": "I"}[expected]
    assert Codes(verdict).message == f"message for {verdict.value}"
    assert Verification(verdict).ok is (verdict == Verdict.VERIFIED)
