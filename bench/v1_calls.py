"""KooGallery V1 figures: authToken verification, appInfo encryption, and whole V1 calls in process.

`python bench/v1_calls.py [--calls N]` prints, for this machine: the cost of one authToken check (the
decoded form, and a failed check that retries with `+` kept), of encrypting one appInfo (AES-256), and
the latency of V1 newInstance / queryInstance calls through the whole pipeline on a fresh SQLite
database (the Flask test client: no network, one process). Figures, not targets: compare runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

KEY = "bench-access-key-0123456789"


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def latencies(fn: Callable[[int], object], n: int) -> tuple[float, float, float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1], n / (sum(times) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()

    from isvserver import create_app, db
    from isvserver.marketplaces.koogallery.v1 import auth
    from isvserver.marketplaces.koogallery.v1.handlers import encrypted_app_info
    from isvserver.marketplaces.koogallery.v1.marketplace import signed_query
    from isvserver.migrations import migrate
    from isvserver.settings import load_settings

    from support.harness import base_env

    params = {"activity": "queryInstance", "instanceId": "bench-1"}
    good = signed_query(KEY, params, "20240101120000000")
    plus = good + "&x=a+b"  # fails: the decoded form, then the + form, are both computed
    info = {
        "frontEndUrl": "https://x.example/t",
        "userName": "admin_abcdefgh",
        "password": "P@ssw0rd-1234567!",
    }
    figures = {
        "authToken check (verified)": per_call_us(lambda: auth.verify(good, [KEY], 0, 0), 3000),
        "authToken check (refused, + retried)": per_call_us(lambda: auth.verify(plus, [KEY], 0, 0), 3000),
        "appInfo encryption (AES-256, 2 fields)": per_call_us(lambda: encrypted_app_info(info, KEY, 1), 3000),
    }
    for label, micros in figures.items():
        print(f"{label + ':':<40} {micros:8.1f} µs")

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        database = db.make_database(url)
        migrate(database)
        db.close_all(database)
        env = base_env(tmp, url, ISV_ACCESS_KEYS=KEY, ISV_LOG_LEVEL="WARNING")
        client = create_app(load_settings(env)).test_client()

        def new(i: int) -> None:
            purchase = {
                "activity": "newInstance",
                "customerId": "c",
                "businessId": f"b-{i}",
                "orderId": f"O{i}",
                "skuCode": "s",
                "productId": "p",
            }
            assert client.get("/saasproduce?" + signed_query(KEY, purchase)).json["resultCode"] == "000000"

        def query(i: int) -> None:
            q = {"activity": "queryInstance", "instanceId": f"b-{i % args.calls}"}
            assert client.get("/saasproduce?" + signed_query(KEY, q)).json["resultCode"] == "000000"

        for label, fn in (("newInstance", new), ("queryInstance", query)):
            p50, p95, rate = latencies(fn, args.calls)
            figure = f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  {rate:7.0f} calls/s"
            print(f"V1 {label:<14} in process, SQLite: {figure}")
        db.close_all()


if __name__ == "__main__":
    main()
