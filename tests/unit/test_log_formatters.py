"""Both log formatters redact secret pairs in the message and in an exception's traceback."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from isvserver.logs import JsonFormatter, TextFormatter

SECRETS = ("S3cretSig", "n0nce-XYZ", "Hunter2!")


def failing_record(message: str = "call failed") -> logging.LogRecord:
    """An ERROR record carrying the traceback of an exception whose text holds secret pairs."""
    try:
        raise RuntimeError("GET /x?signature=S3cretSig&nonce=n0nce-XYZ password=Hunter2!")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("isvserver.x", logging.ERROR, __file__, 1, message, None, exc_info)
    record.request_id = "req-1"
    return record


def test_json_formatter_redacts_the_traceback() -> None:
    entry = json.loads(JsonFormatter().format(failing_record()))
    assert "Traceback (most recent call last)" in entry["exception"]
    assert "RuntimeError: GET /x?signature=***&nonce=*** password=***" in entry["exception"]
    assert not any(secret in json.dumps(entry) for secret in SECRETS)
    assert (entry["message"], entry["request_id"], entry["level"]) == ("call failed", "req-1", "ERROR")


def test_text_formatter_redacts_the_traceback() -> None:
    text = TextFormatter().format(failing_record())
    assert "ERROR" in text and "isvserver.x request_id=req-1: call failed" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: GET /x?signature=***&nonce=*** password=***" in text
    assert not any(secret in text for secret in SECRETS)


@pytest.mark.parametrize("message", ["GET /x?signature=S3cretSig&nonce=n0nce-XYZ", "password=Hunter2!"])
def test_text_formatter_redacts_the_message(message: str) -> None:
    record = logging.LogRecord("isvserver.x", logging.INFO, __file__, 1, message, None, None)
    record.request_id = "-"
    text = TextFormatter().format(record)
    assert "***" in text
    assert not any(secret in text for secret in SECRETS)
