"""The request-completeness rule of the buffered gunicorn worker, and the redaction of gunicorn lines."""

from __future__ import annotations

import logging
import sys

import pytest
from gunicorn.http.errors import InvalidChunkSize

from isvserver.logs import WITHHELD, format_exception
from isvserver.web.gunicorn_logging import RedactingFilter, redact_line
from isvserver.web.worker import DEFAULT_BODY_LIMIT, MAX_HEAD_BYTES, Framing, Limits

HEAD = b"POST /saasproduce?signature=S&timestamp=1&nonce=N HTTP/1.1\r\nHost: x\r\n"


def framed(received: bytes, limit: int = DEFAULT_BODY_LIMIT) -> Framing:
    """A Framing fed `received` (in one piece)."""
    framing = Framing(Limits(body_bytes=limit))
    framing.ready = framing.feed(received) if received else False
    return framing


@pytest.mark.parametrize(
    ("received", "whole"),
    [
        (b"", False),
        (b"POST /saasproduce?signature=S HTTP/1.1\r\nHost: x", False),
        (HEAD + b"\r\n", True),  # no body
        (HEAD + b'Content-Length: 5\r\n\r\n{"a"', False),
        (HEAD + b'Content-Length: 5\r\n\r\n{"a":', True),
        (HEAD + b"content-length:  5 \r\n\r\n12345", True),
        (HEAD + b"Content-Length: x\r\n\r\n", True),  # malformed: the parser answers 400
        (HEAD + b"Content-Length: %d\r\n\r\n" % (DEFAULT_BODY_LIMIT + 1), True),  # too big to wait for
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n", False),
        (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n\r\n", True),
        (b"X" * (MAX_HEAD_BYTES + 1), True),  # a head that never ends: the parser rejects it
    ],
)
def test_a_request_goes_to_a_thread_only_when_whole(received: bytes, whole: bool) -> None:
    """Head and body complete (or past what is worth waiting for) -> a thread parses it."""
    assert framed(received).ready is whole


def test_100_continue_is_recognised_in_the_head_only() -> None:
    """`Expect: 100-continue` in the head; the same words in a body do not count."""
    assert framed(HEAD + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n").expects_continue
    assert not framed(HEAD + b"Content-Length: 22\r\n\r\nExpect: 100-continue\r\n").expects_continue


@pytest.mark.parametrize(
    "line",
    [
        "Error handling request POST /saasproduce?signature=SIGVALUE&timestamp=1796&nonce=NONCEVALUE",
        "Invalid request from ip=127.0.0.1: Invalid HTTP request line: "
        "'POST/saasproduce?signature=SIGVALUE&timestamp=1796&nonce=NONCEVALUE'",
        'GET "/saasproduce?nonce=NONCEVALUE&signature=SIGVALUE&timestamp=1796 HTTP/1.1" 200',
        "signature=SIGVALUE&timestamp=1796&nonce=NONCEVALUE",
    ],
)
def test_gunicorn_lines_lose_query_strings_and_signed_values(line: str) -> None:
    """Neither the signature, the nonce nor the timestamp survives."""
    redacted = redact_line(line)
    for value in ("SIGVALUE", "NONCEVALUE", "1796"):
        assert value not in redacted, redacted


def test_a_record_and_its_traceback_are_redacted_before_formatting() -> None:
    """The filter rewrites message, arguments and traceback; the message of an HTTP parse error
    (which quotes the body) is withheld."""
    buyer = "-".join(("buyer", "name"))  # not in this file's source, which the traceback quotes
    try:
        raise InvalidChunkSize(b'zz{"customerName":"%s"}' % buyer.encode())
    except InvalidChunkSize:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "gunicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Error handling request %s",
        ("/p?nonce=NONCEVALUE",),
        exc_info,
    )
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "NONCEVALUE" not in text, text
    assert buyer not in text, text
    assert f"InvalidChunkSize: {WITHHELD}" in text, text
    assert WITHHELD in format_exception(exc_info)
