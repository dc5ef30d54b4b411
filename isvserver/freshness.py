"""What every HMAC-signed marketplace call shares before its signature is checked: the verdicts, the
timestamp (ms or s), the window in both directions and the nonce's form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

MAX_NONCE_LENGTH = 128


class Verdict(StrEnum):
    """Why a call was accepted or rejected; logged and stored, never with the values themselves."""

    VERIFIED = "verified"
    MISSING_TIMESTAMP = "missing_timestamp"
    MISSING_NONCE = "missing_nonce"
    MISSING_SIGNATURE = "missing_signature"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_NONCE = "bad_nonce"
    STALE_TIMESTAMP = "stale_timestamp"
    NO_KEY = "no_key_configured"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED_NONCE = "replayed_nonce"


# The verdicts marketplaces answer as an authentication failure; every other rejection is bad input.
AUTH_FAILURES = frozenset(
    {Verdict.MISSING_SIGNATURE, Verdict.NO_KEY, Verdict.BAD_SIGNATURE, Verdict.REPLAYED_NONCE}
)


def parse_timestamp(value: str) -> int | None:
    """Milliseconds from a 13-digit (ms) or 10-digit (s) UNIX timestamp; None for anything else."""
    if not value.isascii() or not value.isdigit():
        return None
    if len(value) == 13:
        return int(value)
    if len(value) == 10:
        return int(value) * 1000
    return None


def precheck(
    timestamp: str, nonce: str, signature: str, has_keys: bool, now_ms: float, tolerance_s: int
) -> tuple[Verdict | None, int | None]:
    """The verdict that rejects the call before its signature is computed (None: go on), and its time."""
    if not timestamp:
        return Verdict.MISSING_TIMESTAMP, None
    if not nonce:
        return Verdict.MISSING_NONCE, None
    if not signature:
        return Verdict.MISSING_SIGNATURE, None
    timestamp_ms = parse_timestamp(timestamp)
    if timestamp_ms is None:
        return Verdict.BAD_TIMESTAMP, None
    if len(nonce) > MAX_NONCE_LENGTH or not nonce.isascii() or not nonce.isprintable():
        return Verdict.BAD_NONCE, None
    if abs(now_ms - timestamp_ms) > tolerance_s * 1000:
        return Verdict.STALE_TIMESTAMP, timestamp_ms
    if not has_keys:
        return Verdict.NO_KEY, timestamp_ms
    return None, timestamp_ms


@dataclass(frozen=True)
class Verification:
    """The verdict on a call: `key` verified it, `nonce` is what the replay store keeps. An adapter
    subclasses it with its MESSAGES and, where they differ, its CODES (success, auth failed, invalid)."""

    MESSAGES: ClassVar[Mapping[Verdict, str]] = {}
    CODES: ClassVar[tuple[str, str, str]] = ("000000", "000001", "000002")

    verdict: Verdict
    key: str | None = field(default=None, repr=False)
    nonce: str | None = field(default=None, repr=False)
    timestamp_ms: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the call is authentic and fresh."""
        return self.verdict == Verdict.VERIFIED

    @property
    def code(self) -> str:
        """The result code that answers this verdict."""
        success, auth_failed, invalid = self.CODES
        if self.verdict == Verdict.VERIFIED:
            return success
        return auth_failed if self.verdict in AUTH_FAILURES else invalid

    @property
    def message(self) -> str:
        """The message that answers this verdict."""
        return self.MESSAGES[self.verdict]
