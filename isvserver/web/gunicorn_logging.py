"""gunicorn's error and access loggers, with every line redacted before it is written.

gunicorn logs the request line (with its query string: `signature`, `timestamp`, `nonce`) when a
worker is aborted in the middle of a request, when a request line or header cannot be parsed, and
when an error escapes the app; an access log format with %(r)s or %(q)s would too. This logger
(`logger_class` in the gunicorn configuration) passes every record of both loggers, message and
traceback, through `redact_line` first.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger

from isvserver.logs import format_exception, redact

# A query string after a path (in a request line, a URI, a message quoting either).
QUERY_STRING = re.compile(r"(?<=[^\s?'\"])\?[^\s'\"]+")
# The signed call's parameters and anything key-like, wherever they stand (a bare query string).
# OAuth's tokens, verifiers, assertions and client secrets too (the SSO callback's code and state only
# travel in its query string, removed whole above).
SIGNED_PAIR = re.compile(
    r"(?i)\b(signature|timestamp|nonce|sign|ak|sk|access_?key|code_verifier|access_token|"
    r"refresh_token|id_token|client_secret|assertion)=([^&\s\"']+)"
)
REDACTED = "[redacted]"


def redact_line(text: str) -> str:
    """`text` without query strings and with the value of every secret-looking name=value pair hidden."""
    text = QUERY_STRING.sub("?" + REDACTED, text)
    return redact(SIGNED_PAIR.sub(lambda m: f"{m.group(1)}=***", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback) redacted, before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a format that does not fit its arguments: keep the template only
            message = str(record.msg)
        record.msg = redact_line(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact_line(format_exception(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_line(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_line(record.stack_info)
        return True


class RedactingLogger(Logger):
    """gunicorn's Logger whose error and access lines never carry a query string or a secret."""

    def setup(self, cfg: Any) -> None:
        """gunicorn's setup, then the redacting filter on both loggers (once)."""
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactingFilter) for f in log.filters):
                log.addFilter(RedactingFilter())

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        """The access log's atoms, the query string among them, redacted."""
        atoms = super().atoms(resp, req, environ, request_time)
        atoms["q"] = REDACTED if atoms.get("q") else atoms.get("q")
        return {k: redact_line(v) if isinstance(v, str) else v for k, v in atoms.items()}
