"""Probes, Prometheus metrics and JSON log lines, as an operator sees them (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from isvserver import create_app, db
from isvserver.settings import load_settings

from support.harness import ACCESS_KEY, base_env


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_and_readyz_on_a_current_schema(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "queue": "ok"},
    }


def test_readyz_reports_an_unreachable_queue(tmp_path, database_url) -> None:
    env = base_env(tmp_path, database_url, ISV_QUEUE_URL="redis://127.0.0.1:9/0")  # nothing listens
    client = create_app(load_settings(env)).test_client()
    answer = client.get("/readyz")
    db.close_all()
    assert answer.status_code == 503
    checks = answer.get_json()["checks"]
    assert (checks["database"], checks["migrations"]) == ("ok", "ok")
    assert checks["queue"].startswith("unreachable")


def test_readyz_reports_pending_migrations(tmp_path) -> None:
    settings = load_settings(base_env(tmp_path, f"sqlite:///{tmp_path / 'unmigrated.sqlite3'}"))
    client = create_app(settings).test_client()
    answer = client.get("/readyz")
    db.close_all()
    assert answer.status_code == 503
    checks = answer.get_json()["checks"]
    assert checks["database"] == "ok"
    assert "pending" in checks["migrations"] and "isvserver migrate" in checks["migrations"]
    assert client.get("/healthz").status_code == 200  # up, just not ready


def test_readyz_reports_an_unreachable_database(tmp_path) -> None:
    url = "postgresql://isv:secret-pw@127.0.0.1:9/isv"  # port 9: nothing listens
    client = create_app(load_settings(base_env(tmp_path, url))).test_client()
    answer = client.get("/readyz")
    db.close_all()
    assert answer.status_code == 503
    assert answer.get_json()["checks"]["database"].startswith("unreachable")
    assert "secret-pw" not in answer.get_data(as_text=True)


def test_calls_are_counted_by_activity_code_reason_and_duplicate_kind(client, marketplace) -> None:
    before = samples(client)
    first = marketplace.new_instance("CSM1", business_id="m-1")
    marketplace.new_instance("CSM1", business_id="m-2")  # resend: a business-key duplicate
    replayed_query = "signature=" + "0" * 64 + "&timestamp=1&nonce=n"
    marketplace.send(
        {"activity": "queryInstance", "instanceId": "m-1"}, query=replayed_query
    )  # bad timestamp
    signed = marketplace.new_instance("CSM2", business_id="m-3")
    assert signed.code == "000000"
    marketplace.send({"activity": "evil\nlabel{}"})  # unknown activity: no label made from input
    after = samples(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert first.code == "000000"
    new = {"interface": "koogallery.v2", "activity": "newInstance", "result_code": "000000"}
    assert delta("isv_requests_total", **new) == 3
    bad = {"interface": "koogallery.v2", "activity": "queryInstance", "result_code": "000002"}
    assert delta("isv_requests_total", **bad) == 1
    unknown = {"interface": "koogallery.v2", "activity": "unknown", "result_code": "000002"}
    assert delta("isv_requests_total", **unknown) == 1
    assert not any("evil" in str(labels) for _, labels in after)
    assert delta("isv_rejected_calls_total", interface="koogallery.v2", reason="bad_timestamp") == 1
    assert delta("isv_duplicates_total", interface="koogallery.v2", kind="business_key") == 1
    assert delta("isv_request_duration_seconds_count", interface="koogallery.v2", activity="newInstance") == 3
    assert (
        "isv_request_duration_seconds_bucket",
        (("activity", "newInstance"), ("interface", "koogallery.v2"), ("le", "5.0")),
    ) in after
    assert value(after, "isv_instances", state="active") == 2
    assert value(after, "isv_provisioning_queue_depth") == 0


def test_replayed_nonce_counts_as_a_duplicate(client, marketplace) -> None:
    from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query

    body = {"activity": "queryInstance", "instanceId": "x", "testFlag": "1"}
    query = signed_query(ACCESS_KEY, encode_body(body))
    before = samples(client)
    assert marketplace.send(body, query=query).code == "000000"
    assert marketplace.send(body, query=query).code == "000001"
    after = samples(client)
    assert (
        value(after, "isv_duplicates_total", interface="koogallery.v2", kind="nonce")
        - value(before, "isv_duplicates_total", interface="koogallery.v2", kind="nonce")
        == 1
    )
    reason = {"interface": "koogallery.v2", "reason": "replayed_nonce"}
    assert (
        value(after, "isv_rejected_calls_total", **reason)
        - value(before, "isv_rejected_calls_total", **reason)
        == 1
    )


def test_pending_provisioning_is_the_queue_depth(settings, clock) -> None:
    class Later:
        """Queued, and no consumer runs here: the creations stay pending."""

        inline = False

        def provision(self, event):
            raise AssertionError("no consumer runs in this test")

        def apply(self, event):
            raise AssertionError("no consumer runs in this test")

        def check_change(self, instance, product_info):
            return None

    from support.harness import Marketplace

    settings = dataclasses.replace(settings, provision_budget_ms=0)
    app = create_app(settings, provisioner=Later(), clock=clock)
    client = app.test_client()
    market = Marketplace(client)
    assert market.new_instance("CSQ1").code == "000004"
    assert market.new_instance("CSQ2").code == "000004"
    found = samples(client)
    db.close_all()
    assert value(found, "isv_provisioning_queue_depth") == 2
    assert value(found, "isv_instances", state="provisioning") == 2
    assert value(found, "isv_deliveries_pending") == 2


def test_log_lines_are_json_with_the_request_id(client, marketplace) -> None:
    import io
    import logging

    handler = next(h for h in logging.getLogger("isvserver").handlers if getattr(h, "isvserver", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        answer = marketplace.new_instance("CSL1", business_id="l-1")
    finally:
        handler.setStream(previous)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    calls = [line for line in lines if line["logger"] == "isvserver.calls"]
    assert len(calls) == 1
    assert calls[0]["request_id"] == answer.headers["X-Request-Id"]
    assert calls[0]["level"] == "INFO" and "code=000000" in calls[0]["message"]
    assert {"time", "pid", "message"} <= set(calls[0])


@pytest.mark.parametrize("message", ["GET /x?signature=ABC&nonce=XYZ", "key=9fa6c870 password=Hunter2!"])
def test_the_log_formatter_redacts_secret_pairs(message: str) -> None:
    import logging

    from isvserver.logs import JsonFormatter

    record = logging.LogRecord("isvserver.x", logging.INFO, __file__, 1, message, None, None)
    text = JsonFormatter().format(record)
    for secret in ("ABC", "XYZ", "9fa6c870", "Hunter2!"):
        assert secret not in text
    assert "***" in text
