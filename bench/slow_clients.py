"""Slow and idle clients against `isvserver serve`: how long signed calls wait, which workers die.

    .venv/bin/python bench/slow_clients.py [--worker-class sync|gthread|shipped] [--count 200]
        [--hold 60] [--workers 3] [--db sqlite|postgres]

Starts `isvserver serve` (production mode, SQLite in a temp dir, or a throwaway PostgreSQL cluster)
with the shipped gunicorn configuration, or with it and another worker class (config/gunicorn.conf.py
with `worker_class` set at its end), holds COUNT loopback connections that send
nothing or trickle a request head or body a byte a second (each one closed by the server is opened
again at once) for HOLD seconds while a client sends a signed newInstance every 0.25 s, and prints
the calls' latencies, the connections the server closed and the workers it lost. Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import base_env  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402
from support.server import live_processes, running_server, subprocess_env  # noqa: E402
from support.slow_clients import SlowClients, percentile, timed_calls  # noqa: E402

WORKER_CLASSES = {"shipped": None, "sync": "sync", "gthread": "gthread"}


def workers_of(master: int) -> set[int]:
    """The gunicorn master's worker processes (the job consumer is started with --supervised)."""
    pids = set()
    for pid, _, fields in live_processes():
        if int(fields[1]) == master:
            with contextlib.suppress(OSError):
                if b"--supervised" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(pid)
    return pids


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    """A database URL for the server."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'isvserver.sqlite3'}"
        return
    with PostgresServer(work / "pg") as pg:
        yield pg.create_database("slow_clients")


def main() -> int:
    """Run once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker-class", choices=sorted(WORKER_CLASSES), default="shipped")
    parser.add_argument("--count", type=int, default=200, help="slow connections held (200)")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds they are held (60)")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (3)")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="isv-slow-") as tmp:
        work = Path(tmp)
        serve_args: tuple[str, ...] = ()
        worker_class = WORKER_CLASSES[args.worker_class]
        if worker_class:
            conf = work / "gunicorn.conf.py"
            override = (ROOT / "config" / "gunicorn.conf.py").read_text()
            threads = "threads = 1\n" if worker_class == "sync" else ""  # more would make it gthread
            conf.write_text(override + f"worker_class = {worker_class!r}\n{threads}")
            serve_args = ("--config", str(conf))
        with database(args.db, work) as url:
            env = subprocess_env(base_env(work, url))
            log_path = work / "server.log"
            with running_server(
                env, log_path, cwd=work, workers=args.workers, serve_args=serve_args
            ) as server:
                before = workers_of(server.pid)
                clients = SlowClients(server.port, count=args.count, hold_s=args.hold)
                stop = threading.Event()
                result: list = []
                caller = threading.Thread(target=lambda: result.extend(timed_calls(server, stop)))
                clients.start()
                started = time.monotonic()
                caller.start()
                peak = 0
                while clients._thread is not None and clients._thread.is_alive():
                    peak = max(peak, clients.held())
                    time.sleep(0.5)
                stop.set()
                caller.join(60)
                clients.stop()
                held_for = time.monotonic() - started
                after = workers_of(server.pid)
                log = server.read_log()
    seconds = [c.seconds for c in result]
    good = [c for c in result if c.status == 200 and c.signed_ok and c.code in ("000000", "000004")]
    errors = sorted({c.error for c in result if c.error})[:3]
    print(
        f"worker class {args.worker_class} ({worker_class or 'isvserver.web.worker.BufferedThreadWorker'}), "
        f"{args.workers} workers, {args.db}: {args.count} slow connections held {held_for:.0f} s "
        f"(opened {dict(clients.opened)}, closed by the server {dict(clients.closed_by_server)}, "
        f"answered {dict(clients.answered)}, connect failures {clients.connect_failures}, peak {peak})"
    )
    print(
        f"signed calls: {len(result)} sent, {len(good)} answered 000000 signed; latency "
        f"p50 {percentile(seconds, 0.5):.3f} s, p99 {percentile(seconds, 0.99):.3f} s, "
        f"max {max(seconds or [0]):.3f} s; over 1 s: {sum(1 for s in seconds if s > 1.0)}; errors: {errors}"
    )
    print(
        f"workers: {len(before - after)} of {len(before)} gone; WORKER TIMEOUT lines: "
        f"{log.count('WORKER TIMEOUT')}; 'was sent SIGKILL': {log.count('was sent SIGKILL')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
