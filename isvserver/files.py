"""Private files: the instance folder 0700, databases, queue, keys and metrics 0600, whatever the umask."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal", "-gate")


def restrict_umask() -> int:
    """Make every file this process (and its children) creates from now on private; the old umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can enter (created if missing, parents included)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _chmod(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner can read and write (created empty if missing)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    _chmod(path, FILE_MODE)
    return path


def private_sqlite(path: Path) -> Path:
    """A SQLite database file and its -wal/-shm/-journal companions private (SQLite gives the
    companions the mode of the database file when it creates them)."""
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _chmod(companion, FILE_MODE)
    return path


def _chmod(path: Path, mode: int) -> None:
    """Set `mode` on a path we own; leave a path another user owns, or one just removed (SQLite drops
    its -wal when the last connection closes), as it is."""
    with contextlib.suppress(PermissionError, FileNotFoundError):
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
