"""Metrics add up across gunicorn workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.server import http_request, post_signed

pytestmark = pytest.mark.e2e


def test_metrics_count_every_call_whichever_worker_answered(server) -> None:
    calls = 30
    for n in range(calls):
        reply, _ = post_signed(
            server, {"activity": "queryInstance", "instanceId": f"id-{n}", "testFlag": "1"}
        )
        assert reply.status == 200
    assert len(set(server.call_pids())) >= 2, "the calls should have reached several workers"

    page = http_request(server.base, "GET", "/metrics")
    assert page.status == 200
    total = 0.0
    for family in text_string_to_metric_families(page.raw.decode()):
        for sample in family.samples:
            if sample.name == "isv_requests_total" and sample.labels.get("activity") == "queryInstance":
                total += sample.value
    assert total == calls

    ready = http_request(server.base, "GET", "/readyz")
    assert ready.status == 200
