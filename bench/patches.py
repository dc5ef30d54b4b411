"""Proposed fixes, tried out in the benchmark's own processes without touching isvserver/.

Each patch monkeypatches isvserver in memory to simulate one fix proposed in docs/benchmarks.md, so
its effect can be measured (bench/profile.py --patch, bench/run.py --patch) before it is applied to
the real code. In the code by now (see "Fixes of 2026-11-22" in docs/benchmarks.md), in their own
form: request-connection, sqlite-pool, nonce-upsert, raw-sql (statements built once), short-txn (the
write lock only for the writes). keys-cache stays a simulation (a per-worker cache that can go stale
is not acceptable); it measures what skipping the access_key SELECT altogether would give.
Nothing here is used by isvserver itself. Patches are named in ISV_BENCH_PATCHES
(comma-separated) when the app is built by bench/patched_app.py under gunicorn.

  request-connection  hold one database connection for the whole request (one pool check-out, one
                      PostgreSQL liveness ping) instead of one per `connected()` block (two)
  sqlite-pool         keep SQLite connections open across requests (playhouse.pool.PooledSqliteDatabase)
                      instead of opening the file, running the pragmas and closing it (the last close
                      checkpoints the WAL and deletes it) twice per request
  sqlite-normal       PRAGMA synchronous=NORMAL (WAL: no fsync per commit, only at checkpoints)
  nonce-upsert        insert the nonce with INSERT … ON CONFLICT (digest) DO NOTHING and read the row
                      count, instead of a SAVEPOINT/INSERT/RELEASE that catches IntegrityError (two
                      statements fewer inside the call's transaction)
  keys-cache          keystore.verification_keys answered from a per-worker cache for 2 s instead of a
                      SELECT on access_key in every request (a retired key stops working within 2 s)
  short-txn           no transaction around the whole call (views' `database.atomic()` made a no-op):
                      the nonce INSERT and the callback_log INSERT commit on their own and a change
                      commits in the lifecycle's own transaction, so SQLite's write lock is held for
                      single statements instead of the whole call (the reads, the decryption and the
                      signing of the reply ran under it); approximates taking the lock only for the
                      writes
  raw-sql             the callback_log INSERT and the instance SELECT as fixed SQL text with parameters,
                      not rebuilt by peewee's query compiler on every call
"""

# ruff: noqa: S608  (SQL text built from column names in code; values are always parameters)

from __future__ import annotations

import os
from typing import Any

KNOWN = (
    "request-connection",
    "sqlite-pool",
    "sqlite-normal",
    "nonce-upsert",
    "keys-cache",
    "raw-sql",
    "short-txn",
)


def requested(value: str | None = None) -> list[str]:
    names = [
        n.strip()
        for n in (value if value is not None else os.environ.get("ISV_BENCH_PATCHES", "")).split(",")
    ]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise SystemExit(f"unknown patch {unknown[0]!r}; known: {', '.join(KNOWN)}")
    return names


def apply_before_app(names: list[str]) -> None:
    """Patches that must be in place before create_app() binds the database."""
    from isvserver import db

    if "sqlite-pool" in names or "sqlite-normal" in names:
        original = db.make_database

        def make_database(url: str) -> Any:
            made = original(url)
            if not url.startswith("sqlite:///"):
                return made
            from playhouse.pool import PooledSqliteDatabase

            pragmas = dict(made._pragmas)
            if "sqlite-normal" in names:
                pragmas["synchronous"] = "normal"
            if "sqlite-pool" not in names:
                made._pragmas = list(pragmas.items())
                return made
            return PooledSqliteDatabase(
                made.database,
                pragmas=pragmas,
                timeout=db.SQLITE_BUSY_TIMEOUT_S,
                lock_type="IMMEDIATE",
                autoconnect=False,
                max_connections=4,
                stale_timeout=300,
            )

        db.make_database = make_database

    if "nonce-upsert" in names:
        import hashlib
        import random

        from isvserver import replay
        from isvserver.db import database

        def first_use(scope: str, nonce: str, now_ms: int, keep_ms: int) -> bool:
            digest = hashlib.sha256(f"{scope}\n{nonce}".encode()).hexdigest()
            p = database.obj.param
            cursor = database.execute_sql(
                f"INSERT INTO nonce (digest, seen_at) VALUES ({p}, {p}) ON CONFLICT (digest) DO NOTHING",
                (digest, now_ms),
            )
            if cursor.rowcount != 1:
                return False
            if random.randrange(replay.PRUNE_ONE_IN) == 0:
                replay.prune(now_ms - keep_ms)
            return True

        replay.first_use = first_use

    if "keys-cache" in names:
        import time

        from isvserver import calls as views
        from isvserver import keystore

        original_keys = keystore.verification_keys
        cache: dict[str, tuple[float, tuple[str, ...]]] = {}

        def verification_keys(settings: Any, interface: str) -> tuple[str, ...]:
            now = time.monotonic()
            hit = cache.get(interface)
            if hit is not None and now - hit[0] < 2.0:
                return hit[1]
            keys = original_keys(settings, interface)
            cache[interface] = (now, keys)
            return keys

        keystore.verification_keys = verification_keys
        views.keystore = keystore

    if "raw-sql" in names:
        _raw_sql(names)

    if "short-txn" in names:
        import contextlib

        from isvserver import calls as views

        class NoCallTransaction:
            """The database, except that atomic() at the call level opens no transaction."""

            def __init__(self, target: Any) -> None:
                self._target = target

            def atomic(self, *args: Any, **kwargs: Any) -> Any:
                return contextlib.nullcontext()

            def __getattr__(self, name: str) -> Any:
                return getattr(self._target, name)

        assert hasattr(views, "database"), "isvserver changed: views.database is gone"
        views.database = NoCallTransaction(views.database)


def _raw_sql(names: list[str]) -> None:
    from dataclasses import astuple, fields

    from isvserver import calllog as callbacks
    from isvserver import calls as views
    from isvserver import lifecycle
    from isvserver.db import database
    from isvserver.models import Instance, utcnow

    columns = [f.name for f in fields(callbacks.CallRecord)]

    def store(call: Any) -> None:
        """callbacks.store: the callback_log row, in the open connection and transaction."""
        p = database.obj.param
        sql = (
            f"INSERT INTO callback_log (received_at, {', '.join(columns)}) "
            f"VALUES ({', '.join([p] * (len(columns) + 1))})"
        )
        limits = callbacks._LIMITS.values()
        values = tuple(callbacks._storable_text(v, n) for v, n in zip(astuple(call), limits, strict=True))
        database.execute_sql(sql, (utcnow(), *values))

    for module in (callbacks, views):
        assert hasattr(module, "store"), "isvserver changed: callbacks.store is gone"
        module.store = store

    select_cols = ", ".join(f'"{f.column_name}"' for f in Instance._meta.sorted_fields)

    def find_instances(instance_ids: Any) -> dict[str, Any]:
        ids = list(instance_ids)
        p = database.obj.param
        sql = f'SELECT {select_cols} FROM "instance" WHERE "instance_id" IN ({", ".join([p] * len(ids))})'
        return {row.instance_id: row for row in Instance.raw(sql, *ids)}

    lifecycle.find_instances = find_instances


def apply_to_app(app: Any, names: list[str]) -> None:
    """Patches that hook into the built Flask app."""
    if "request-connection" in names:
        from isvserver.db import database

        @app.before_request
        def _open() -> None:
            database.connect(reuse_if_open=True)

        @app.teardown_request
        def _close(exc: BaseException | None) -> None:
            if not database.is_closed():
                database.close()
