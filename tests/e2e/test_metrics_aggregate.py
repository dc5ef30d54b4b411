"""Metrics add up across gunicorn workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.server import http_request, post_signed

pytestmark = pytest.mark.e2e


def test_metrics_count_every_call_whichever_worker_answered(server) -> None:
    sent = 0

    def query(n: int) -> int:
        reply, _ = post_signed(
            server, {"activity": "queryInstance", "instanceId": f"id-{n}", "testFlag": "1"}
        )
        return reply.status

    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # concurrent rounds until the calls have reached several workers
            statuses = list(pool.map(query, range(sent, sent + 16)))
            assert statuses == [200] * 16
            sent += 16
            if len(set(server.call_pids())) >= 2:
                break
    assert len(set(server.call_pids())) >= 2, "the calls never reached a second worker"

    page = http_request(server.base, "GET", "/metrics")
    assert page.status == 200
    total = 0.0
    for family in text_string_to_metric_families(page.raw.decode()):
        for sample in family.samples:
            if sample.name == "isv_requests_total" and sample.labels.get("activity") == "queryInstance":
                total += sample.value
    assert total == sent

    assert http_request(server.base, "GET", "/readyz").status == 200
