"""The read lane: which requests the web worker gives a thread before the changes waiting for one.

A burst of changing calls (newInstance, a Kit sync) queues for the worker's threads; a call that only
reads (queryInstance, a broker's fetch or last_operation, a health check) should not wait behind them.
Each mount says which of its requests read (`Mount.reads`); without a word, its GET and HEAD requests
do. The worker decides in its event loop, from the request's head and the first PEEK_BYTES of its body,
before any thread takes it: a misjudged request is only served in another order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import parse_qs

# The app's judge of arrivals (a Callable[[Arrival], bool]) in Flask's app.extensions.
EXTENSION = "isvserver.reads"
# How much of a body the judge sees: a marketplace's call is a few hundred bytes.
PEEK_BYTES = 4096
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Arrival:
    """A request as the worker knows it before a thread takes it."""

    method: str
    path: str
    query: str
    body: bytes  # its first PEEK_BYTES


Judge = Callable[[Arrival], bool]


def safe_method(arrival: Arrival) -> bool:
    """GET and HEAD read (what a mount without a judge of its own is judged by)."""
    return arrival.method in SAFE_METHODS


def json_field_in(name: str, values: Collection[str]) -> Judge:
    """Reads: a JSON object body whose top-level `name` is one of `values`."""

    def reads(arrival: Arrival) -> bool:
        try:
            found = json.loads(arrival.body)
        except (ValueError, RecursionError):
            return False  # not JSON, or cut at PEEK_BYTES: a change until proved otherwise
        value = found.get(name) if isinstance(found, dict) else None
        return isinstance(value, str) and value in values

    return reads


def query_field_in(name: str, values: Collection[str]) -> Judge:
    """Reads: a request whose query string's `name` is one of `values`."""

    def reads(arrival: Arrival) -> bool:
        try:
            found = parse_qs(arrival.query, max_num_fields=64).get(name, ())
        except ValueError:  # more fields than any marketplace sends
            return False
        return len(found) == 1 and found[0] in values

    return reads
