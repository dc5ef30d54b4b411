"""The peewee database: SQLite (default) or PostgreSQL chosen by URL, one connection per request."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from peewee import Database, DatabaseProxy, OperationalError, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.pool import PooledSqliteDatabase

from isvserver.files import private_sqlite
from isvserver.sqlite_gate import Locked, WriterGate

database = DatabaseProxy()

SQLITE_BUSY_TIMEOUT_S = 3.0  # well under the marketplace's 5 s; a busy writer waits instead of failing


class GatedSqliteDatabase(PooledSqliteDatabase):
    """Pooled SQLite whose writers queue at a WriterGate before BEGIN IMMEDIATE (sqlite_gate.py)."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        path = None if database in ("", ":memory:") else Path(database)
        self.gate = WriterGate(path, SQLITE_BUSY_TIMEOUT_S)

    def begin(self, *args: Any, **kwargs: Any) -> None:
        """Wait for the writers before, then BEGIN."""
        try:
            self.gate.enter()
        except Locked:
            raise OperationalError("database is locked") from None
        try:
            super().begin(*args, **kwargs)
        except BaseException:
            self.gate.leave()
            raise

    def commit(self) -> None:
        """COMMIT, and let the next writer in."""
        try:
            super().commit()
        finally:
            self.gate.leave()

    def rollback(self) -> None:
        """ROLLBACK, and let the next writer in."""
        try:
            super().rollback()
        finally:
            self.gate.leave()

    def close(self) -> bool:
        """Close, and let the next writer in (peewee refuses to close inside a transaction)."""
        closed = super().close()
        self.gate.leave()
        return closed


def make_database(url: str) -> Database:
    """A peewee database for `url`, not yet connected (nothing may be open across gunicorn's fork)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = unquote(url[len("sqlite:///") :])
        if path != ":memory:":
            private_sqlite(Path(path))  # 0600, and so its -wal and -shm
        # Pooled: opening the file and running the pragmas on every call costs more than the call, and
        # closing the last connection checkpoints the WAL each time.
        return GatedSqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "foreign_keys": 1, "synchronous": "full"},
            timeout=SQLITE_BUSY_TIMEOUT_S,
            lock_type="IMMEDIATE",
            autoconnect=False,
            max_connections=8,
            check_same_thread=False,  # a pooled connection may serve another thread later (never two at once)
            stale_timeout=300,
        )
    return connect_url(
        url.replace("postgres://", "postgresql://", 1).replace("postgresql://", "postgresql+pool://", 1),
        max_connections=16,
        stale_timeout=300,
        timeout=5,
        autoconnect=False,
    )


def bind(url: str) -> Database:
    """Point the shared proxy (and so every model) at the database of `url`."""
    db = make_database(url)
    database.initialize(db)
    return db


def is_postgres(db: Database | DatabaseProxy = database) -> bool:
    """Whether `db` speaks PostgreSQL."""
    target = db.obj if isinstance(db, DatabaseProxy) else db
    return not isinstance(target, SqliteDatabase)


@contextmanager
def held_for_call() -> Iterator[None]:
    """One connection for a whole call, when the database answers.

    When it does not, nothing is raised here: the call's own steps meet the failure and answer it.
    """
    opened = False
    if database.is_closed():
        with suppress(Exception):
            database.connect()
            opened = True
    try:
        yield
    finally:
        if opened and not database.is_closed():
            database.close()


@contextmanager
def connected(db: Database | DatabaseProxy = database) -> Iterator[None]:
    """Hold a connection for the block, opening (and then closing) one only if none is open."""
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        yield
    finally:
        if opened and not db.is_closed():
            db.close()


_STATEMENTS: weakref.WeakKeyDictionary[Database, dict[Hashable, str]] = weakref.WeakKeyDictionary()


def statement(key: Hashable, build: Callable[[Database], str]) -> str:
    """The SQL text of a hot statement, built once per bound database (its dialect) and `key`.

    `build` gets the bound database (for its `param` and `quote`) and returns the text, its columns
    taken from the models; values always go as parameters of `database.execute_sql`.
    """
    target = database.obj
    built = _STATEMENTS.setdefault(target, {})
    sql = built.get(key)
    if sql is None:
        sql = built[key] = build(target)
    return sql


def ident(db: Database, name: str) -> str:
    """A table or column name quoted for `db` (peewee's quote characters)."""
    return f"{db.quote[0]}{name}{db.quote[1]}"


def names(db: Database, *columns: str) -> str:
    """`columns` quoted for `db`, comma-separated."""
    return ", ".join(ident(db, c) for c in columns)


def placeholders(db: Database, count: int) -> str:
    """`count` parameter placeholders for `db`, comma-separated."""
    return ", ".join([db.param] * count)


def close_all(db: Database | DatabaseProxy = database) -> None:
    """Close every connection, pooled ones included (at shutdown and between tests)."""
    target = db.obj if isinstance(db, DatabaseProxy) else db
    if target is None:
        return
    if hasattr(target, "close_all"):
        target.close_all()
    elif not target.is_closed():
        target.close()
