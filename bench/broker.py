"""The broker's benchmark: catalog and read-instance requests/s, isvserver's broker side by side with
`openbrokerapi` serving the same catalog under the same gunicorn config and worker count.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python bench/broker.py [--workers 3]
        [--duration 10] [--connections 16] [--database-url URL]

It migrates a fresh SQLite database (or the empty database at --database-url), starts `isvserver
serve` (ISV_ENV=production, config/gunicorn.conf.py, no job consumer) with the broker enabled and the
seed's catalog, adds a client, takes a token and provisions one instance; then starts
bench/openbrokerapi_app.py under the same gunicorn config and worker count, and drives each scenario
with wrk (keep-alive off, as gunicorn's config has it), alternating the two servers so both see the
same machine. isvserver is called as AppCube calls it (`access-token`), openbrokerapi with HTTP Basic
(its only scheme); isvserver with HTTP Basic (an argon2 check per call) is measured once for the
catalog. Prints requests/s, p50, p99 and non-2xx answers per scenario, and the ratios.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import ROOT, Keys, server_env
from run import VENV_BIN, _bench_app_argv, isvserver_argv, start_server, stop_server

EXAMPLE = ROOT / "isvserver" / "marketplaces" / "broker" / "catalog.example.yaml"
PREFIX = "/broker"
VERSION = {"X-Broker-API-Version": "2.17"}


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> dict:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
        return json.loads(answer.read() or b"{}")


def wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 in ms, non-2xx answers."""
    cmd = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match is None:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
        return float(match.group(1)) * scale

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="isv-broker-bench-"))
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    document["services"][0]["instances_retrievable"] = True  # so an OSB platform may read instances
    catalog = work / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    database_url = args.database_url or f"sqlite:///{work / 'bench.sqlite3'}"
    env = server_env(Keys.fresh(), database_url, work / "instance", 60)
    env.update(
        ISV_MARKETPLACES="koogallery,broker",
        ISV_BROKER_PATH=PREFIX,
        ISV_BROKER_CATALOG=str(catalog),
        ISV_SERVE_JOBS="0",
        ISV_START_CONSUMER="0",
        BENCH_BROKER_CATALOG=str(catalog),
    )
    isv = str(VENV_BIN / "isvserver")
    subprocess.run([isv, "migrate"], env=env, check=True, capture_output=True)
    added = subprocess.run(
        [isv, "broker", "client", "add", "bench"], env=env, check=True, capture_output=True, text=True
    )
    ids = dict(re.findall(r"^(client_id|client_secret)=(\S+)$", added.stdout, re.M))

    servers = {}
    try:
        servers["isvserver"] = start_server(
            "isvserver", isvserver_argv(args.workers, ROOT), env, work / "isv.log"
        )
        servers["openbrokerapi"] = start_server(
            "openbrokerapi",
            _bench_app_argv(args.workers, ROOT, "openbrokerapi_app:app"),
            env,
            work / "obr.log",
        )
        base = servers["isvserver"].url
        form = (
            f"grant_type=client_credentials&client_id={ids['client_id']}&client_secret={ids['client_secret']}"
        )
        token = _http(
            "POST",
            f"{base}/baas/auth/v1.0/oauth2/token",
            form.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )["access_token"]
        service, plan = document["services"][0], document["services"][0]["plans"][0]
        body = {
            "service_id": service["id"],
            "plan_id": plan["id"],
            "parameters": {"client_id": "a", "client_secret": "b"},
        }
        headers = {"access-token": token, "Content-Type": "application/json", **VERSION}
        _http("PUT", f"{base}{PREFIX}/v2/service_instances/bench-1", json.dumps(body).encode(), headers)

        isv_auth = {"access-token": token, **VERSION}
        isv_basic = {
            "Authorization": "Basic "
            + base64.b64encode(f"{ids['client_id']}:{ids['client_secret']}".encode()).decode(),
            **VERSION,
        }
        obr_auth = {"Authorization": "Basic " + base64.b64encode(b"bench:bench-secret").decode(), **VERSION}
        runs = [
            ("catalog", "isvserver", f"{PREFIX}/v2/catalog", isv_auth),
            ("catalog", "openbrokerapi", f"{PREFIX}/v2/catalog", obr_auth),
            ("read instance", "isvserver", f"{PREFIX}/v2/service_instances/bench-1", isv_auth),
            ("read instance", "openbrokerapi", f"{PREFIX}/v2/service_instances/bench-1", obr_auth),
            ("catalog (HTTP Basic)", "isvserver", f"{PREFIX}/v2/catalog", isv_basic),
        ]
        results = []
        for scenario, name, path, auth in runs:
            url = servers[name].url + path
            wrk(url, auth, 2, args.connections)  # warm-up
            figures = wrk(url, auth, args.duration, args.connections)
            results.append((scenario, name, figures))
            time.sleep(1)
    finally:
        for server in servers.values():
            stop_server(server)

    kind = database_url.split(":")[0]
    print(f"workers={args.workers} connections={args.connections} duration={args.duration:g}s db={kind}")
    print(f"{'scenario':22} {'server':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for scenario, name, f in results:
        rps, p50, p99, bad = f["rps"], f["p50_ms"], f["p99_ms"], f["non_2xx"]
        print(f"{scenario:22} {name:14} {rps:8.0f} {p50:8.1f} {p99:8.1f} {bad:8.0f}")
    by = {(s, n): f["rps"] for s, n, f in results}
    for scenario in ("catalog", "read instance"):
        ratio = by[(scenario, "isvserver")] / max(by[(scenario, "openbrokerapi")], 1e-9)
        print(f"{scenario}: isvserver / openbrokerapi = {ratio:.2f}")
    print(f"work directory (logs): {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
