"""Log lines as JSON (or text), each with the request id, with a last guard against secrets."""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

from flask import g, has_request_context

# Belt and braces: nothing logs these, but a query string or a key=value pasted into a message never
# gets through.
SECRET_PAIR = re.compile(r"(?i)\b(signature|nonce|password|key|secret|token|authToken)=([^&\s\"']+)")


# Exceptions whose message quotes what the client sent (request line, headers, body bytes).
QUOTES_THE_REQUEST = ("gunicorn.http.errors",)
WITHHELD = "(message withheld: it quotes the request)"


def redact(text: str) -> str:
    """`text` with the value of every secret-looking name=value pair replaced by ***."""
    return SECRET_PAIR.sub(lambda m: f"{m.group(1)}=***", text)


def format_exception(exc_info: Any) -> str:
    """A traceback, redacted, with the messages of exceptions that quote the request left out."""
    formatted = traceback.TracebackException(*exc_info)
    seen: set[int] = set()
    stack = [formatted]
    while stack:
        part = stack.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        exc_type = getattr(part, "exc_type", None)
        if exc_type is not None and exc_type.__module__.startswith(QUOTES_THE_REQUEST):
            part._str = WITHHELD
        stack += [p for p in (part.__cause__, part.__context__) if p is not None]
    return redact("".join(formatted.format()).rstrip())


class RequestIdFilter(logging.Filter):
    """Adds the current request's id (or '-') to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach `request_id`; never drops a record."""
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, request id, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "request_id": getattr(record, "request_id", "-"),
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = format_exception(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def escape_controls(text: str) -> str:
    """`text` with every control or non-printable character escaped (`\\n`, `\\x1b`…): one line stays one."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class TextFormatter(logging.Formatter):
    """The classic one-line format, redacted; a message's control characters are escaped."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s [%(process)d] %(name)s request_id=%(request_id)s: %(message)s"
        )

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The first line, with the message's newlines and other control characters escaped."""
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        """The record as a text line (its traceback, if any, on the lines after it)."""
        return redact(super().format(record))

    def formatException(self, ei: Any) -> str:
        """The traceback as format_exception gives it."""
        return format_exception(ei)


def configure(level: str, fmt: str) -> None:
    """Send the `isvserver` (and the job queue's `huey`) loggers to stderr in `fmt` ("json" or "text")."""
    for name in ("isvserver", "huey"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        for handler in list(logger.handlers):
            if getattr(handler, "isvserver", False):
                logger.removeHandler(handler)
        handler = logging.StreamHandler()
        handler.isvserver = True  # type: ignore[attr-defined]
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
        logger.addHandler(handler)
