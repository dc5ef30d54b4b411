"""The broker's commands in-process (clients, instances show) and the secrets enricher."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import click
from click.testing import Result
from flask import Flask

from isvserver.cli import instances
from isvserver.db import connected
from isvserver.lifecycle import lifecycle_event
from isvserver.marketplaces.broker.cli import broker
from isvserver.marketplaces.broker.instance_details import init_jobs
from isvserver.marketplaces.broker.models import BrokerClient, BrokerToken, BrokerTokenFailure
from isvserver.models import Instance, InstanceEvent, utcnow
from isvserver.runtime import runtime

from .conftest import Platform
from support.cli import invoke_cli

CREATE = {
    "service_id": "svc-gold",
    "plan_id": "plan-small",
    "parameters": {"seats": 2, "admin_password": "Pw-cli-7"},
}


def run(env: dict[str, str], group: click.Group, *args: str) -> Result:
    """`isvserver GROUP ARGS` in-process with exactly `env` as its ISV_* settings."""
    return invoke_cli(env, group, *args)


def test_clients_are_added_listed_and_revoked(env: dict[str, str], settings: Any) -> None:
    assert env["ISV_MARKETPLACES"] == "koogallery,broker"  # the settings fixture set the broker up
    added = run(env, broker, "client", "add", "appcube")
    assert added.exit_code == 0, added.output
    found = dict(re.findall(r"^(client_id|client_secret)=(\S+)$", added.stdout, re.M))
    listed = run(env, broker, "client", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [r["client_id"] for r in rows] == [found["client_id"]]
    assert found["client_secret"] not in listed.output
    table = run(env, broker, "client", "list")
    assert found["client_id"] in table.stdout and "appcube" in table.stdout
    assert run(env, broker, "client", "remove", found["client_id"]).exit_code == 0
    again = run(env, broker, "client", "remove", found["client_id"])
    assert again.exit_code == 1 and "no active client has this id" in again.output
    bad = run(env, broker, "client", "add", "no spaces please")
    assert bad.exit_code == 1 and "a client name is" in bad.output


def test_instances_show_tells_the_plan_masked_parameters_and_operations(
    platform: Platform, env: dict[str, str]
) -> None:
    assert platform.call("PUT", "/service_instances/cli-1", CREATE).status_code == 201
    assert (
        platform.call(
            "PATCH", "/service_instances/cli-1", {"service_id": "svc-gold", "plan_id": "plan-large"}
        ).status_code
        == 200
    )
    text = run(env, instances.instances, "show", "cli-1")
    assert text.exit_code == 0, text.output
    assert "broker plan and parameters" in text.stdout and "plan-large" in text.stdout
    assert "broker operations (2)" in text.stdout
    assert "Pw-cli-7" not in text.output and "******" in text.stdout
    shown = json.loads(run(env, instances.instances, "show", "cli-1", "--json").stdout)
    assert [(op["kind"], op["state"]) for op in shown["broker_operations"]] == [
        ("created", "succeeded"),
        ("upgraded", "succeeded"),
    ]


def test_the_product_hears_secret_parameters_only_when_the_seller_opts_in(
    platform: Platform, app: Flask, env: dict[str, str]
) -> None:
    assert platform.call("PUT", "/service_instances/sec-1", CREATE).status_code == 201
    with app.app_context(), connected():
        instance = Instance.get(Instance.instance_id == "sec-1")
        created = InstanceEvent.get((InstanceEvent.instance == instance) & (InstanceEvent.kind == "created"))
        event = lifecycle_event(created, instance)
        assert event.change["parameters"] == {"seats": 2, "admin_password": "******"}
        assert runtime().jobs.enriched(event).extra == {}  # not opted in

    opted = _OptedJobs(runtime_settings(app, send_secrets=True))
    init_jobs(opted)  # registers the enricher only because the seller opted in
    init_jobs(_OptedJobs(runtime_settings(app, send_secrets=False)))
    [(enrich, marketplace, types)] = opted.added
    assert (marketplace, sorted(types)) == ("broker", ["instance.created", "instance.upgraded"])
    with app.app_context(), connected():
        assert enrich(event).extra == {"broker_secrets": {"admin_password": "Pw-cli-7"}}
    assert (
        platform.call("PUT", "/service_instances/sec-2", {**CREATE, "parameters": {"seats": 1}}).status_code
        == 201
    )
    with app.app_context(), connected():
        plain = Instance.get(Instance.instance_id == "sec-2")
        event = lifecycle_event(InstanceEvent.get(InstanceEvent.instance == plain), plain)
        assert enrich(event).extra == {}  # nothing secret to add


def runtime_settings(app: Flask, send_secrets: bool) -> Any:
    """The app's settings with ISV_BROKER_SEND_SECRETS as given."""
    settings = app.extensions["isvserver"].settings
    broker_settings = replace(settings.of("broker"), send_secrets=send_secrets)
    return SimpleNamespace(of=lambda name: broker_settings, data_keys=settings.data_keys)


class _OptedJobs:
    """What init_jobs needs of the job queue: its settings and add_enricher."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.added: list[tuple[Any, str | None, Any]] = []

    def add_enricher(self, enrich: Any, *, marketplace: str | None = None, event_types: Any = None) -> None:
        self.added.append((enrich, marketplace, event_types))

    def every(self, name: str, seconds: float, fn: Any, lease_s: float | None = None) -> None:
        self.periodic = (name, seconds, fn)


def test_expired_tokens_and_old_failure_counts_are_pruned_hourly(platform: Platform, app: Flask) -> None:
    jobs = _OptedJobs(runtime_settings(app, send_secrets=False))
    init_jobs(jobs)
    name, seconds, prune = jobs.periodic
    assert (name, seconds) == ("broker.prune_tokens", 3600)
    with app.app_context(), connected():
        live = BrokerToken.select().count()
        client = BrokerClient.get()
        now = utcnow()
        BrokerToken.create(digest="a" * 64, client=client, expires_at=now - timedelta(days=2))
        BrokerToken.create(digest="b" * 64, client=client, expires_at=now - timedelta(hours=2))
        minute = int(time.time() // 60)
        BrokerTokenFailure.create(source_address="10.0.0.1", minute=minute - 61, failures=3)
        BrokerTokenFailure.create(source_address="10.0.0.1", minute=minute, failures=1)
        prune(None)
        assert BrokerToken.select().count() == live + 1  # the one expired two hours ago is kept a day
        assert [f.minute for f in BrokerTokenFailure.select()] == [minute]
