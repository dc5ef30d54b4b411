"""`isvserver usage …` and `isvserver product-token …` in-process, and the usage gauges of /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from isvserver import db, usage
from isvserver.cli import instances
from isvserver.cli.usage import usage_group
from isvserver.models import UsageRecord, utcnow
from isvserver.parts.product_api.cli import product_token
from isvserver.parts.product_api.tokens import authenticate

from support.cli import invoke_cli
from support.harness import ACCESS_KEY, Marketplace
from support.usage_api import UsageApi, serving

END = utcnow().replace(microsecond=0) - timedelta(hours=1)


def wire(moment) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


def run(env: dict[str, str], group: click.Group, *args: str) -> Result:
    """The command in-process with exactly `env` as its ISV_* settings (the test's binding put back)."""
    return invoke_cli(env, group, *args)


@pytest.fixture
def usage_api(tmp_path: Path) -> Iterator[UsageApi]:
    with serving(tmp_path / "usage-api.sqlite3", ACCESS_KEY) as api:
        yield api


@pytest.fixture
def env(env: dict[str, str], usage_api: UsageApi) -> dict[str, str]:
    return {**env, "ISV_MARKET_API_URL": usage_api.url}


@pytest.fixture
def instance_id(app: Flask, marketplace: Marketplace) -> str:
    return marketplace.new_instance("CSCLI", business_id="cli-inst-1").json["instanceId"]


def test_an_operator_marks_adds_imports_lists_pushes_and_repushes(
    env: dict[str, str], instance_id: str, usage_api: UsageApi, tmp_path: Path
) -> None:
    begin, end = wire(END - timedelta(hours=1)), wire(END)
    refused = run(env, usage_group, "add", instance_id, "cli-1", begin, end, "3")
    assert refused.exit_code == 1 and "not_on_demand" in refused.output
    assert run(env, usage_group, "on-demand", "nobody").exit_code == 1
    assert "is now on-demand" in run(env, usage_group, "on-demand", instance_id).output
    assert "was already on-demand" in run(env, usage_group, "on-demand", instance_id).output
    added = run(env, usage_group, "add", instance_id, "cli-1", begin, end, "3")
    assert added.exit_code == 0 and "accepted 1" in added.output
    again = run(env, usage_group, "add", instance_id, "cli-1", begin, end, "3.0")
    assert "duplicate 1" in again.output

    csv_file = tmp_path / "usage.csv"
    lines = ["instanceId,meteringSn,beginTime,endTime,value,relatedInstanceId"]
    lines += [f"{instance_id},csv-{n},{begin},{end},0.25," for n in range(1200)]
    lines += [f"{instance_id},csv-bad,{begin},{end},-1,", f"{instance_id},cli-1,{begin},{end},3,pkg-1"]
    csv_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    imported = run(env, usage_group, "import", str(csv_file))
    assert imported.exit_code == 1  # a refused row
    assert "accepted 1200, duplicate 0, refused 2" in imported.output
    assert "line 1202: csv-bad refused (invalid)" in imported.output
    assert "line 1203: cli-1 refused (conflict)" in imported.output
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("instance,sn\n", encoding="utf-8")
    assert "missing: instanceId" in run(env, usage_group, "import", str(bad_header)).output

    listed = json.loads(run(env, usage_group, "list", "--state", "pending", "--limit", "5", "--json").stdout)
    assert len(listed) == 5 and listed[0]["metering_sn"] == "csv-1199"
    assert "(only the first 5 shown" in run(env, usage_group, "list", "--limit", "5").output
    assert "cli-1" in run(env, usage_group, "list", "--instance", instance_id, "--limit", "2000").output

    assert "pushes every 60 s" in run(env, usage_group, "push").output
    pushed = run(env, usage_group, "push", "--now")
    assert pushed.exit_code == 0
    assert "koogallery: uploads taken 2, records pushed 1201" in pushed.output
    assert len(usage_api.records()) == 1201

    shown = json.loads(run(env, usage_group, "show", "csv-7", "--json").stdout)
    assert (shown["state"], shown["usage_value"], shown["source"], shown["source_name"]) == (
        "pushed",
        "0.25",
        "csv",
        "usage.csv",
    )
    assert shown["upload"]["state"] == "taken" and shown["upload"]["records"] == 1000
    assert "upload:" in run(env, usage_group, "show", "csv-7").output
    assert run(env, usage_group, "show", "nope").exit_code == 1

    repushed = run(env, usage_group, "repush", "csv-7", "nope")
    assert repushed.exit_code == 1
    assert "csv-7: pending again (was pushed)" in repushed.output and "nope: unknown" in repushed.output
    assert "records pushed 1" in run(env, usage_group, "push", "--now").output
    assert usage_api.records()["csv-7"]["times_received"] == 2  # harmless: one metering_sn

    shown = json.loads(run(env, instances.instances, "show", instance_id, "--json").stdout)
    assert shown["instance"]["on_demand"] is True
    assert shown["usage"]["records"] == 1201 and shown["usage"]["by_state"] == {"pushed": 1201}
    assert shown["usage"]["latest"]["end_at"].startswith(END.isoformat())
    text = run(env, instances.instances, "show", instance_id).output
    assert "usage (1201 records: pushed 1201" in text and "latest value" in text


def test_a_failing_push_exits_1(env: dict[str, str], instance_id: str, usage_api: UsageApi) -> None:
    usage.mark_on_demand(instance_id)
    run(env, usage_group, "add", instance_id, "f-1", wire(END - timedelta(hours=1)), wire(END), "1")
    usage_api.fail_next = 1
    failed = run(env, usage_group, "push", "--now")
    assert failed.exit_code == 1 and "failed uploads 1" in failed.output
    dry = run({**env, "ISV_USAGE_PUSH_DRY_RUN": "1"}, usage_group, "push", "--now")
    assert "dry-run batches 1" in dry.output


def test_product_tokens_are_printed_once_and_listed_without_themselves(
    env: dict[str, str], app: Flask
) -> None:
    added = run(env, product_token, "add", "billing")
    token = added.stdout.strip()
    assert added.exit_code == 0 and token.startswith("isvp_")
    with db.connected():
        assert authenticate(f"Bearer {token}").name == "billing"
    assert run(env, product_token, "add", "billing").exit_code == 1
    assert run(env, product_token, "add", "bad name").exit_code == 1
    listing = run(env, product_token, "list").output
    assert "billing" in listing and token not in listing and token[:9] in listing
    assert token not in run(env, product_token, "list", "--json").output
    assert "revoked" in run(env, product_token, "revoke", "billing").output
    assert "was revoked already" in run(env, product_token, "revoke", "billing").output
    assert run(env, product_token, "revoke", "nobody").exit_code == 1
    assert json.loads(run(env, product_token, "list", "--json").stdout)[0]["revoked_at"] is not None


def test_metrics_show_the_ledger(
    client: FlaskClient, settings, instance_id: str, usage_api: UsageApi
) -> None:
    usage.mark_on_demand(instance_id)
    reports = [
        usage.Report(instance_id, f"m-{n}", wire(END - timedelta(hours=1)), wire(END), "1") for n in range(3)
    ]
    usage.record_many(settings, reports, "http", now=utcnow() - timedelta(seconds=30))
    with db.connected():
        UsageRecord.update(state="refused", result_code="MKT.0410").where(
            UsageRecord.metering_sn == "m-0"
        ).execute()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'isv_usage_records{marketplace="koogallery",state="pending"} 2.0' in text
    assert 'isv_usage_refused{code="MKT.0410",marketplace="koogallery"} 1.0' in text
    age = next(line for line in text.splitlines() if line.startswith("isv_usage_oldest_pending_age_seconds{"))
    assert 29 <= float(age.split()[-1]) < 600
