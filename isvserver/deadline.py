"""The answer deadline: when a call arrived, how long it may still take, and how many calls may wait.

The web worker (isvserver/web/worker.py) puts in the WSGI environ when the request's first byte was
read and how many threads it has; where no worker says so (the test client, another server), the
request's arrival is when the app first saw it. The only state kept in process memory is the bound
on waiting calls: nothing here needs to survive the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

ARRIVED = "isvserver.arrived"  # time.monotonic() of the request's first byte (set by the worker)
THREADS = "isvserver.threads"  # the worker's thread count (set by the worker)
DEFAULT_THREADS = 4  # gunicorn.conf.py's, for a server that does not say
ANSWER_TIME_S = 0.1  # what rendering and writing an answer may take once a wait has ended

_rooms: dict[int, threading.BoundedSemaphore] = {}
_rooms_lock = threading.Lock()


def arrived(environ: MutableMapping[str, Any]) -> float:
    """When the request arrived (time.monotonic()): the worker's stamp, else now, remembered."""
    stamp = environ.get(ARRIVED)
    if not isinstance(stamp, float):
        stamp = environ[ARRIVED] = time.monotonic()
    return stamp


def answer_by(environ: MutableMapping[str, Any], deadline_ms: int) -> float:
    """When the answer must be written at the latest (time.monotonic())."""
    return arrived(environ) + deadline_ms / 1000


def wait_until(environ: MutableMapping[str, Any], deadline_ms: int, budget_ms: int) -> float:
    """When a wait inside the call must end: `budget_ms` after arrival, and early enough to answer by the
    deadline."""
    return min(arrived(environ) + budget_ms / 1000, answer_by(environ, deadline_ms) - ANSWER_TIME_S)


def waiting_slots(threads: int) -> int:
    """How many of a worker's `threads` may wait at once: half, the rest kept for calls that do not wait."""
    return max(threads, 0) // 2


def threads_of(environ: MutableMapping[str, Any]) -> int:
    """The worker's thread count as the worker told it, else gunicorn.conf.py's."""
    threads = environ.get(THREADS)
    return threads if isinstance(threads, int) else DEFAULT_THREADS


def _room(threads: int) -> threading.BoundedSemaphore | None:
    slots = waiting_slots(threads)
    if slots == 0:
        return None
    with _rooms_lock:
        room = _rooms.get(slots)
        if room is None:
            room = _rooms[slots] = threading.BoundedSemaphore(slots)
        return room


@contextmanager
def waiting_slot(threads: int) -> Iterator[bool]:
    """One of this process's waiting slots for the block, if one is free now (True), else False at once."""
    room = _room(threads)
    if room is None or not room.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        room.release()
