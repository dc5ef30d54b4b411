"""The answer deadline on a real `isvserver serve` (gunicorn, 2 workers × 4 threads) with the webhook
provisioner, on SQLite and PostgreSQL: a burst of newInstance calls with the consumer stopped and with a
slow product is answered within ISV_ANSWER_DEADLINE_MS of arrival, what each answer claims is what the
database holds, and a call whose answer was never written (client gone, worker killed) says so."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.harness import ACCESS_KEY, base_env
from support.receiver import WebhookReceiver
from support.server import (
    PRODUCE_PATH,
    Server,
    db_rows,
    encode,
    http_request,
    live_processes,
    post_signed,
    running_server,
    sign,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.e2e

OK, IN_PROGRESS = "000000", "000004"
DEADLINE_MS = 1500
SLACK_S = 1.0  # connecting and reading on a loaded machine, outside the server's deadline


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def serve(tmp_path: Path, database_url: str, receiver: WebhookReceiver) -> Callable[..., Any]:
    """`isvserver serve` (2 workers of 4 threads) with the webhook provisioner and a 4.5 s budget."""

    def start(**extra: str) -> Any:
        settings = {
            **receiver.settings(),
            "ISV_WEBHOOK_TIMEOUT_S": "10",
            "ISV_PROVISION_BUDGET_MS": "4500",
            "ISV_ANSWER_DEADLINE_MS": str(DEADLINE_MS),
            "ISV_JOB_RETRY_BASE_S": "0.2",
            "ISV_JOB_RETRY_MAX_S": "1",
            **extra,
        }
        env = subprocess_env(base_env(tmp_path, database_url, **settings))
        return running_server(env, tmp_path / "server.log", cwd=tmp_path, workers=2)

    return start


def new_instance_body() -> dict[str, str]:
    order_id = f"CS{uuid.uuid4().hex[:10].upper()}"
    return {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": f"{order_id}-000001",
        "businessId": str(uuid.uuid4()),
    }


def timed_new_instance(server: Server) -> tuple[dict[str, Any], float, str]:
    started = time.monotonic()
    reply, _ = post_signed(server, new_instance_body())
    elapsed = time.monotonic() - started
    assert reply.status == 200 and reply.signed_by(ACCESS_KEY), reply.raw
    return reply.json, elapsed, reply.headers["X-Request-Id"]


def burst(server: Server, calls: int) -> list[tuple[dict[str, Any], float, str]]:
    """`calls` newInstance calls sent at the same moment, each on its own connection."""
    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(lambda _: timed_new_instance(server), range(calls)))


def logged(server: Server, request_id: str) -> tuple[str, float, str]:
    """The call's row once its delivery is known (a waiting call's row is rewritten after its answer)."""

    def row() -> tuple[str, float, str]:
        [found] = db_rows(
            server.database_url,
            "SELECT result_code, latency_ms, delivery FROM callback_log WHERE request_id = ?",
            (request_id,),
        )
        return found

    wait_until(lambda: row()[2] != "not_sent", 10)
    return row()


def state(server: Server, instance_id: str) -> str:
    [(value,)] = db_rows(
        server.database_url, "SELECT state FROM instance WHERE instance_id = ?", (instance_id,)
    )
    return value


def waits(server: Server) -> dict[str, float]:
    text = http_request(server.base, "GET", "/metrics").raw.decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "isv_answer_waits_total":
                found[sample.labels["outcome"]] = sample.value
    return found


def test_a_burst_with_the_consumer_stopped_is_answered_within_the_deadline(serve: Callable[..., Any]) -> None:
    with serve(ISV_SERVE_JOBS="0") as server:
        answers = burst(server, 16)
        rows = [logged(server, request_id) for _, _, request_id in answers]
        states = [state(server, answer["instanceId"]) for answer, _, _ in answers]
        [(queued,)] = db_rows(server.database_url, "SELECT COUNT(*) FROM delivery WHERE status = 'pending'")
        counted = waits(server)

    slowest = max(elapsed for _, elapsed, _ in answers)
    print(
        f"16 newInstance, consumer stopped: slowest answer {slowest * 1000:.0f} ms at the client; {counted}"
    )
    assert [answer["resultCode"] for answer, _, _ in answers] == [IN_PROGRESS] * 16
    assert all(code == IN_PROGRESS and delivery == "sent" for code, _, delivery in rows), rows
    assert max(latency for _, latency, _ in rows) < DEADLINE_MS, rows  # from arrival, in the server
    assert slowest < DEADLINE_MS / 1000 + SLACK_S
    assert states == ["provisioning"] * 16 and queued == 16  # what 000004 claims, and the work is queued
    # Two of each worker's four threads may wait; the other calls answered at once.
    assert counted.get("waited", 0) >= 1 and counted.get("no_thread", 0) >= 1, counted


def test_a_burst_with_a_slow_product_is_answered_in_time_then_provisioned(
    serve: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    receiver.delay_s = 3.0  # the product answers after 3 s, past the deadline
    with serve(ISV_JOB_WORKERS="8") as server:
        answers = burst(server, 8)
        rows = [logged(server, request_id) for _, _, request_id in answers]
        claimed = {answer["instanceId"]: answer["resultCode"] for answer, _, _ in answers}
        assert wait_until(lambda: all(state(server, i) == "active" for i in claimed), 40)
        reply, _ = post_signed(server, {"activity": "queryInstance", "instanceId": ",".join(claimed)})

    assert set(claimed.values()) == {IN_PROGRESS}
    assert max(latency for _, latency, _ in rows) < DEADLINE_MS, rows
    assert max(elapsed for _, elapsed, _ in answers) < DEADLINE_MS / 1000 + SLACK_S
    assert reply.json["resultCode"] == OK
    assert {info["instanceId"] for info in reply.json["info"]} == set(claimed)
    assert all(receiver.event_types(i) == ["instance.created"] for i in claimed)


def raw_request(server: Server, body: dict[str, Any]) -> bytes:
    raw = encode(body)
    query = sign(ACCESS_KEY, raw).query
    return (
        f"POST {PRODUCE_PATH}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json;charset=utf8\r\nContent-Length: {len(raw)}\r\n\r\n"
    ).encode() + raw


def newinstance_rows(server: Server) -> list[tuple[str, str]]:
    return db_rows(
        server.database_url, "SELECT result_code, delivery FROM callback_log WHERE activity = 'newInstance'"
    )


def test_a_marketplace_that_gave_up_is_logged_as_never_answered(serve: Callable[..., Any]) -> None:
    with serve(ISV_SERVE_JOBS="0") as server:
        body = new_instance_body()
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(raw_request(server, body))
            # The call is committed (its row written, not sent yet) while it waits; the caller leaves.
            assert wait_until(lambda: newinstance_rows(server) == [(IN_PROGRESS, "not_sent")], 10)
        assert wait_until(lambda: newinstance_rows(server) == [(IN_PROGRESS, "client_gone")], 10)
        log = server.wait_for_log(lambda text: "answer not sent" in text)
        instance = state(server, body["businessId"])

    assert "delivery=client_gone" in log
    assert instance == "provisioning"  # what was committed stays; the marketplace's retry finds it


def workers_of(master: int) -> set[int]:
    return {pid for pid, _, fields in live_processes() if int(fields[1]) == master}


def test_a_worker_killed_while_a_call_waits_leaves_it_logged_as_not_sent(serve: Callable[..., Any]) -> None:
    with serve(ISV_SERVE_JOBS="0", ISV_ANSWER_DEADLINE_MS="4900") as server:
        body = new_instance_body()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as client:
            client.sendall(raw_request(server, body))
            assert wait_until(lambda: newinstance_rows(server) == [(IN_PROGRESS, "not_sent")], 10)
            for pid in workers_of(server.pid):  # only workers: this server starts no job consumer
                os.kill(pid, signal.SIGKILL)
            answer = client.recv(65536)
        rows = newinstance_rows(server)
        instance = state(server, body["businessId"])

    assert answer == b""  # nothing was written
    assert rows == [(IN_PROGRESS, "not_sent")]
    assert instance == "provisioning"
