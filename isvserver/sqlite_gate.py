"""One writer at a time on a SQLite file, queued here rather than in SQLite's busy handler.

SQLite lets one writer in at a time; a writer that finds the lock taken sleeps and retries in growing
steps (1, 2, 5 … up to 100 ms) while newcomers may take the lock first, so under a burst of writes a
call can wait hundreds of ms for a lock that was free most of the time. Writers wait here instead:
the threads of a process on a lock of the process, each woken as soon as the one before it is done,
and the one thread of each process that holds it on a lock of the file beside the database
(`<database>-gate`, fcntl), tried every millisecond. A writer waits at most `timeout_s`, as it would
for SQLite, and the file lock goes with its process if the process dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from isvserver.files import FILE_MODE

RETRY_S = 0.001
SUFFIX = "-gate"


class Locked(Exception):
    """The writers before this one did not finish within the timeout."""


class WriterGate:
    """The queue of writers to one SQLite file (`path` None: of this process only, e.g. :memory:)."""

    def __init__(self, path: Path | None, timeout_s: float) -> None:
        self.path = path.with_name(path.name + SUFFIX) if path is not None else None
        self.timeout_s = timeout_s
        self._threads = threading.Lock()
        self._holder = threading.local()
        self._file: tuple[int, int] | None = None  # (pid, fd): opened in each process, after a fork

    def enter(self) -> None:
        """Wait for the writers before this one; raise Locked past the timeout."""
        deadline = time.monotonic() + self.timeout_s
        if not self._threads.acquire(timeout=self.timeout_s):
            raise Locked
        try:
            fd = self._fd()
            if fd is not None:
                while not _try_lock(fd):
                    if time.monotonic() >= deadline:
                        raise Locked
                    time.sleep(RETRY_S)
        except BaseException:
            self._threads.release()
            raise
        self._holder.fd = fd
        self._holder.inside = True

    def leave(self) -> None:
        """Let the next writer in (nothing, when this thread is not inside)."""
        if not getattr(self._holder, "inside", False):
            return
        self._holder.inside = False
        try:
            if self._holder.fd is not None:
                fcntl.flock(self._holder.fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _fd(self) -> int | None:
        if self.path is None:
            return None
        pid = os.getpid()
        if self._file is None or self._file[0] != pid:  # a lock file shared across a fork is one lock
            self._file = (pid, os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        return self._file[1]


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
