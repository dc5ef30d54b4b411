"""Rejected calls are bounded across all sources too: rows and log lines within the bounds, the rest only
counted, and one summary line per source and minute for what was only counted."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from isvserver import calllog, create_app, db
from isvserver.calllog import CallRecord, minute_text, record_rejected, summarize_rejected
from isvserver.db import connected
from isvserver.jobs.retention import prune
from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query
from isvserver.models import CallLog, RejectedCallCount, RejectedCallMinute
from isvserver.settings import load_settings

from support.harness import ACCESS_KEY, FixedClock, Marketplace

NOW_MS = 1_800_000_000_000.0
MINUTE = int(NOW_MS // 60_000)


@pytest.fixture
def app_with(env: dict[str, str], clock: FixedClock) -> Iterator:
    """`app_with(**settings)`: the app under test with these ISV_* settings added (clock at NOW_MS)."""
    made: list[Flask] = []
    clock.now_ms = NOW_MS

    def build(**overrides: str) -> FlaskClient:
        app = create_app(load_settings({**env, **overrides}), clock=clock)
        made.append(app)
        return app.test_client()

    yield build
    db.close_all()


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also attached to the `isvserver` logger (which the app sets not to propagate) once a test
    calls caplog.set_level (after building its app)."""
    logger = logging.getLogger("isvserver")
    set_level = caplog.set_level

    def attach(level: int, name: str | None = None) -> None:
        set_level(level, name)
        if caplog.handler not in logger.handlers:
            logger.addHandler(caplog.handler)

    caplog.set_level = attach  # type: ignore[method-assign]
    yield caplog
    logger.removeHandler(caplog.handler)


def junk(client: FlaskClient, source: str) -> str:
    response = client.post(
        "/saasproduce?signature=" + "A" * 64 + "&timestamp=1&nonce=n",
        data=b'{"activity":"queryInstance","instanceId":"x"}',
        content_type="application/json",
        environ_base={"REMOTE_ADDR": source},
    )
    return response.get_json()["resultCode"]


def rows_by_source() -> dict[str, int]:
    with connected():
        found: dict[str, int] = {}
        for row in CallLog.select():
            found[row.source_address] = found.get(row.source_address, 0) + 1
        return found


def counts() -> dict[str, tuple[int, int, bool]]:
    with connected():
        return {r.source_address: (r.calls, r.stored, r.summarized) for r in RejectedCallCount.select()}


def call_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("call request_id=")]


def summary_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected calls only")]


def test_rows_and_lines_stop_at_the_bound_across_sources(app_with, caplog, clock: FixedClock) -> None:
    """Per source 5, all sources 8: 4 sources x 4 calls -> 8 rows and 8 lines, every call counted."""
    client = app_with(ISV_REJECTED_LOG_PER_MINUTE="5", ISV_REJECTED_LOG_TOTAL_PER_MINUTE="8")
    caplog.set_level(logging.INFO, "isvserver.calls")
    sources = [f"198.51.100.{i}" for i in range(1, 5)]
    codes = {junk(client, sources[n % 4]) for n in range(16)}
    assert codes == {"000002"}
    assert rows_by_source() == {s: 2 for s in sources}
    assert len(call_lines(caplog)) == 8
    assert counts() == {s: (4, 2, False) for s in sources}
    with connected():
        assert [(r.minute, r.calls) for r in RejectedCallMinute.select()] == [(MINUTE, 16)]
    clock.now_ms += 60_000  # a new minute: room again
    junk(client, sources[0])
    assert rows_by_source()[sources[0]] == 3 and len(call_lines(caplog)) == 9


def test_a_source_past_its_share_leaves_the_others_their_room(app_with, caplog) -> None:
    """Calls beyond their source's share do not use up the bound across sources."""
    client = app_with(ISV_REJECTED_LOG_PER_MINUTE="5", ISV_REJECTED_LOG_TOTAL_PER_MINUTE="8")
    for _ in range(20):
        junk(client, "198.51.100.1")
    for _ in range(3):
        junk(client, "198.51.100.2")
    junk(client, "198.51.100.3")  # the ninth within its share: only counted
    assert rows_by_source() == {"198.51.100.1": 5, "198.51.100.2": 3}
    with connected():
        assert RejectedCallMinute.get().calls == 9
    assert counts()["198.51.100.3"] == (1, 0, False)


def test_zero_across_sources_stores_and_logs_no_rejected_call(app_with, caplog) -> None:
    client = app_with(ISV_REJECTED_LOG_TOTAL_PER_MINUTE="0")
    caplog.set_level(logging.INFO, "isvserver.calls")
    junk(client, "198.51.100.1")
    assert rows_by_source() == {} and call_lines(caplog) == []
    assert counts() == {"198.51.100.1": (1, 0, False)}


def test_a_replay_beyond_the_bound_is_counted_not_logged(app_with, caplog, clock: FixedClock) -> None:
    client = app_with(ISV_REJECTED_LOG_PER_MINUTE="1")
    clock.now_ms = time.time() * 1000  # the signed query's own timestamp
    caplog.set_level(logging.INFO, "isvserver.calls")
    body = {"activity": "queryInstance", "instanceId": "nope"}
    query = signed_query(ACCESS_KEY, encode_body(body))
    market = Marketplace(client)
    codes = [market.send(body, query=query).code for _ in range(4)]
    assert codes == ["000003", "000001", "000001", "000001"]
    with connected():
        assert [r.verdict for r in CallLog.select().order_by(CallLog.id)] == ["verified", "replayed_nonce"]
    assert len(call_lines(caplog)) == 2
    assert counts()["127.0.0.1"] == (3, 1, False)


def test_each_source_and_minute_only_counted_gets_one_summary_line(app_with, caplog) -> None:
    client = app_with(ISV_REJECTED_LOG_PER_MINUTE="2")
    caplog.set_level(logging.INFO, "isvserver.calls")
    for _ in range(7):
        junk(client, "198.51.100.1")
    for _ in range(3):
        junk(client, "198.51.100.2")
    junk(client, "198.51.100.3")  # within its share: nothing to summarize
    assert summarize_rejected(MINUTE) == 0  # the minute has not ended
    assert summarize_rejected(MINUTE + 1) == 2
    when = minute_text(MINUTE)
    assert summary_lines(caplog) == [
        f"rejected calls only counted minute={when} source=198.51.100.1 calls=7 logged=2",
        f"rejected calls only counted minute={when} source=198.51.100.2 calls=3 logged=2",
    ]
    assert summarize_rejected(MINUTE + 2) == 0  # each once
    assert counts() == {
        "198.51.100.1": (7, 2, True),
        "198.51.100.2": (3, 2, True),
        "198.51.100.3": (1, 1, False),
    }


def test_past_the_summary_limit_the_other_sources_share_one_line(app, caplog) -> None:
    caplog.set_level(logging.INFO, "isvserver.calls")
    with connected():
        for source, calls in (("a", 5), ("b", 9), ("c", 2), ("d", 5)):
            RejectedCallCount.insert(source_address=source, minute=MINUTE, calls=calls, stored=1).execute()
        RejectedCallCount.insert(source_address="a", minute=MINUTE - 1, calls=4, stored=0).execute()
        RejectedCallCount.insert(
            source_address="e", minute=MINUTE - calllog.SUMMARY_LOOKBACK_MINUTES - 1, calls=9
        ).execute()
    assert summarize_rejected(MINUTE + 1, limit=2) == 4
    assert summary_lines(caplog) == [
        f"rejected calls only counted minute={minute_text(MINUTE - 1)} source=a calls=4 logged=0",
        f"rejected calls only counted minute={minute_text(MINUTE)} source=b calls=9 logged=1",
        f"rejected calls only counted minute={minute_text(MINUTE)} source=a calls=5 logged=1",
        f"rejected calls only counted minute={minute_text(MINUTE)} sources=2 more calls=7 logged=2",
    ]
    with connected():
        assert RejectedCallCount.get(RejectedCallCount.source_address == "e").summarized is False


def test_minutes_read_as_utc_text() -> None:
    assert minute_text(0) == "1970-01-01T00:00Z"
    assert minute_text(MINUTE) == "2027-01-15T08:00Z"


def test_a_count_that_cannot_be_written_still_leaves_the_line(monkeypatch, caplog, app) -> None:
    caplog.set_level(logging.INFO, "isvserver.calls")
    attempts: list[Any] = []

    def broken(*args: Any) -> None:
        attempts.append(args)
        raise RuntimeError("database gone")

    monkeypatch.setattr(calllog, "store_rejected", broken)
    call = CallRecord(request_id="r1", interface="koogallery", verdict="bad_signature", order_id="张三")
    record_rejected(call, frozenset(), 5, MINUTE, total=10)
    assert len(attempts) == 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("call request_id=r1 ") and "order=-/-" in lines[0]
    assert lines[1] == "callback log not written request_id=r1: RuntimeError"


def test_prune_removes_old_counts_across_sources_too(app) -> None:
    with connected():
        RejectedCallMinute.insert(minute=1, calls=3).execute()
        RejectedCallMinute.insert(minute=MINUTE, calls=3).execute()
    prune(90)
    with connected():
        assert [r.minute for r in RejectedCallMinute.select()] == [MINUTE]


def test_the_consumer_logs_the_summaries_every_minute(app: Flask, caplog, monkeypatch) -> None:
    """The periodic task runs at any minute and summarizes the minutes ended before now."""
    jobs = app.extensions["isvserver"].jobs
    [task] = [t for t in jobs.huey._registry._periodic_tasks if t.__name__ == "rejected-calls"]
    from datetime import datetime

    assert all(task().validate_datetime(datetime(2026, 1, 1, 0, m)) for m in (0, 13, 59))
    with connected():
        RejectedCallCount.insert(source_address="s", minute=MINUTE, calls=3, stored=1).execute()
    caplog.set_level(logging.INFO, "isvserver.calls")
    monkeypatch.setattr("time.time", lambda: (MINUTE + 1) * 60 + 5.0)
    task().execute()
    assert summary_lines(caplog) == [
        f"rejected calls only counted minute={minute_text(MINUTE)} source=s calls=3 logged=1"
    ]
    assert json.dumps(counts()) == json.dumps({"s": [3, 1, True]})


def test_a_rejected_calls_line_leaves_out_what_is_not_an_id(app, caplog) -> None:
    caplog.set_level(logging.INFO, "isvserver.calls")
    call = CallRecord(
        request_id="r2",
        interface="koogallery",
        activity="newInstancex",
        verdict="bad_signature",
        instance_id="i" * 70,
        order_id="张三 zhang@example.com",
        order_line_id="LINE-1",
        source_address="198.51.100.1",
    )
    record_rejected(call, frozenset({"newInstance"}), 5, MINUTE, total=10)
    [line] = [r.getMessage() for r in caplog.records]
    assert line == (
        f"call request_id=r2 activity=None test=0 verdict=bad_signature code= ms=0.0 instance={'i' * 64} "
        "order=-/LINE-1"
    )


def test_pruning_goes_in_batches_until_nothing_old_is_left(app) -> None:
    from datetime import timedelta

    from isvserver.models import utcnow

    with connected():
        for n in range(5):
            CallLog.insert(
                request_id=f"old{n}", interface="k", verdict="v", result_code="000002", latency_ms=1.0
            ).execute()
        CallLog.update(received_at=utcnow() - timedelta(days=91)).execute()
        CallLog.insert(
            request_id="new", interface="k", verdict="v", result_code="000002", latency_ms=1.0
        ).execute()
    pruned = prune(90, batch=2)
    assert pruned.calls == 5
    with connected():
        assert [r.request_id for r in CallLog.select()] == ["new"]


def test_the_hourly_prune_runs_at_its_minute_only(app: Flask) -> None:
    from datetime import datetime

    from isvserver.jobs.retention import PRUNE_MINUTE

    jobs = app.extensions["isvserver"].jobs
    [task] = [t for t in jobs.huey._registry._periodic_tasks if t.__name__ == "retention"]
    runs = [m for m in range(60) if task().validate_datetime(datetime(2026, 1, 1, 3, m))]
    assert runs == [PRUNE_MINUTE] == [7]


def test_an_authentic_calls_row_is_tried_twice_then_its_loss_is_logged(app, caplog, monkeypatch) -> None:
    """calllog.record: a verified call keeps every id; one failed write is tried again, two are logged."""
    caplog.set_level(logging.INFO, "isvserver.calls")
    call = CallRecord(
        request_id="r3", interface="koogallery", activity="newInstance", verdict="verified", order_id="CS9"
    )
    real_store = calllog.store
    tries: list[CallRecord] = []

    def flaky(record: CallRecord) -> int:
        tries.append(record)
        if len(tries) == 1:
            raise RuntimeError("database busy")
        return real_store(record)

    monkeypatch.setattr(calllog, "store", flaky)
    calllog.record(call)
    assert [t.request_id for t in tries] == ["r3", "r3"]
    with connected():
        [row] = CallLog.select()
        assert (row.request_id, row.order_id, row.verdict) == ("r3", "CS9", "verified")
    tries.clear()
    monkeypatch.setattr(calllog, "store", lambda record: tries.append(record) or 1 / 0)
    calllog.record(replace(call, request_id="r4"))
    assert len(tries) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == "callback log not written request_id=r4: ZeroDivisionError"
    assert sum(m.startswith("call request_id=r4 ") for m in messages) == 1


def test_a_rejected_call_whose_first_write_fails_is_stored_and_logged_once(app, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, "isvserver.calls")
    real = calllog.store_rejected
    tries: list[int] = []

    def flaky(*args: Any) -> int | None:
        tries.append(1)
        if len(tries) == 1:
            raise RuntimeError("database busy")
        return real(*args)

    monkeypatch.setattr(calllog, "store_rejected", flaky)
    call = CallRecord(request_id="r5", interface="koogallery", verdict="bad_signature", source_address="s")
    record_rejected(call, frozenset(), 5, MINUTE, total=10)
    assert len(tries) == 2
    assert [r.getMessage().split(" ", 2)[:2] for r in caplog.records] == [["call", "request_id=r5"]]
    assert rows_by_source() == {"s": 1}
