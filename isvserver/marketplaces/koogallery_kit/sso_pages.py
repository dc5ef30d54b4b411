"""The HTML pages a browser gets under the SSO mount: never JSON, never a stack trace, never a secret."""

from __future__ import annotations

from html import escape

from flask import Response

TITLES = {
    400: "This sign-in link cannot be used",
    403: "You are not authorised for this application",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    500: "Sign-in failed",
    502: "The identity provider refused the sign-in",
    503: "Single sign-on is not available",
    504: "The identity provider did not answer in time",
}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}</style>
</head><body><h1 id="title">{title}</h1><p id="message">{message}</p>
<p id="status">HTTP {status}</p></body></html>
"""
# No referrer (the callback's URL holds the code), no caching, nothing loaded from anywhere.
HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def page(status: int, message: str) -> Response:
    """An HTML page with `status`, its title and `message` (escaped)."""
    title = TITLES.get(status, "Sign-in failed")
    body = PAGE.format(title=escape(title), message=escape(message), status=status)
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers.update(HEADERS)
    return response


def error_page(status: int, message: str) -> Response:
    """The SSO mount's answer to a 404, 405, 413 or unhandled error (500) on its paths."""
    if status >= 500:
        message = "Something went wrong on our side. Please try again from your application list."
    return page(status, message)
