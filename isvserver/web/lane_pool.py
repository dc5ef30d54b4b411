"""The web worker's threads, taking whole requests from two lanes: reads first, changes after.

A thread that ends a request takes the next one itself (as in concurrent.futures' pool, with no trip
through the worker's event loop): a read if one waits, else the oldest change; after READS_IN_A_ROW
reads while changes wait, one change has its turn, so that reads cannot starve changes.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

READS_IN_A_ROW = 8

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class LanePool:
    """`threads` threads serving a lane of reads and one of changes (what gthread uses of an Executor)."""

    def __init__(self, threads: int) -> None:
        self._ready = threading.Condition()
        self._reads: deque[_Work] = deque()
        self._changes: deque[_Work] = deque()
        self._reads_in_a_row = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"lane-pool-{n}") for n in range(max(threads, 1))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, reads: bool = False) -> Future[Any]:
        """Run fn(*args) in a thread, in the reads lane or the changes lane; its future."""
        future: Future[Any] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            (self._reads if reads else self._changes).append((future, fn, args))
            self._ready.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more work; the threads end once the lanes are empty (cancelled first, if asked)."""
        with self._ready:
            self._closed = True
            if cancel_futures:
                for future, _, _ in (*self._reads, *self._changes):
                    future.cancel()
                self._reads.clear()
                self._changes.clear()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _next(self) -> _Work | None:
        """The next work to do, waiting for it; None once shut down and empty."""
        with self._ready:
            while not (self._reads or self._changes or self._closed):
                self._ready.wait()
            change_turn = self._reads_in_a_row >= READS_IN_A_ROW and self._changes
            if self._reads and not change_turn:
                self._reads_in_a_row += 1
                return self._reads.popleft()
            if self._changes:
                self._reads_in_a_row = 0
                return self._changes.popleft()
            return None

    def _serve(self) -> None:
        while (work := self._next()) is not None:
            future, fn, args = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # the future carries it, as an Executor's does
                future.set_exception(exc)
            else:
                future.set_result(result)
            del work, future, fn, args
