"""What `isvserver instances show` tells of a broker instance: plan, parameters (masked), operations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from isvserver.adapters import Section
from isvserver.cli.helpers import print_table
from isvserver.jobs import Jobs
from isvserver.lifecycle import instance_operations
from isvserver.marketplaces.broker import tokens
from isvserver.marketplaces.broker.config import NAME
from isvserver.marketplaces.broker.models import BrokerInstance
from isvserver.models import Instance
from isvserver.provisioning import LifecycleEvent
from isvserver.sealing import unseal
from isvserver.settings import Settings


def _plan_table(rows: Sequence[dict[str, Any]]) -> None:
    print_table(
        ("service", "plan", "parameters", "maintenance"),
        (
            (r["service_id"], r["plan_id"], json.dumps(r["parameters"], ensure_ascii=False), r["maintenance"])
            for r in rows
        ),
    )


def _operation_table(rows: Sequence[dict[str, Any]]) -> None:
    print_table(
        ("operation", "kind", "state", "description"),
        ((r["operation"], r["kind"], r["state"], r["description"]) for r in rows),
    )


def instance_sections(instance: Instance, settings: Settings) -> tuple[Section, ...]:
    """The broker instance's plan and parameters (each `password` one as ******) and its operations."""
    row = BrokerInstance.select().where(BrokerInstance.instance == instance).first()
    plans = []
    if row is not None:
        plans.append(
            {
                "service_id": row.service_id,
                "plan_id": row.plan_id,
                "parameters": json.loads(row.parameters),
                "maintenance": row.maintenance_version,
            }
        )
    operations = [
        {"operation": op.id, "kind": op.kind, "state": op.state, "description": op.description}
        for op in instance_operations(instance.instance_id)
    ]
    return (
        Section("broker_plan", "broker plan and parameters", plans, _plan_table),
        Section("broker_operations", f"broker operations ({len(operations)})", operations, _operation_table),
    )


class SecretParameters:
    """Enricher: the product hears a broker instance's `password` parameters (ISV_BROKER_SEND_SECRETS=1)."""

    def __init__(self, jobs: Jobs) -> None:
        self.data_keys = jobs.settings.data_keys

    def __call__(self, event: LifecycleEvent) -> LifecycleEvent:
        """The event with `extra["broker_secrets"]`: the instance's sealed parameters, opened."""
        row = (
            BrokerInstance.select(BrokerInstance.secrets_sealed)
            .join(Instance)
            .where(Instance.instance_id == event.instance.instance_id)
            .first()
        )
        if row is None or not row.secrets_sealed:
            return event
        return replace(
            event,
            extra={**event.extra, "broker_secrets": json.loads(unseal(self.data_keys, row.secrets_sealed))},
        )


PRUNE_EVERY_S = 3600


def init_jobs(jobs: Jobs) -> None:
    """Expired tokens and old failure counts pruned hourly; with ISV_BROKER_SEND_SECRETS=1, the created
    and upgraded events carry the secret parameters."""
    jobs.every("broker.prune_tokens", PRUNE_EVERY_S, lambda runtime: tokens.prune())
    if jobs.settings.of(NAME).send_secrets:
        jobs.add_enricher(
            SecretParameters(jobs), marketplace=NAME, event_types=("instance.created", "instance.upgraded")
        )
