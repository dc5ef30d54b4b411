"""The usage push to KooGallery's usage API (a local one that checks the signature over the exact bytes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from isvserver import db, usage, usage_push
from isvserver.marketplaces.koogallery.usage_push import METERING, read_answer, sender
from isvserver.models import UsageRecord, UsageUpload, utcnow
from isvserver.settings import Settings, load_settings
from isvserver.usage import Report

from support.harness import ACCESS_KEY, Marketplace
from support.usage_api import UsageApi, serving


def wire(moment) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
def usage_api(tmp_path: Path) -> Iterator[UsageApi]:
    with serving(tmp_path / "usage-api.sqlite3", ACCESS_KEY) as api:
        yield api


@pytest.fixture
def env(env: dict[str, str], usage_api: UsageApi) -> dict[str, str]:
    return {**env, "ISV_MARKET_API_URL": usage_api.url, "ISV_JOB_RETRY_BASE_S": "0.01"}


@pytest.fixture
def instance_id(app: Flask, marketplace: Marketplace) -> str:
    instance_id = marketplace.new_instance("CSPUSH", business_id="push-inst-1").json["instanceId"]
    usage.mark_on_demand(instance_id)
    return instance_id


def add(settings: Settings, instance_id: str, count: int, prefix: str = "sn", hours_ago: float = 1) -> None:
    end = utcnow().replace(microsecond=0) - timedelta(hours=hours_ago)
    for start in range(0, count, 1000):
        reports = [
            Report(instance_id, f"{prefix}-{n:05d}", wire(end - timedelta(minutes=n + 1)), wire(end), "0.5")
            for n in range(start, min(count, start + 1000))
        ]
        assert {o.status for o in usage.record_many(settings, reports, "http")} == {"accepted"}


def states() -> dict[str, int]:
    with db.connected():
        return {state: count for (_, state), count in usage.counts().items()}


def test_records_are_pushed_in_signed_batches_of_at_most_1000(
    settings: Settings, instance_id: str, usage_api: UsageApi
) -> None:
    add(settings, instance_id, 2500)
    (summary,) = usage_push.push_all(settings)
    assert (summary.uploads, summary.pushed, summary.failed) == (3, 2500, 0)
    assert [u["records"] for u in usage_api.uploads()] == [1000, 1000, 500]
    taken = usage_api.records()
    assert len(taken) == 2500 and {r["times_received"] for r in taken.values()} == {1}
    one = taken["sn-00007"]
    assert (one["instance_id"], one["usage_value"]) == (instance_id, "0.5")
    assert states() == {"pushed": 2500}
    assert usage_push.push_all(settings)[0].uploads == 0  # nothing is pushed twice
    assert len(usage_api.uploads()) == 3


def test_a_failed_upload_is_sent_again_byte_for_byte(
    settings: Settings, instance_id: str, usage_api: UsageApi, caplog
) -> None:
    add(settings, instance_id, 10)
    usage_api.fail_next = 2
    with caplog.at_level(logging.WARNING, "isvserver.usage"):
        assert usage_push.push_all(settings)[0].failed == 1
    assert "usage upload failed" in caplog.text and "503" in caplog.text
    assert states() == {"pending": 10}
    with db.connected():
        upload = UsageUpload.get()
        UsageUpload.update(next_attempt_at=utcnow()).execute()  # its backoff has passed
    assert (upload.state, upload.attempts, upload.http_status) == ("sending", 1, 503)
    assert usage_push.push_all(settings)[0].failed == 1
    with db.connected():
        UsageUpload.update(next_attempt_at=utcnow()).execute()
    assert usage_push.push_all(settings)[0].pushed == 10
    digests = {u["body_sha256"] for u in usage_api.uploads()}
    assert len(usage_api.uploads()) == 3 and len(digests) == 1  # three attempts, one body
    with db.connected():
        upload = UsageUpload.get()
    assert (upload.state, upload.attempts, upload.body_sha256) == ("taken", 3, digests.pop())


def test_a_wrong_key_is_refused_by_the_marketplace_and_retried(
    settings: Settings, instance_id: str, usage_api: UsageApi
) -> None:
    add(settings, instance_id, 3)
    usage_api.key = "another-key"
    summary = usage_push.push_all(settings)[0]
    assert (summary.failed, summary.pushed) == (1, 0)
    assert usage_api.uploads()[0]["status"] == 401
    with db.connected():
        assert UsageUpload.get().result_code == "MKT.0151"


def test_marketplace_down_then_back_catches_up_skipping_nothing(
    settings: Settings, env: dict[str, str], instance_id: str, tmp_path: Path
) -> None:
    down = UsageApi(tmp_path / "down.sqlite3", ACCESS_KEY)
    port = down.server_address[1]
    down.server_close()  # nothing listens there now
    settings = load_settings({**env, "ISV_MARKET_API_URL": f"http://127.0.0.1:{port}"})
    add(settings, instance_id, 1200, "down")
    for _ in range(3):
        assert usage_push.push_all(settings)[0].failed == 1
        with db.connected():
            UsageUpload.update(next_attempt_at=utcnow()).execute()
    with db.connected():
        assert UsageUpload.select().count() == 1  # the same upload, retried
        assert "cannot be reached" in UsageUpload.get().result_msg
    with serving(tmp_path / "down.sqlite3", ACCESS_KEY, port) as back:
        summary = usage_push.push_all(settings)[0]
        assert (summary.uploads, summary.pushed) == (2, 1200)
        assert len(back.records()) == 1200
    assert states() == {"pushed": 1200}


def test_per_record_problems_are_stored_and_a_duplicate_counts_as_taken(
    settings: Settings, instance_id: str, usage_api: UsageApi
) -> None:
    usage_api.report_records = True
    add(settings, instance_id, 3)
    with usage_api.db() as conn:  # the marketplace knows sn-00000 as it is, sn-00001 as another record
        for sn, value in (("sn-00000", "0.5"), ("sn-00001", "9")):
            conn.execute(
                "INSERT INTO record VALUES (?, ?, ?, ?, ?, ?, NULL, 1)",
                (sn, instance_id, "20260101T000000Z", "20260101T000000Z", "20260101T000000Z", value),
            )
    with db.connected():
        rows = {r.metering_sn: r for r in UsageRecord.select()}
    with usage_api.db() as conn:
        begin, end = wire(rows["sn-00000"].begin_at), wire(rows["sn-00000"].end_at)
        recorded = wire(rows["sn-00000"].recorded_at)
        conn.execute(
            "UPDATE record SET record_time = ?, begin_time = ?, end_time = ? WHERE metering_sn = 'sn-00000'",
            (recorded, begin, end),
        )
    summary = usage_push.push_all(settings)[0]
    assert (summary.pushed, summary.refused) == (2, 1)
    with db.connected():
        rows = {r.metering_sn: r for r in UsageRecord.select()}
        refused = usage.refused_by_code()
    assert rows["sn-00000"].state == "pushed"
    assert (rows["sn-00001"].state, rows["sn-00001"].result_code) == ("refused", "MKT.0410")
    assert refused == {("koogallery", "MKT.0410"): 1}
    assert usage_push.repush(["sn-00001", "nope", "sn-00002"]) == {
        "sn-00001": "pending again (was refused)",
        "nope": "unknown meteringSn",
        "sn-00002": "pending again (was pushed)",
    }
    assert usage_push.repush(["sn-00001"]) == {"sn-00001": "already pending"}
    assert states() == {"pushed": 1, "pending": 2}


def test_records_past_the_window_are_expired_and_never_sent(
    settings: Settings, instance_id: str, usage_api: UsageApi, caplog
) -> None:
    add(settings, instance_id, 5, "old", hours_ago=70)
    add(settings, instance_id, 5, "new", hours_ago=1)
    later = utcnow() + timedelta(hours=3)  # the old ones are now 73 h old: past KooGallery's 72 h
    with caplog.at_level(logging.WARNING, "isvserver.usage"):
        summary = usage_push.push_all(settings, now=later)[0]
    assert (summary.expired, summary.pushed) == (5, 5)
    assert "usage expired" in caplog.text
    assert set(usage_api.records()) == {f"new-{n:05d}" for n in range(5)}
    assert states() == {"expired": 5, "pushed": 5}


def test_an_upload_whose_records_left_the_window_meanwhile_is_given_up(
    settings: Settings, instance_id: str, usage_api: UsageApi
) -> None:
    add(settings, instance_id, 3, "old", hours_ago=71)
    add(settings, instance_id, 3, "new", hours_ago=1)
    usage_api.fail_next = 1
    assert usage_push.push_all(settings)[0].failed == 1
    later = utcnow() + timedelta(hours=2)
    summary = usage_push.push_all(settings, now=later)[0]
    assert (summary.expired, summary.pushed) == (3, 3)
    with db.connected():
        assert [u.state for u in UsageUpload.select().order_by(UsageUpload.id)] == ["abandoned", "taken"]
    assert states() == {"expired": 3, "pushed": 3}


def test_the_oldest_records_go_first(settings: Settings, instance_id: str, usage_api: UsageApi) -> None:
    add(settings, instance_id, 1000, "recent", hours_ago=1)
    add(settings, instance_id, 10, "urgent", hours_ago=60)
    usage_api.fail_next = 0
    summary = usage_push.push_marketplace(settings, "koogallery", METERING, max_uploads=1)
    assert summary.pushed == 1000
    assert {f"urgent-{n:05d}" for n in range(10)} <= set(usage_api.records())


def test_dry_run_logs_batches_and_sends_nothing(
    env: dict[str, str], instance_id: str, usage_api: UsageApi, caplog
) -> None:
    settings = load_settings({**env, "ISV_USAGE_PUSH_DRY_RUN": "1"})
    add(settings, instance_id, 1500)
    with caplog.at_level(logging.INFO, "isvserver.usage"):
        summary = usage_push.push_all(settings)[0]
    assert summary.dry_run_batches == 2
    assert caplog.text.count("usage dry run") == 2 and "records=1000" in caplog.text
    assert usage_api.uploads() == [] and states() == {"pending": 1500}


def test_the_body_is_exactly_the_ledger(settings: Settings, instance_id: str) -> None:
    add(settings, instance_id, 2)
    with db.connected():
        records = list(UsageRecord.select().order_by(UsageRecord.id))
        body = sender(settings).body(records)
    parsed = json.loads(body)
    assert list(parsed) == ["usage_records"]
    first = parsed["usage_records"][0]
    fields = ["instance_id", "record_time", "begin_time", "end_time", "usage_value", "metering_sn"]
    assert list(first) == fields
    assert first["usage_value"] == "0.5" and first["record_time"] == wire(records[0].recorded_at)
    assert body == sender(settings).body(records)


@pytest.mark.parametrize(
    ("status", "raw", "taken", "refused"),
    [
        (200, b'{"resultCode":"MKT.0000","resultMsg":"ok"}', True, {}),
        (200, b'{"resultCode":"000000"}', True, {}),
        (200, b'{"resultCode":"MKT.0100","resultMsg":"bad"}', False, {}),
        (500, b'{"resultCode":"MKT.0000"}', False, {}),
        (502, b"<html>bad gateway</html>", False, {}),
        (
            200,
            b'{"resultCode":"MKT.0000","failed_records":[{"metering_sn":"a","error_code":"MKT.0409"},'
            b'{"metering_sn":"b","error_code":"X1","error_msg":"no"},{"bad":1},"x"]}',
            True,
            {"b": ("X1", "no")},
        ),
    ],
)
def test_answers_are_read_as_taken_or_not(status: int, raw: bytes, taken: bool, refused: dict) -> None:
    answer = read_answer(status, raw)
    assert (answer.taken, dict(answer.refused)) == (taken, refused)


def test_a_sender_that_breaks_leaves_the_upload_to_be_sent_again(
    settings: Settings, instance_id: str, usage_api: UsageApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    import http.client

    from isvserver.marketplaces.koogallery.usage_push import UsageSender

    add(settings, instance_id, 2)
    for error, shown in ((http.client.IncompleteRead(b"x"), "IncompleteRead"), (KeyError("k"), "KeyError")):

        def broken(self, body, error=error):
            raise error

        monkeypatch.setattr(UsageSender, "send", broken)
        summary = usage_push.push_all(settings)[0]
        assert summary.failed == 1
        with db.connected():
            upload = UsageUpload.get()
            UsageUpload.update(next_attempt_at=utcnow()).execute()
        assert upload.state == "sending" and shown in upload.result_msg
    monkeypatch.undo()
    assert usage_push.push_all(settings)[0].pushed == 2
