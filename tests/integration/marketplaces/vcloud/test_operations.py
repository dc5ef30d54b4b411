"""Watching the poller: `isvserver vcloud orders`, the metrics, the settings, one poll across consumers."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from isvserver import create_app, db
from isvserver.adapters import load
from isvserver.marketplaces.vcloud.poller import JOB
from isvserver.models import PeriodicJob, utcnow
from isvserver.settings import Settings, SettingsError, load_settings

from support.harness import base_env
from support.vcloud_platform import TOKEN, VCloudPlatform, run_cli

Poll = Callable[..., int]
WAIT_S = 20.0


def samples(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_orders_lists_each_order_its_status_and_what_it_became(
    env: dict[str, str], platform: VCloudPlatform, run_poll: Poll
) -> None:
    paid = platform.add_order()
    waiting = platform.add_order(status="OrderPending", PaidTS=0)
    odd = platform.add_order(status="OrderDisputed")
    run_poll()

    text = run_cli(env, "vcloud", "orders")
    listed = json.loads(run_cli(env, "vcloud", "orders", "--json").output)
    only = json.loads(run_cli(env, "vcloud", "orders", "--json", "--status", "waiting").output)

    assert text.exit_code == 0, text.output
    assert text.output.splitlines()[0].split() == [
        "order",
        "status",
        "service",
        "became",
        "instance",
        "endAt",
        "changed",
        "note",
    ]
    became = {o["order_id"]: (o["status"], o["outcome"], o["instance_id"]) for o in listed}
    assert became == {
        paid["id"]: ("OrderPaid", "active", paid["id"]),
        waiting["id"]: ("OrderPending", "waiting", None),
        odd["id"]: ("OrderDisputed", "unknown_status", None),
    }
    assert [o["order_id"] for o in only] == [waiting["id"]]


def test_metrics_show_polls_orders_by_status_and_the_last_good_polls_age(
    app: Flask, platform: VCloudPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("isvserver.marketplaces.vcloud.client.BACKOFF_BASE_S", 0.01)
    platform.add_order()
    platform.add_order()
    platform.add_order(status="OrderPending", PaidTS=0)
    jobs = app.extensions["isvserver"].jobs
    jobs.run_periodic(JOB)
    platform.fail_next(10)
    with db.connected():  # due again at once
        PeriodicJob.update(next_run_at=utcnow() - timedelta(seconds=1)).execute()
    jobs.run_periodic(JOB)

    found = samples(app)

    assert found[("isv_vcloud_orders", (("status", "OrderPaid"),))] == 2
    assert found[("isv_vcloud_orders", (("status", "OrderPending"),))] == 1
    assert found[("isv_vcloud_orders_by_outcome", (("outcome", "active"),))] == 2
    assert found[("isv_vcloud_polls_total", ())] == 1
    assert found[("isv_vcloud_orders_read_total", ())] == 3
    assert 0 <= found[("isv_vcloud_last_poll_age_seconds", ())] < 60
    assert found[("isv_periodic_job_runs_total", (("job", JOB), ("outcome", "ok")))] == 1
    assert found[("isv_periodic_job_runs_total", (("job", JOB), ("outcome", "failed")))] == 1
    assert 0 <= found[("isv_periodic_job_last_success_age_seconds", (("job", JOB),))] < 60


def test_two_consumers_at_once_make_one_poll(
    app: Flask, settings: Settings, platform: VCloudPlatform
) -> None:
    platform.add_order()
    platform.hold_page(1)
    first, second = app.extensions["isvserver"].jobs, create_app(settings).extensions["isvserver"].jobs
    runner = threading.Thread(target=first.run_periodic, args=(JOB,))
    runner.start()
    deadline = time.monotonic() + WAIT_S
    while platform.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    waited = second.run_periodic(JOB)  # the first holds the lease: this one does not poll
    platform.release_hold()
    runner.join(WAIT_S)

    assert waited > 0
    assert platform.max_in_flight_orders == 1
    assert len(platform.requests("/api/v1/order")) == 1


def test_production_names_every_missing_v_cloud_setting(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite:///x.sqlite3", ISV_MARKETPLACES="vcloud")
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    message = str(caught.value)
    for name in ("ISV_VCLOUD_API_URL", "ISV_VCLOUD_WALLET", "ISV_VCLOUD_API_TOKEN"):
        assert f"{name} is required in production" in message


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ISV_VCLOUD_API_URL", "ftp://platform", "must be an http\\(s\\) URL"),
        ("ISV_VCLOUD_API_URL", "https://user:pw@platform", "without credentials"),
        ("ISV_VCLOUD_API_URL", "http://platform.example", "must be https in production"),
        ("ISV_VCLOUD_WALLET", "AT wallet!", "must be a wallet address"),
        ("ISV_VCLOUD_API_TOKEN", "short", "at least 16 printable"),
        ("ISV_VCLOUD_POLL_INTERVAL_S", "0", "between 1 and 86400"),
    ],
)
def test_a_bad_setting_is_named_without_its_value(
    env: dict[str, str], name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings({**env, name: value})
    assert name in str(caught.value) and (value not in str(caught.value) or value == "0")


def test_settings_hide_the_token(settings: Settings) -> None:
    vcloud = settings.of("vcloud")
    assert vcloud.api_token == TOKEN
    assert TOKEN not in repr(vcloud) and TOKEN not in repr(settings)
    assert vcloud.poll_interval_s == 30


def test_without_a_platform_in_development_orders_are_not_followed(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = base_env(tmp_path, database_url, ISV_ENV="development", ISV_MARKETPLACES="vcloud")
    jobs = create_app(load_settings(env)).extensions["isvserver"].jobs
    with caplog.at_level(logging.WARNING, logger="isvserver.vcloud"):
        for started in jobs.starts:
            started()
    assert JOB not in jobs.periodic
    assert "orders are not followed" in caplog.text


def test_gauges_that_cannot_be_read_leave_the_rest_of_the_scrape(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[object]:
        raise RuntimeError("no such table")

    vcloud = load("vcloud")
    monkeypatch.setattr("isvserver.web.metrics.load", lambda name: dataclasses.replace(vcloud, gauges=broken))
    found = samples(app)
    assert ("isv_vcloud_polls_total", ()) not in found
    assert ("isv_provisioning_queue_depth", ()) in found
    assert "gauges of vcloud could not be read" in caplog.text


def test_instances_show_tells_the_order_an_instance_became(
    env: dict[str, str], platform: VCloudPlatform, run_poll: Poll
) -> None:
    order = platform.add_order()
    run_poll()
    shown = json.loads(run_cli(env, "instances", "show", order["id"], "--json").output)
    text = run_cli(env, "instances", "show", order["id"]).output
    [row] = shown["vcloud_order"]
    assert (row["order_id"], row["status"], row["outcome"]) == (order["id"], "OrderPaid", "active")
    assert "V Cloud order" in text and "OrderPaid" in text
