"""Unauthenticated junk costs bounded storage: minimal rows, a per-source rate, retention."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from isvserver import create_app, db
from isvserver.cli import call_log
from isvserver.db import connected
from isvserver.jobs.retention import prune
from isvserver.models import CallLog, RejectedCallCount, utcnow
from isvserver.settings import load_settings

from support.harness import ACCESS_KEY, FixedClock, Marketplace

BUYER = "张三 +86 138 0013 8000 zhang.san@example.com"
JUNK = {
    "activity": "newInstance" + "x" * 40,
    "instanceId": ",".join(["i" * 64] * 100),
    "orderId": BUYER,
    "orderLineId": "L" * 500,
    "businessId": "biz-1",
    "customerName": BUYER * 20,
}


def junk(client: FlaskClient, source: str = "203.0.113.9", body: dict | None = None) -> str:
    """One unauthenticated call (a made-up signature); its result code."""
    raw = json.dumps(body or JUNK, ensure_ascii=False).encode("utf-8")
    response = client.post(
        "/saasproduce?signature=" + "A" * 64 + "&timestamp=1&nonce=n",
        data=raw,
        content_type="application/json",
        environ_base={"REMOTE_ADDR": source},
    )
    return response.get_json()["resultCode"]


def stored() -> list[CallLog]:
    with connected():
        return list(CallLog.select().order_by(CallLog.id))


def counts() -> dict[tuple[str, int], int]:
    with connected():
        return {(r.source_address, r.minute): r.calls for r in RejectedCallCount.select()}


@pytest.fixture
def app_with(env: dict[str, str], clock: FixedClock) -> Iterator:
    """`app_with(**settings)`: the app under test with these ISV_* settings added."""
    made: list[Flask] = []

    def build(**overrides: str) -> FlaskClient:
        app = create_app(load_settings({**env, **overrides}), clock=clock)
        made.append(app)
        return app.test_client()

    yield build
    db.close_all()


def test_a_rejected_call_stores_only_what_an_operator_needs(client: FlaskClient) -> None:
    assert junk(client) == "000002"  # a timestamp of 1 is not a timestamp
    (row,) = stored()
    assert row.verdict == "bad_timestamp" and row.reason
    assert row.activity is None  # not a known activity
    assert row.instance_id == "i" * 64  # cut to an id's legal length
    assert row.order_id is None  # not made of id characters: never stored
    assert row.order_line_id == "L" * 64
    assert row.business_id == "biz-1"
    assert row.source_address == "203.0.113.9"
    with connected():
        everything = json.dumps(list(CallLog.select().dicts()), default=str, ensure_ascii=False)
    assert "张三" not in everything and "zhang" not in everything and "example.com" not in everything


def test_a_known_activity_of_a_rejected_call_is_kept(client: FlaskClient) -> None:
    junk(client, body={"activity": "queryInstance", "instanceId": "a" * 90})
    (row,) = stored()
    assert row.activity == "queryInstance" and row.instance_id == "a" * 64


def test_a_verified_call_keeps_its_ids_and_source(marketplace: Marketplace) -> None:
    answer = marketplace.new_instance("CSOK", business_id="biz-ok")
    assert answer.code == "000000"
    (row,) = stored()
    assert (row.verdict, row.order_id, row.business_id, row.source_address) == (
        "verified",
        "CSOK",
        "biz-ok",
        "127.0.0.1",
    )


def test_beyond_the_rate_a_source_is_counted_not_stored(app_with, clock: FixedClock) -> None:
    client = app_with(ISV_REJECTED_LOG_PER_MINUTE="5")
    clock.now_ms = 1_800_000_000_000.0
    minute = int(clock.now_ms // 60_000)
    for _ in range(20):
        junk(client, "198.51.100.1")
    for _ in range(3):
        junk(client, "198.51.100.2")
    clock.now_ms += 60_000
    for _ in range(7):
        junk(client, "198.51.100.1")
    rows = stored()
    by_source = {s: sum(1 for r in rows if r.source_address == s) for s in ("198.51.100.1", "198.51.100.2")}
    assert by_source == {"198.51.100.1": 10, "198.51.100.2": 3}
    assert counts() == {
        ("198.51.100.1", minute): 20,
        ("198.51.100.2", minute): 3,
        ("198.51.100.1", minute + 1): 7,
    }


def test_a_replayed_nonce_is_a_rejected_call_too(app_with, clock: FixedClock) -> None:
    client = app_with(ISV_REJECTED_LOG_PER_MINUTE="2")
    market = Marketplace(client)
    body = {"activity": "queryInstance", "instanceId": "nope"}
    query = "signature=x"
    from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query

    query = signed_query(ACCESS_KEY, encode_body(body))
    codes = [market.send(body, query=query).code for _ in range(6)]
    assert codes == ["000003"] + ["000001"] * 5
    assert [r.verdict for r in stored()] == ["verified", "replayed_nonce", "replayed_nonce"]


def test_forwarded_for_names_the_source_behind_a_trusted_proxy(client: FlaskClient) -> None:
    raw = b"{}"
    client.post("/saasproduce", data=raw, headers={"X-Forwarded-For": "10.0.0.1, 192.0.2.7"})
    client.post(
        "/saasproduce",
        data=raw,
        headers={"X-Forwarded-For": "192.0.2.8"},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert [r.source_address for r in stored()] == ["192.0.2.7", "10.9.9.9"]


def sqlite_bytes(url: str) -> int:
    """The SQLite database's size once its write-ahead log is checkpointed into it."""
    import sqlite3

    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Path(path).stat().st_size


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_2000_junk_calls_grow_the_database_by_less_than_400_kb(
    client: FlaskClient, database_url: str
) -> None:
    """The property bench/junk_storage.py measures with 10 000 calls against gunicorn, scaled down."""
    junk(client)  # the first call warms the tables up
    before = sqlite_bytes(database_url)
    sources = [f"198.51.100.{i}" for i in range(1, 5)]  # a few sources, each over the rate
    for n in range(2000):
        junk(client, sources[n % len(sources)])
    grown = sqlite_bytes(database_url) - before
    assert grown < 400_000, f"{grown} bytes for 2000 junk calls"
    assert sum(counts().values()) == 2001


def test_prune_deletes_only_what_is_past_retention(marketplace: Marketplace, client: FlaskClient) -> None:
    marketplace.new_instance("CSNEW")
    junk(client)
    with connected():
        old = utcnow() - timedelta(days=91)
        CallLog.update(received_at=old).where(CallLog.order_id == "CSNEW").execute()
        RejectedCallCount.insert(source_address="x", minute=1, calls=3).execute()
    pruned = prune(90, batch=1)
    assert (pruned.calls, pruned.counts) == (1, 1)
    assert [r.verdict for r in stored()] == ["bad_timestamp"]
    assert prune(90).calls == 0


def test_log_prune_command(env: dict[str, str], marketplace: Marketplace) -> None:
    marketplace.new_instance("CSOLD")
    with connected():
        CallLog.update(received_at=utcnow() - timedelta(days=10)).execute()
    previous = db.database.obj
    try:
        kept = CliRunner().invoke(call_log.log_group, ["prune"], env=env, catch_exceptions=False)
        gone = CliRunner().invoke(
            call_log.log_group, ["prune", "--days", "5"], env=env, catch_exceptions=False
        )
    finally:
        db.database.initialize(previous)
    assert kept.exit_code == 0 and "pruned 0 calls" in kept.output and "older than 90 days" in kept.output
    assert gone.exit_code == 0 and "pruned 1 calls" in gone.output, gone.output
