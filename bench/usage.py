"""Pay-per-use throughput: records per second accepted by POST /v1/usage, and pushed to the marketplace.

    .venv/bin/python bench/usage.py [--records 20000] [--batch 1000] [--threads 3] [--workers 3]
                                    [--database-url postgresql://…]

Starts `isvserver serve` (production mode, SQLite in a temp dir unless --database-url, the shipped
gunicorn configuration) and a local KooGallery usage API that checks every signature
(tests/support/usage_api.py), adds a product token and an on-demand instance with the CLI, then:

1. posts RECORDS records in calls of BATCH from THREADS threads and prints records/s accepted;
2. runs `isvserver usage push --now` (the consumer's timer is set to an hour so it does not race it)
   and prints records/s pushed (signed uploads of at most 1000, each taken and written back).

Loopback only. Every record is checked at the end: all pushed in the ledger, each received once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.harness import ACCESS_KEY, base_env  # noqa: E402
from support.server import ISVSERVER, db_rows, http_request, post_signed, running_server, subprocess_env  # noqa: E402
from support.usage_api import serving  # noqa: E402


def cli(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run([ISVSERVER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"isvserver {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="isv-bench-usage-") as tmp:
        work = Path(tmp)
        url = args.database_url or f"sqlite:///{work / 'isvserver.sqlite3'}"
        with serving(work / "usage-api.sqlite3", ACCESS_KEY) as api:
            env = subprocess_env(
                base_env(
                    work,
                    url,
                    ISV_MARKET_API_URL=api.url,
                    ISV_USAGE_PUSH_INTERVAL_S="3600",
                )
            )
            with running_server(
                env, work / "server.log", cwd=work, workers=args.workers, timeout=120
            ) as server:
                reply, _ = post_signed(
                    server,
                    {
                        "activity": "newInstance",
                        "orderId": "BENCH1",
                        "orderLineId": "BENCH1-1",
                        "businessId": "bench-1",
                    },
                )
                instance_id = reply.json["instanceId"]
                cli(env, work, "usage", "on-demand", instance_id)
                token = cli(env, work, "product-token", "add", "bench").strip()
                end = datetime.now(UTC).replace(microsecond=0, tzinfo=None) - timedelta(hours=1)

                def body(start: int) -> bytes:
                    count = min(args.batch, args.records - start)
                    records = [
                        {
                            "instanceId": instance_id,
                            "meteringSn": f"bench-{n:08d}",
                            "beginTime": (end - timedelta(seconds=n % 3600 + 1)).strftime("%Y%m%dT%H%M%SZ"),
                            "endTime": end.strftime("%Y%m%dT%H%M%SZ"),
                            "value": f"{n % 1000 + 1}.25",
                        }
                        for n in range(start, start + count)
                    ]
                    return json.dumps({"records": records}).encode()

                bodies = [body(start) for start in range(0, args.records, args.batch)]
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

                def post(raw: bytes) -> int:
                    answer = http_request(server.base, "POST", "/v1/usage", raw, headers, timeout=120)
                    if answer.status != 200:
                        raise SystemExit(f"POST /v1/usage answered {answer.status}: {answer.raw[:200]!r}")
                    return json.loads(answer.raw)["accepted"]

                started = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    accepted = sum(pool.map(post, bodies))
                intake_s = time.perf_counter() - started

                started = time.perf_counter()
                pushed_out = cli(env, work, "usage", "push", "--now")
                push_s = time.perf_counter() - started
                states = dict(db_rows(url, "SELECT state, COUNT(*) FROM usage_record GROUP BY state"))
            received = api.records()
            uploads = api.uploads()

    once = sum(1 for r in received.values() if r["times_received"] == 1)
    database = "PostgreSQL" if url.startswith("postgres") else "SQLite"
    print(f"database: {database}, gunicorn workers: {args.workers}")
    print(
        f"POST /v1/usage: {accepted} records accepted in {intake_s:.2f} s = "
        f"{accepted / intake_s:.0f} records/s "
        f"({len(bodies)} calls of {args.batch}, {args.threads} threads)"
    )
    print(
        f"usage push --now: {len(received)} records pushed in {push_s:.2f} s = {len(received) / push_s:.0f} "
        f"records/s ({len(uploads)} signed uploads; the command's own start-up included)"
    )
    print(f"ledger: {states}; received once: {once} of {args.records}; {pushed_out.strip()}")
    if states != {"pushed": args.records} or once != args.records:
        raise SystemExit("records were lost or doubled")


if __name__ == "__main__":
    main()
