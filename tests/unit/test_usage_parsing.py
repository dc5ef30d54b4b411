"""What a usage record's value and times may be (isvserver.usage), checked before any database."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from isvserver.usage import Reason, Refused, parse_time, parse_value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, Decimal("1")),
        ("1.5000", Decimal("1.5")),
        (Decimal("0.0001"), Decimal("0.0001")),
        (2.25, Decimal("2.25")),
        (" 3 ", Decimal("3")),
        ("1e2", Decimal("100")),
        ("999999999999999.9999", Decimal("999999999999999.9999")),
    ],
)
def test_values_taken(value: object, expected: Decimal) -> None:
    assert parse_value(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "a number or a decimal string"),
        (None, "a number or a decimal string"),
        ([1], "a number or a decimal string"),
        ("1,5", "decimal number"),
        ("x" * 41, "decimal number"),
        ("1e", "decimal number"),
        ("NaN", "decimal number"),
        (float("inf"), "decimal number"),
        (0, "greater than 0"),
        ("-1", "greater than 0"),
        ("1000000000000000", r"below 10\^15"),
        ("0.00001", "at most 4 decimals"),
    ],
)
def test_values_refused(value: object, message: str) -> None:
    with pytest.raises(Refused, match=message) as refused:
        parse_value(value)
    assert refused.value.code == Reason.INVALID


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20261205T101500Z", datetime(2026, 12, 5, 10, 15)),
        ("2026-12-05T10:15:00Z", datetime(2026, 12, 5, 10, 15)),
        ("2026-12-05T18:15:00+08:00", datetime(2026, 12, 5, 10, 15)),
        ("2026-12-05 10:15:00", datetime(2026, 12, 5, 10, 15)),
    ],
)
def test_times_taken(text: str, expected: datetime) -> None:
    assert parse_time(text, "endTime") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (20261205, "must be an ISO-8601"),
        ("2026-12-05T10:15:00é", "must be an ISO-8601"),
        ("2" * 41, "must be an ISO-8601"),
        ("20261305T101500Z", "is not an ISO-8601"),
        ("yesterday", "is not an ISO-8601"),
        ("2026-12-05T10:15:00.5Z", "must be whole seconds"),
    ],
)
def test_times_refused_name_the_field(value: object, message: str) -> None:
    with pytest.raises(Refused, match=f"endTime {message}"):
        parse_time(value, "endTime")
