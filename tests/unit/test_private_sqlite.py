"""A SQLite file's companions are made private, and one that vanishes meanwhile is no error."""

from __future__ import annotations

from pathlib import Path

import pytest

from isvserver.files import private_sqlite


def test_companions_are_made_private_and_one_removed_between_look_and_change_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "queue.sqlite3"
    wal, gate = tmp_path / "queue.sqlite3-wal", tmp_path / "queue.sqlite3-gate"
    for path in (database, wal, gate):
        path.touch(mode=0o644)
        path.chmod(0o644)
    real_stat = Path.stat

    def stat(path: Path, **kwargs: object) -> object:
        if path == wal:  # SQLite dropped its -wal after exists() saw it (the last connection closed)
            wal.unlink(missing_ok=True)
        return real_stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    assert private_sqlite(database) == database
    monkeypatch.undo()
    assert [p.stat().st_mode & 0o777 for p in (database, gate)] == [0o600, 0o600]
    assert not wal.exists()
