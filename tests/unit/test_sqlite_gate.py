"""SQLite's writers queue at a gate before BEGIN IMMEDIATE (threads, then processes), and every way
out frees it."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import OperationalError

from isvserver import db as db_module
from isvserver.db import GatedSqliteDatabase, make_database
from isvserver.sqlite_gate import Locked, WriterGate


@pytest.fixture
def gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedSqliteDatabase]:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_S", 0.5)
    database = make_database(f"sqlite:///{tmp_path / 'gate.sqlite3'}")
    assert isinstance(database, GatedSqliteDatabase)
    with database.connection_context():
        database.execute_sql("CREATE TABLE step (name TEXT)")
    yield database
    database.close_all()


def write(database: GatedSqliteDatabase, name: str) -> None:
    """One transaction of another thread, on a connection of its own."""
    with database.connection_context(), database.atomic():
        database.execute_sql("INSERT INTO step VALUES (?)", (name,))


def steps(database: GatedSqliteDatabase) -> list[str]:
    with database.connection_context():
        return [row[0] for row in database.execute_sql("SELECT name FROM step ORDER BY rowid")]


def test_a_writer_waits_for_the_transaction_open_in_another_thread_and_goes_in_when_it_commits(
    gated: GatedSqliteDatabase,
) -> None:
    started = threading.Event()
    with gated.connection_context():
        with gated.atomic():
            gated.execute_sql("INSERT INTO step VALUES ('first')")
            other = threading.Thread(target=lambda: (started.set(), write(gated, "second")))
            other.start()
            started.wait(5)
            other.join(0.2)
            assert other.is_alive()  # waiting for this transaction, not failing at SQLite's lock
        other.join(5)
    assert steps(gated) == ["first", "second"]


def test_a_rolled_back_or_failed_transaction_lets_the_next_writer_in(gated: GatedSqliteDatabase) -> None:
    with gated.connection_context():
        with pytest.raises(RuntimeError), gated.atomic():
            gated.execute_sql("INSERT INTO step VALUES ('undone')")
            raise RuntimeError("the handler failed")
        with pytest.raises(OperationalError), gated.atomic():
            gated.execute_sql("INSERT INTO nowhere VALUES (1)")
    other = threading.Thread(target=write, args=(gated, "next"))
    other.start()
    other.join(5)
    assert steps(gated) == ["next"]


def test_a_writer_waiting_past_the_busy_timeout_gets_sqlites_own_error(gated: GatedSqliteDatabase) -> None:
    failures: list[str] = []

    def blocked() -> None:
        try:
            write(gated, "late")
        except OperationalError as exc:
            failures.append(str(exc))

    with gated.connection_context(), gated.atomic():
        other = threading.Thread(target=blocked)
        other.start()
        other.join(5)
    assert failures == ["database is locked"]
    assert steps(gated) == []
    write(gated, "after")  # the gate is free again
    assert steps(gated) == ["after"]


def in_a_child(enter: WriterGate) -> str:
    """What a forked child meets at the gate: 'entered' or 'locked'."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one byte of answer, then gone
        try:
            enter.enter()
            answer = b"e"
        except Locked:
            answer = b"l"
        os.write(write, answer)
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    return {b"e": "entered", b"l": "locked"}[answer]


def test_another_process_waits_at_the_gate_even_when_forked_from_the_writer(tmp_path: Path) -> None:
    """The file lock is taken on a file opened in each process: a gate opened before a fork is no
    shared key. Once the writer leaves, the next process goes in."""
    gate = WriterGate(tmp_path / "db.sqlite3", timeout_s=0.3)
    gate.enter()
    try:
        assert in_a_child(gate) == "locked"
    finally:
        gate.leave()
    assert in_a_child(gate) == "entered"
    assert (tmp_path / "db.sqlite3-gate").stat().st_mode & 0o777 == 0o600


def test_leaving_a_gate_not_entered_changes_nothing(tmp_path: Path) -> None:
    gate = WriterGate(tmp_path / "db.sqlite3", timeout_s=0.3)
    gate.leave()
    gate.enter()
    gate.leave()
    gate.leave()
    assert in_a_child(gate) == "entered"
