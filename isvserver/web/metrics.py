"""Prometheus metrics, aggregated across gunicorn workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, has_app_context
from peewee import fn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from isvserver import usage
from isvserver.adapters import expiry_policies, load, load_part
from isvserver.db import connected
from isvserver.jobs import deliveries, periodic
from isvserver.jobs.reconcile import count_overdue, ignored_marketplaces
from isvserver.models import Instance, utcnow
from isvserver.web import private

# Buckets around the marketplace's 5 s budget.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0)

REQUESTS = Counter(
    "isv_requests",
    "Marketplace calls answered, by activity and result code",
    ["interface", "activity", "result_code"],
)
REJECTIONS = Counter(
    "isv_rejected_calls", "Calls refused before their activity ran, by reason", ["interface", "reason"]
)
DUPLICATES = Counter(
    "isv_duplicates",
    "Repeated calls recognised: replayed nonces, repeated business keys",
    ["interface", "kind"],
)
LATENCY = Histogram(
    "isv_request_duration_seconds",
    "Time to answer a call, from the request's arrival",
    ["interface", "activity"],
    buckets=LATENCY_BUCKETS,
)
WAITS = Counter(
    "isv_answer_waits",
    "Calls that would wait for the product before answering, by what happened: waited (within the "
    "answer deadline), no_thread (every waiting slot taken: answered in progress at once), no_time "
    "(the deadline too close: answered in progress at once)",
    ["outcome"],
)

DEFAULT_FREEZE_DAYS = 15

bp = Blueprint("metrics", __name__)
bp.before_request(private.only_operators)


def _overdue_clock() -> tuple[datetime, int, list[str]]:
    """Now (naive UTC), the freeze period and the marketplaces whose expiry is ignored, from the current
    app when there is one."""
    runtime = current_app.extensions.get("isvserver") if has_app_context() else None
    if runtime is None:
        return utcnow(), DEFAULT_FREEZE_DAYS, []
    now = datetime.fromtimestamp(runtime.clock() / 1000, UTC).replace(tzinfo=None)
    ignored = ignored_marketplaces(expiry_policies(runtime.settings.marketplaces))
    return now, runtime.settings.freeze_days, ignored


class StoreCollector:
    """Gauges read from the database at scrape time: instances by state, the backlog, overdue instances."""

    def collect(self):
        """Yield the gauges (nothing when the database cannot be read)."""
        try:
            with connected():
                rows = list(
                    Instance.select(Instance.state, fn.COUNT(Instance.id).alias("n"))
                    .group_by(Instance.state)
                    .tuples()
                )
                now, freeze_days, ignored = _overdue_clock()
                overdue = count_overdue(now, freeze_days, ignored)
                pending = deliveries.pending_count()
                schedules = periodic.all_schedules()
                ledger = usage.counts(), usage.refused_by_code(), usage.oldest_pending(now)
                own = _owners_gauges()
        except Exception:  # a scrape must not fail because the database is down; /readyz says so
            return
        by_state = GaugeMetricFamily("isv_instances", "Instances by lifecycle state", labels=["state"])
        for state, count in rows:
            by_state.add_metric([state], count)
        yield by_state
        backlog = dict(rows).get("provisioning", 0)
        yield GaugeMetricFamily(
            "isv_provisioning_queue_depth", "Instances still being provisioned", value=backlog
        )
        yield GaugeMetricFamily(
            "isv_deliveries_pending", "Lifecycle changes waiting to be handed to the product", value=pending
        )
        by_kind = GaugeMetricFamily(
            "isv_instances_overdue",
            "Instances past a marketplace deadline: expired but never frozen, frozen past the freeze "
            "period but never released",
            labels=["kind"],
        )
        for kind, count in overdue.items():
            by_kind.add_metric([kind], count)
        yield by_kind
        yield from _periodic_metrics(schedules, now)
        yield from _usage_metrics(*ledger)
        yield from own


def _owners_gauges() -> list:
    """The gauges the enabled adapters and parts publish (one that fails is left out, and logged)."""
    runtime = current_app.extensions.get("isvserver") if has_app_context() else None
    if runtime is None:
        return []
    owners = [
        *(load(n) for n in runtime.settings.marketplaces),
        *(load_part(n) for n in runtime.settings.parts),
    ]
    found = []
    for owner in owners:
        if owner.gauges is None:
            continue
        try:
            found.extend(owner.gauges())
        except Exception:
            logging.getLogger("isvserver").warning(
                "gauges of %s could not be read", owner.name, exc_info=True
            )
    return found


def _usage_metrics(
    counts: dict[tuple[str, str], int], refused: dict[tuple[str, str], int], oldest: dict[str, float]
):
    """The usage ledger: records by marketplace and state, refusals by code, the oldest pending's age."""
    records = GaugeMetricFamily(
        "isv_usage_records",
        "Usage records by marketplace and state (pending, pushed, refused, expired)",
        labels=["marketplace", "state"],
    )
    for (marketplace, state), count in sorted(counts.items()):
        records.add_metric([marketplace, state], count)
    yield records
    by_code = GaugeMetricFamily(
        "isv_usage_refused", "Usage records the marketplace refused, by code", labels=["marketplace", "code"]
    )
    for (marketplace, code), count in sorted(refused.items()):
        by_code.add_metric([marketplace, code], count)
    yield by_code
    age = GaugeMetricFamily(
        "isv_usage_oldest_pending_age_seconds",
        "Seconds since the oldest usage record still waiting for its marketplace was stored",
        labels=["marketplace"],
    )
    for marketplace, seconds in sorted(oldest.items()):
        age.add_metric([marketplace], seconds)
    yield age


def _periodic_metrics(schedules: list[periodic.Schedule], now: datetime):
    """Runs of every periodic job (Jobs.every) by outcome, and the age of its last success."""
    runs = CounterMetricFamily(
        "isv_periodic_job_runs", "Runs of each periodic job, by outcome", labels=["job", "outcome"]
    )
    age = GaugeMetricFamily(
        "isv_periodic_job_last_success_age_seconds",
        "Seconds since each periodic job last ran to the end without an error (absent before its first)",
        labels=["job"],
    )
    for schedule in schedules:
        runs.add_metric([schedule.name, "ok"], schedule.runs - schedule.failures)
        runs.add_metric([schedule.name, "failed"], schedule.failures)
        if schedule.last_success_at is not None:
            age.add_metric([schedule.name], max(0.0, (now - schedule.last_success_at).total_seconds()))
    yield runs
    yield age


@bp.get("/metrics")
def metrics() -> Response:
    """All workers' metrics in Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    store = CollectorRegistry()
    store.register(StoreCollector())
    return Response(generate_latest(registry) + generate_latest(store), content_type=CONTENT_TYPE_LATEST)
