"""A burst of newInstance calls against `isvserver serve`: every answer within the deadline, queries on time.

    .venv/bin/python bench/answer_deadline.py [--db sqlite|postgres] [--workers 2] [--calls 48]
        [--queries 200] [--product-delay 3.0] [--scenario stopped|slow|both]

Starts `isvserver serve` (production mode, the shipped gunicorn configuration: N workers × 4 threads,
default ISV_PROVISION_BUDGET_MS and ISV_ANSWER_DEADLINE_MS) with the webhook provisioner pointing at a
loopback receiver, on SQLite in a temporary directory or a throwaway PostgreSQL cluster. Two scenarios:
`stopped` (no job consumer: nothing is ever provisioned) and `slow` (the consumer runs, the product
answers each webhook after PRODUCT_DELAY seconds). In each, CALLS newInstance calls are sent at the
same moment, each on its own connection, while QUERIES queryInstance calls (of instances made just
before) are sent one every 10 ms; it prints the answers' result codes and latencies at the client, the
call log's latencies (from arrival, in the server), and the queries' p50/p99. Loopback only; one run
takes under a minute per scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import ACCESS_KEY, base_env  # noqa: E402
from support.postgres import PostgresServer  # noqa: E402
from support.receiver import WebhookReceiver  # noqa: E402
from support.server import (  # noqa: E402
    Server,
    db_rows,
    http_request,
    post_signed,
    running_server,
    subprocess_env,
    wait_until,
)
from support.slow_clients import percentile  # noqa: E402

QUERY_INTERVAL_S = 0.01


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    """A database URL for the server."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'isvserver.sqlite3'}"
        return
    with PostgresServer(work / "pg") as pg:
        yield pg.create_database("answer_deadline")


def timed(server: Server, body: dict[str, Any]) -> tuple[str, float, str]:
    """(result code or error, seconds at the client, request id) of one signed call."""
    started = time.monotonic()
    try:
        reply, _ = post_signed(server, body)
        ok = reply.status == 200 and reply.signed_by(ACCESS_KEY)
        code = reply.json["resultCode"] if ok else f"HTTP {reply.status}"
        request_id = reply.headers.get("X-Request-Id", "")
    except OSError as exc:
        code, request_id = type(exc).__name__, ""
    return code, time.monotonic() - started, request_id


def new_instance_body() -> dict[str, str]:
    order_id = f"CB{uuid.uuid4().hex[:12].upper()}"
    return {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": f"{order_id}-000001",
        "businessId": str(uuid.uuid4()),
    }


def waits(server: Server) -> dict[str, int]:
    """isv_answer_waits_total by outcome, from /metrics."""
    found: dict[str, int] = {}
    for line in http_request(server.base, "GET", "/metrics").raw.decode().splitlines():
        if line.startswith("isv_answer_waits_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = int(float(line.rsplit(" ", 1)[1]))
    return found


def run_burst(server: Server, calls: int, queries: int) -> dict[str, Any]:
    """Warm up (8 instances to query), then the burst and the queries; the figures."""
    with ThreadPoolExecutor(8) as pool:
        known = [body["businessId"] for body in (new_instance_body() for _ in range(8))]
        list(pool.map(lambda i: timed(server, {**new_instance_body(), "businessId": i}), known))
    bodies = [new_instance_body() for _ in range(calls)]
    query_results: list[tuple[str, float, str]] = []
    gate = threading.Barrier(calls + 1)

    def one_new(body: dict[str, str]) -> tuple[str, float, str]:
        gate.wait()
        return timed(server, body)

    def querier() -> None:
        with ThreadPoolExecutor(32) as pool:
            futures = []
            for n in range(queries):
                futures.append(
                    pool.submit(timed, server, {"activity": "queryInstance", "instanceId": known[n % 8]})
                )
                time.sleep(QUERY_INTERVAL_S)
            query_results.extend(f.result() for f in futures)

    with ThreadPoolExecutor(calls) as pool:
        futures = [pool.submit(one_new, body) for body in bodies]
        query_thread = threading.Thread(target=querier)
        gate.wait()
        query_thread.start()
        new_results = [f.result() for f in futures]
        query_thread.join()
    ids = {request_id for _, _, request_id in new_results if request_id}
    sql = "SELECT request_id, result_code, latency_ms, delivery FROM callback_log WHERE activity = ?"

    def logged_rows() -> list[tuple[Any, ...]]:
        return [row for row in db_rows(server.database_url, sql, ("newInstance",)) if row[0] in ids]

    # A waiting call's row is rewritten with its delivery just after its answer was written.
    wait_until(lambda: all(row[3] != "not_sent" for row in logged_rows()), 10)
    logged = logged_rows()
    asked = {request_id for _, _, request_id in query_results if request_id}
    query_ms = [row[2] for row in db_rows(server.database_url, sql, ("queryInstance",)) if row[0] in asked]
    return {
        "new": new_results,
        "queries": query_results,
        "query_ms": query_ms,
        "logged": logged,
        "waits": waits(server),
    }


def report(name: str, figures: dict[str, Any], calls: int) -> None:
    new = figures["new"]
    seconds = [s for _, s, _ in new]
    query_seconds = [s for _, s, _ in figures["queries"]]
    server_ms = [row[2] for row in figures["logged"]]
    print(f"\n== {name}")
    late = sum(s > 3 for s in seconds)
    print(
        f"newInstance x{calls} at once: codes {dict(Counter(c for c, _, _ in new))}; at the client "
        f"p50 {percentile(seconds, 0.5):.3f} s, max {max(seconds):.3f} s; over 3 s: {late}"
    )
    print(
        f"  call log (from arrival): max {max(server_ms or [0]):.0f} ms; deliveries "
        f"{dict(Counter(row[3] for row in figures['logged']))}; waits {figures['waits']}"
    )
    codes = dict(Counter(c for c, _, _ in figures["queries"]))
    p50, p99 = (percentile(query_seconds, q) * 1000 for q in (0.5, 0.99))
    print(
        f"queryInstance x{len(query_seconds)} meanwhile: codes {codes}; "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(query_seconds) * 1000:.0f} ms"
    )
    server_ms = figures["query_ms"] or [0.0]
    print(
        f"  their call log (from arrival): p50 {percentile(server_ms, 0.5):.0f} ms, "
        f"p99 {percentile(server_ms, 0.99):.0f} ms, max {max(server_ms):.0f} ms"
    )


def main() -> int:
    """Run the scenarios once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--calls", type=int, default=48, help="simultaneous newInstance calls (48)")
    parser.add_argument("--queries", type=int, default=200, help="queryInstance calls meanwhile (200)")
    parser.add_argument("--product-delay", type=float, default=3.0, help="seconds the product takes (3)")
    parser.add_argument("--scenario", choices=("stopped", "slow", "both"), default="both")
    parser.add_argument("--threads", type=int, default=0, help="threads per worker (default: the shipped 4)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start; "
        f"{args.workers} workers x {args.threads or 'the shipped'} threads, {args.db}"
    )
    scenarios = ("stopped", "slow") if args.scenario == "both" else (args.scenario,)
    for scenario in scenarios:
        with tempfile.TemporaryDirectory(prefix="isv-deadline-") as tmp, WebhookReceiver() as receiver:
            work = Path(tmp)
            receiver.delay_s = args.product_delay if scenario == "slow" else 0.0
            with database(args.db, work) as url:
                settings = {
                    **receiver.settings(),
                    "ISV_WEBHOOK_TIMEOUT_S": "10",
                    "ISV_SERVE_JOBS": "0" if scenario == "stopped" else "1",
                }
                env = subprocess_env(base_env(work, url, **settings))
                serve_args: tuple[str, ...] = ()
                if args.threads:
                    conf = work / "gunicorn.conf.py"
                    shipped = (ROOT / "config" / "gunicorn.conf.py").read_text()
                    conf.write_text(f"{shipped}\nthreads = {args.threads}\n")
                    serve_args = ("--config", str(conf))
                with running_server(
                    env, work / "server.log", cwd=work, workers=args.workers, serve_args=serve_args
                ) as server:
                    figures = run_burst(server, args.calls, args.queries)
            title = (
                "consumer stopped"
                if scenario == "stopped"
                else f"product answering after {args.product_delay:g} s (consumer running)"
            )
            report(title, figures, args.calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
