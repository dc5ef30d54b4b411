"""Unauthenticated junk against `isvserver serve`: how much the database grows.

    .venv/bin/python bench/junk_storage.py [--calls 10000] [--sources 1] [--threads 8] [--workers 3]

Starts `isvserver serve` (production mode, SQLite in a temp dir, the shipped gunicorn configuration),
sends CALLS unauthenticated newInstance calls, each as large as the callback log could once hold (a
6 500-character instanceId list, 64-character ids, buyer-looking text, a made-up signature), from
SOURCES addresses (X-Forwarded-For, which loopback is trusted for), and prints the database's growth
after checkpointing its write-ahead log. Loopback only. The bound (< 2 MB for 10 000 calls from one
source) is asserted, scaled down, by tests/integration/test_junk_storage.py.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import base_env  # noqa: E402
from support.server import PRODUCE_PATH, http_request, running_server, subprocess_env  # noqa: E402

BUYER = "张三 +86 138 0013 8000 zhang.san@example.com"
LIMIT_BYTES = 2_000_000


def junk_body(i: int) -> bytes:
    """One junk call: every field at the most the callback log could once store."""
    body = {
        "activity": "newInstance",
        "instanceId": ",".join([f"{i:064d}"] * 100),
        "orderId": f"{i:064d}",
        "orderLineId": BUYER,
        "businessId": secrets.token_hex(32),
        "customerName": BUYER * 20,
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def database_bytes(path: Path) -> int:
    """The SQLite file's size once its write-ahead log is checkpointed into it."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def rows(path: Path, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql).fetchone()[0] or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isv-junk-") as tmp:
        work = Path(tmp)
        path = work / "isvserver.sqlite3"
        env = subprocess_env(base_env(work, f"sqlite:///{path}"))
        with running_server(env, work / "server.log", cwd=work, workers=args.workers) as server:
            before = database_bytes(path)

            def send(i: int) -> int:
                target = f"{PRODUCE_PATH}?signature={'A' * 64}&timestamp={int(time.time() * 1000)}&nonce=n{i}"
                source = {"X-Forwarded-For": f"198.51.100.{i % args.sources + 1}"}
                return http_request(server.base, "POST", target, junk_body(i), source).status

            started = time.monotonic()
            with ThreadPoolExecutor(args.threads) as pool:
                statuses = list(pool.map(send, range(args.calls)))
            seconds = time.monotonic() - started
            grown = database_bytes(path) - before
        logged = rows(path, "SELECT COUNT(*) FROM callback_log")
        counted = rows(path, "SELECT SUM(calls) FROM rejected_call_count")
    sent = len(statuses)
    print(f"{sent} junk calls from {args.sources} source(s) in {seconds:.1f} s ({sent / seconds:.0f}/s), "
          f"all HTTP 200: {all(s == 200 for s in statuses)}")  # fmt: skip
    print(f"callback_log rows: {logged}; rejected calls counted: {counted}")
    print(f"database growth: {grown} bytes ({grown / 1e6:.3f} MB, {grown / sent:.1f} bytes per call)")
    if args.sources > 1:  # each source within its rate is logged: the bound is per source and minute
        print(f"{logged / args.sources:.0f} rows per source ({grown / args.sources:.0f} bytes per source)")
        return 0
    ok = grown < LIMIT_BYTES * args.calls / 10_000
    print("within the bound (< 2 MB per 10 000 calls)" if ok else "OVER the bound (< 2 MB per 10 000 calls)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
