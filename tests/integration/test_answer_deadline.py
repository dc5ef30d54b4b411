"""The answer deadline through the app (SQLite and PostgreSQL): the wait for the product ends in time,
a call with no time or no waiting slot answers in progress at once with its work committed, latency
counts from arrival, and the call log says whether each answer was written."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from isvserver import create_app, db, deadline
from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query
from isvserver.models import CallLog, Delivery, Instance
from isvserver.provisioning import AppInfo
from isvserver.settings import Settings

from support.cli import invoke_cli
from support.harness import ACCESS_KEY

OK, IN_PROGRESS = "000000", "000004"


class Queued:
    """A product reached through the job queue; `provision` answers at once when a consumer calls it."""

    inline = False

    def provision(self, event: Any) -> AppInfo:
        return AppInfo(front_end_url=f"https://app.example.com/t/{event.instance.instance_id}")

    def apply(self, event: Any) -> None:
        return None

    def check_change(self, instance: Any, product_info: Any) -> None:
        return None


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Any]:
    """An app with a queued provisioner and no consumer, its budget and deadline as the test says."""

    def build(budget_ms: int = 4500, deadline_ms: int = 1000) -> Flask:
        tuned = dataclasses.replace(settings, provision_budget_ms=budget_ms, answer_deadline_ms=deadline_ms)
        return create_app(tuned, provisioner=Queued())

    yield build
    db.close_all()


class Answer:
    """A signed call's reply as the test client got it, the answer written whole (buffered)."""

    def __init__(self, client: Any, body: dict[str, Any], **environ: Any) -> None:
        raw = encode_body(body)
        response = client.post(
            f"/saasproduce?{signed_query(ACCESS_KEY, raw)}",
            data=raw,
            headers={"Content-Type": "application/json"},
            environ_base=environ,
            buffered=True,  # the server writes the whole answer, then closes it
        )
        self.code = response.get_json()["resultCode"]
        self.request_id = response.headers["X-Request-Id"]


def new_instance(client: Any, order_id: str, business_id: str, **environ: Any) -> Answer:
    body = {
        "activity": "newInstance",
        "orderId": order_id,
        "orderLineId": f"{order_id}-1",
        "businessId": business_id,
    }
    return Answer(client, body, **environ)


def waits(outcome: str) -> float:
    return REGISTRY.get_sample_value("isv_answer_waits_total", {"outcome": outcome}) or 0.0


def call_row(request_id: str) -> CallLog:
    with db.connected():
        return CallLog.get(CallLog.request_id == request_id)


def instance_state(instance_id: str) -> str:
    with db.connected():
        return Instance.get(Instance.instance_id == instance_id).state


def pending_deliveries(instance_id: str) -> int:
    with db.connected():
        return Delivery.select().join(Instance).where(Instance.instance_id == instance_id).count()


def test_a_stopped_consumer_gets_000004_by_the_deadline_not_the_budget(make_app) -> None:
    client = make_app(budget_ms=4500, deadline_ms=1000).test_client()
    waited = waits("waited")
    started = time.monotonic()
    answer = new_instance(client, "CSD1", "d-1")
    elapsed = time.monotonic() - started
    row = call_row(answer.request_id)
    assert answer.code == IN_PROGRESS
    assert elapsed < 1.0  # the deadline, not the 4.5 s budget
    assert 1000 - 200 < row.latency_ms < 1000  # it did wait, up to the deadline less the answer's time
    assert (row.result_code, row.delivery) == (IN_PROGRESS, "sent")
    assert instance_state("d-1") == "provisioning" and pending_deliveries("d-1") == 1
    assert waits("waited") == waited + 1


def test_a_product_that_answers_within_the_deadline_still_gets_000000(make_app) -> None:
    app = make_app(budget_ms=4500, deadline_ms=4000)
    jobs = app.extensions["isvserver"].jobs

    def consumer() -> None:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            with db.connected():
                if Instance.select().where(Instance.instance_id == "s-1").exists():
                    break
            time.sleep(0.01)
        jobs.run_deliveries("s-1")

    thread = threading.Thread(target=consumer)
    thread.start()
    answer = new_instance(app.test_client(), "CSS1", "s-1")
    thread.join()
    row = call_row(answer.request_id)
    assert answer.code == OK
    assert instance_state("s-1") == "active"
    assert (row.result_code, row.delivery) == (OK, "sent")  # the row says what was finally sent


def test_a_call_whose_time_is_up_on_arrival_answers_000004_at_once_with_its_work_committed(make_app) -> None:
    client = make_app(budget_ms=4500, deadline_ms=1000).test_client()
    skipped = waits("no_time")
    raw = encode_body(
        {"activity": "newInstance", "orderId": "CSL1", "orderLineId": "L1", "businessId": "l-1"}
    )
    started = time.monotonic()
    response = client.post(
        f"/saasproduce?{signed_query(ACCESS_KEY, raw)}",
        data=raw,
        headers={"Content-Type": "application/json"},
        environ_base={deadline.ARRIVED: started - 5.0},  # queued 5 s before a thread took it
    )
    row = call_row(response.headers["X-Request-Id"])
    assert response.get_json()["resultCode"] == IN_PROGRESS
    assert time.monotonic() - started < 0.9  # no wait at all
    assert row.latency_ms >= 5000  # counted from arrival
    assert instance_state("l-1") == "provisioning" and pending_deliveries("l-1") == 1
    assert waits("no_time") == skipped + 1


def test_a_call_finding_every_waiting_slot_taken_answers_000004_at_once(make_app) -> None:
    client = make_app(budget_ms=4500, deadline_ms=4000).test_client()
    skipped = waits("no_thread")
    with deadline.waiting_slot(4) as one, deadline.waiting_slot(4) as two:  # other calls wait already
        assert one and two
        started = time.monotonic()
        answer = new_instance(client, "CST1", "t-1")
        elapsed = time.monotonic() - started
    assert answer.code == IN_PROGRESS
    assert elapsed < 1.0
    assert instance_state("t-1") == "provisioning" and pending_deliveries("t-1") == 1
    assert waits("no_thread") == skipped + 1
    # A worker with one thread keeps it for calls that do not wait.
    assert new_instance(client, "CST2", "t-2", **{deadline.THREADS: 1}).code == IN_PROGRESS
    assert waits("no_thread") == skipped + 2


def wsgi_call(app: Flask, body: dict[str, Any], **environ: Any) -> tuple[Any, list[str]]:
    """Call the app as a WSGI server does, up to (not including) writing the answer."""
    from werkzeug.test import EnvironBuilder

    raw = encode_body(body)
    builder = EnvironBuilder(
        path=f"/saasproduce?{signed_query(ACCESS_KEY, raw)}",
        method="POST",
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    env = builder.get_environ()
    env.update(environ)
    status: list[str] = []
    return app(env, lambda code, headers: status.append(code)), status


def test_a_worker_stopped_while_the_call_waited_leaves_it_logged_as_not_sent(make_app) -> None:
    app = make_app(budget_ms=300, deadline_ms=4000)
    body, status = wsgi_call(
        app, {"activity": "newInstance", "orderId": "CSK1", "orderLineId": "L", "businessId": "k-1"}
    )
    # The answer was computed but never written (no server asked for it), as when the worker dies.
    with db.connected():
        [row] = CallLog.select().where(CallLog.activity == "newInstance")
    assert status == ["200 OK"]
    assert (row.result_code, row.delivery) == (IN_PROGRESS, "not_sent")
    assert instance_state("k-1") == "provisioning" and pending_deliveries("k-1") == 1
    body.close()  # a server that gives up without writing: still not sent
    assert call_row(row.request_id).delivery == "not_sent"


@contextlib.contextmanager
def handler_removed(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Remove caplog's handler from `logger` at the end of the block."""
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)


def test_an_answer_to_a_client_that_has_closed_its_side_says_the_client_had_gone(
    make_app, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(budget_ms=200, deadline_ms=4000)
    ours, theirs = socket.socketpair()
    theirs.close()  # the marketplace gave up
    calls_log = logging.getLogger("isvserver.calls")  # isvserver's loggers do not propagate to the root
    calls_log.addHandler(caplog.handler)
    with ours, caplog.at_level(logging.WARNING, "isvserver.calls"), handler_removed(calls_log, caplog):
        body, _ = wsgi_call(
            app,
            {"activity": "newInstance", "orderId": "CSG1", "orderLineId": "L", "businessId": "g-1"},
            **{"gunicorn.socket": ours},
        )
        assert b"".join(body)  # written all the same: a client that only half-closed still reads it
        body.close()
        fast, _ = wsgi_call(
            app, {"activity": "queryInstance", "instanceId": "g-1"}, **{"gunicorn.socket": ours}
        )
        assert b"".join(fast)
        fast.close()
    with db.connected():
        rows = {r.activity: r for r in CallLog.select()}
    assert (rows["newInstance"].result_code, rows["newInstance"].delivery) == (IN_PROGRESS, "client_gone")
    assert (rows["queryInstance"].result_code, rows["queryInstance"].delivery) == (IN_PROGRESS, "client_gone")
    assert "answer not sent" in caplog.text and "delivery=client_gone" in caplog.text
    assert instance_state("g-1") == "provisioning"  # what was committed stays: the resend finds it


def test_the_call_log_command_shows_an_unsent_answer(make_app, env: dict[str, str]) -> None:

    from isvserver.cli.call_log import log_group

    app = make_app(budget_ms=0)
    ours, theirs = socket.socketpair()
    theirs.close()
    with ours:
        body, _ = wsgi_call(
            app,
            {"activity": "newInstance", "orderId": "CSC1", "orderLineId": "L", "businessId": "c-1"},
            **{"gunicorn.socket": ours},
        )
        assert b"".join(body)  # written all the same: a client that only half-closed still reads it
        body.close()
    result = invoke_cli(env, log_group, "list")
    assert result.exit_code == 0, result.output
    assert f"{IN_PROGRESS}/client_gone" in result.output


def test_rejected_and_failed_calls_record_their_delivery_too(make_app) -> None:
    app = make_app()
    ours, theirs = socket.socketpair()
    theirs.close()
    with ours:
        body, _ = wsgi_call(app, {"activity": "newInstance"}, **{"gunicorn.socket": ours})  # invalid
        assert b"".join(body)  # written all the same: a client that only half-closed still reads it
        body.close()
    sent, _ = wsgi_call(app, {"activity": "releaseInstance", "instanceId": "nope"})
    assert b"".join(sent)
    sent.close()
    with db.connected():
        rows = [(r.activity, r.delivery) for r in CallLog.select().order_by(CallLog.id)]
    assert rows == [("newInstance", "client_gone"), ("releaseInstance", "sent")]


def test_any_endpoint_can_ask_when_its_call_arrived_and_how_long_it_has_left(make_app) -> None:
    from isvserver import calls

    app = make_app(deadline_ms=1000)
    now = time.monotonic()
    with app.test_request_context(environ_base={deadline.ARRIVED: now - 0.25}):
        assert calls.arrived() == now - 0.25
        assert 0.5 < calls.time_left() <= 0.75
    with app.test_request_context(environ_base={deadline.ARRIVED: now - 2.0}):
        assert calls.time_left() < 0  # past its deadline


def test_a_delivery_that_cannot_be_recorded_is_logged_and_the_answer_unchanged(
    make_app, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from isvserver import calls

    def database_gone(row_id: int, call: Any) -> None:
        raise ConnectionError("database unreachable")

    app = make_app(budget_ms=100)
    monkeypatch.setattr(calls, "update_result", database_gone)
    body, status = wsgi_call(
        app, {"activity": "newInstance", "orderId": "CSU1", "orderLineId": "L", "businessId": "u-1"}
    )
    assert b"".join(body)
    body.close()
    logged = capfd.readouterr().err
    assert status == ["200 OK"]
    assert "callback log not updated" in logged and "ConnectionError" in logged
    with db.connected():
        [row] = CallLog.select().where(CallLog.activity == "newInstance")
    assert row.delivery == "not_sent"  # what the database could be told: the answer was not confirmed
