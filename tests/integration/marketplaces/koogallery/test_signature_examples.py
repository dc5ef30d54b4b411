"""Fixed examples: a signature wrong in one hex character, at its start, middle or end, is refused."""

from __future__ import annotations

import pytest

from isvserver.db import connected
from isvserver.marketplaces.koogallery.signing import request_signature
from isvserver.marketplaces.koogallery.verify import Verdict, verify
from isvserver.models import Instance

ACCESS_KEY = "test-access-key"  # the key of the spec's known answer (§4)

# Spec §2.1's newInstance example, signed with the test key.
BODY = (
    b'{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8",'
    b'"orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}'
)
TIMESTAMP = "1680508066618"
NONCE = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA"
SIGNATURE = "271544ACDAC82601D0A6615631C4DB54120D5EA32FC968493C8064281E125C7A"
POSITIONS = pytest.mark.parametrize("position", [0, 1, 31, 32, 62, 63], ids=lambda p: f"char {p}")


def one_wrong(signature: str, position: int) -> str:
    """`signature` with the hex digit at `position` replaced by another one."""
    digit = "0" if signature[position] != "0" else "1"
    return signature[:position] + digit + signature[position + 1 :]


def verdict(signature: str) -> Verdict:
    params = {"signature": signature, "timestamp": TIMESTAMP, "nonce": NONCE}
    return verify(params, BODY, None, [ACCESS_KEY], int(TIMESTAMP), 60).verdict


def test_the_example_signature_is_what_the_marketplace_sends() -> None:
    assert request_signature(ACCESS_KEY, BODY, NONCE, TIMESTAMP) == SIGNATURE
    assert verdict(SIGNATURE) == verdict(SIGNATURE.lower()) == Verdict.VERIFIED


@POSITIONS
def test_a_signature_wrong_in_one_character_is_refused(position: int) -> None:
    assert verdict(one_wrong(SIGNATURE, position)) == Verdict.BAD_SIGNATURE


@POSITIONS
def test_the_app_answers_authentication_failed(marketplace, clock, position: int) -> None:
    """000001, and nothing created (the body is a real newInstance but for one wrong character)."""
    clock.now_ms = int(TIMESTAMP)
    body = BODY.replace(b',"testFlag":"1"', b"")
    good = request_signature(ACCESS_KEY, body, NONCE, TIMESTAMP)
    query = f"signature={one_wrong(good, position)}&timestamp={TIMESTAMP}&nonce={NONCE}"
    answer = marketplace.send(body, query=query)
    assert answer.code == "000001"
    assert answer.json["resultMsg"] == "authentication failed: signature does not match"
    with connected():
        assert Instance.select().count() == 0
