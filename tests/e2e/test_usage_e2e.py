"""Pay-per-use end to end: a real `isvserver serve` (gunicorn + its job consumer), the product posting usage
over HTTP, the consumer pushing it to a local KooGallery usage API that checks every signature; 10 000
records none lost or doubled, and a consumer killed with -9 mid-push; SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from support.harness import ACCESS_KEY, base_env
from support.server import (
    Server,
    db_rows,
    http_request,
    job_consumers,
    post_signed,
    run_cli,
    running_server,
    subprocess_env,
    wait_until,
)
from support.usage_api import UsageApi, serving

pytestmark = pytest.mark.e2e

END = datetime.now(UTC).replace(microsecond=0, tzinfo=None) - timedelta(hours=1)


@pytest.fixture
def usage_api(tmp_path: Path) -> Iterator[UsageApi]:
    with serving(tmp_path / "usage-api.sqlite3", ACCESS_KEY) as api:
        yield api


def env_for(tmp_path: Path, database_url: str, usage_api: UsageApi) -> dict[str, str]:
    return subprocess_env(
        base_env(
            tmp_path,
            database_url,
            ISV_MARKET_API_URL=usage_api.url,
            ISV_USAGE_PUSH_INTERVAL_S="1",
            ISV_JOB_LEASE_S="3",
            ISV_JOB_RETRY_BASE_S="0.2",
            ISV_JOB_RETRY_MAX_S="1",
        )
    )


def on_demand_instance(server: Server, env: dict[str, str], tmp_path: Path) -> str:
    order_id = f"CS{uuid.uuid4().hex[:10].upper()}"
    body = {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": f"{order_id}-000001",
        "businessId": f"ondemand-{uuid.uuid4().hex[:8]}",
    }
    reply, _ = post_signed(server, body)
    assert reply.status == 200 and reply.json["resultCode"] == "000000", reply.raw
    instance_id = reply.json["instanceId"]
    marked = run_cli("usage", "on-demand", instance_id, env=env, cwd=tmp_path)
    assert marked.returncode == 0, marked.describe()
    return instance_id


def product_token(env: dict[str, str], tmp_path: Path) -> str:
    added = run_cli("product-token", "add", "billing", env=env, cwd=tmp_path)
    assert added.returncode == 0, added.describe()
    return added.stdout.strip()


def records(instance_id: str, start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "instanceId": instance_id,
            "meteringSn": f"e2e-{n:06d}",
            "beginTime": (END - timedelta(seconds=n + 1)).strftime("%Y%m%dT%H%M%SZ"),
            "endTime": END.strftime("%Y%m%dT%H%M%SZ"),
            "value": f"{n % 97 + 1}.{n % 10}",
        }
        for n in range(start, start + count)
    ]


def post_usage(server: Server, token: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    reply = http_request(
        server.base,
        "POST",
        "/v1/usage",
        json.dumps({"records": batch}).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert reply.status == 200, reply.raw
    return json.loads(reply.raw)


def ledger_states(database_url: str) -> dict[str, int]:
    return dict(db_rows(database_url, "SELECT state, COUNT(*) FROM usage_record GROUP BY state"))


def test_10000_records_through_post_v1_usage_are_pushed_in_batches_none_lost_or_doubled(
    tmp_path: Path, database_url: str, usage_api: UsageApi
) -> None:
    env = env_for(tmp_path, database_url, usage_api)
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=3) as server:
        instance_id = on_demand_instance(server, env, tmp_path)
        token = product_token(env, tmp_path)
        batches = [records(instance_id, start, 1000) for start in range(0, 10_000, 1000)]
        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda batch: post_usage(server, token, batch), batches))
        accepted_s = time.monotonic() - started
        assert [a["accepted"] for a in answers] == [1000] * 10
        resent = post_usage(server, token, batches[3])  # the product sends a batch again
        assert (resent["accepted"], resent["duplicate"]) == (0, 1000)
        assert wait_until(lambda: len(usage_api.records()) >= 10_000, 120), ledger_states(database_url)
        assert wait_until(lambda: ledger_states(database_url) == {"pushed": 10_000}, 30)
        pushed_s = time.monotonic() - started
        log = server.read_log()
    taken = usage_api.records()
    assert len(taken) == 10_000
    assert {r["times_received"] for r in taken.values()} == {1}  # none doubled
    assert taken["e2e-004321"]["usage_value"] == "54.1" and taken["e2e-004321"]["instance_id"] == instance_id
    uploads = usage_api.uploads()
    assert all(u["status"] == 200 and u["records"] <= 1000 for u in uploads)
    assert sum(u["records"] for u in uploads) == 10_000
    assert "usage upload taken marketplace=koogallery" in log
    assert token not in log
    print(
        f"10 000 records: accepted by POST /v1/usage in {accepted_s:.1f} s ({10_000 / accepted_s:.0f}/s), "
        f"pushed in {len(uploads)} uploads {pushed_s:.1f} s after the first post"
    )


def test_kill_9_of_the_consumer_mid_push_loses_and_doubles_nothing(
    tmp_path: Path, database_url: str, usage_api: UsageApi
) -> None:
    env = env_for(tmp_path, database_url, usage_api)
    usage_api.hold.set()
    with running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=2) as server:
        assert wait_until(lambda: len(job_consumers(server.pid)) == 1, 20), "serve started no job consumer"
        [victim] = job_consumers(server.pid)
        instance_id = on_demand_instance(server, env, tmp_path)
        token = product_token(env, tmp_path)
        assert post_usage(server, token, records(instance_id, 0, 1000))["accepted"] == 1000
        assert post_usage(server, token, records(instance_id, 1000, 500))["accepted"] == 500
        assert wait_until(lambda: usage_api.held == 1, 30), "the push never reached the marketplace"
        os.kill(victim, signal.SIGKILL)  # the marketplace took the upload; its answer reaches nobody
        assert wait_until(lambda: victim not in job_consumers(server.pid), 10)
        usage_api.hold.clear()
        usage_api.release.set()
        assert wait_until(lambda: job_consumers(server.pid) - {victim}, 20), "the consumer was not restarted"
        assert wait_until(lambda: ledger_states(database_url) == {"pushed": 1500}, 60), ledger_states(
            database_url
        )
        log = server.read_log()
    taken = usage_api.records()
    assert len(taken) == 1500  # nothing lost
    uploads = usage_api.uploads()
    first = uploads[0]
    again = [u for u in uploads[1:] if u["body_sha256"] == first["body_sha256"]]
    assert again, "the upload the killed consumer was waiting on was not sent again"
    resent = {sn for sn, r in taken.items() if r["times_received"] == 2}
    assert len(resent) == first["records"] == 1000  # the same records, the same bytes: billed once each
    assert {r["times_received"] for r in taken.values()} <= {1, 2}
    [(uploads_in_ledger,)] = db_rows(database_url, "SELECT COUNT(*) FROM usage_upload WHERE state = 'taken'")
    assert uploads_in_ledger == 2  # 1000 + 500, the first one taken on its second attempt
    assert f"Job consumer (pid: {victim}) exited" in log
