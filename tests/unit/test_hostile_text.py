"""Text from callers never forges a log line, and never changes the path of a rendered URL."""

from __future__ import annotations

import logging

import pytest

from isvserver.logs import TextFormatter
from isvserver.provisioning import InstanceView
from isvserver.provisioning.template import path_segment, render_url


def record(message: str, *args: object) -> logging.LogRecord:
    rec = logging.LogRecord("isvserver.calls", logging.INFO, __file__, 1, message, args, None)
    rec.request_id = "r1"
    return rec


@pytest.mark.parametrize("forged", ["CS1\n2026-01-01 INFO forged", "CS1\r\nx", "a\x1b[31mred", "a\u2028b"])
def test_text_logs_escape_control_characters_in_ids(forged: str) -> None:
    line = TextFormatter().format(record("call order=%s", forged))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.endswith("call order=" + forged.encode("unicode_escape").decode("ascii"))


def test_a_traceback_still_follows_on_its_own_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record("failed id=%s", "a\nb")
        rec.exc_info = sys.exc_info()
    text = TextFormatter().format(rec)
    first, *rest = text.splitlines()
    assert first.endswith("failed id=a\\nb")
    assert rest and rest[-1] == "ValueError: boom"


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("a/b", "a%2Fb"),
        ("...", "..."),
        ("x?y#z", "x%3Fy%23z"),
        ("é", "%C3%A9"),
    ],
)
def test_placeholders_are_one_percent_encoded_segment(value: str, segment: str) -> None:
    assert path_segment(value) == segment


def test_render_url_never_lets_an_id_climb_the_path() -> None:
    view = InstanceView(
        instance_id="..",
        marketplace="koogallery",
        order_id=".",
        order_line_id="../admin",
        product_id=None,
        expire_at=None,
        is_trial=False,
    )
    url = render_url("https://app.example.com/t/{instance_id}/{order_id}/{order_line_id}", view)
    assert url == "https://app.example.com/t/%2E%2E/%2E/..%2Fadmin"
