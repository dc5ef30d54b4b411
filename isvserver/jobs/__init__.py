"""Background jobs on huey: hand lifecycle changes to the provisioner, sweep, reconcile, adapters' tasks.

The database is the record of what must happen (the delivery outbox, adapters' pending work); a huey
message only says "look now". A message lost with a killed consumer is found again by the sweeper,
which runs every minute and when a consumer starts.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from huey import Huey
from huey.api import TaskWrapper

from isvserver import lifecycle
from isvserver.db import connected, database
from isvserver.jobs import deliveries, reconcile, retention
from isvserver.jobs.queue import make_huey
from isvserver.models import Delivery, utcnow
from isvserver.provisioning import LifecycleEvent, Provisioner, ProvisioningError
from isvserver.settings import Settings

log = logging.getLogger("isvserver.jobs")

CREATED = "instance.created"
Enricher = Callable[[LifecycleEvent], LifecycleEvent]


class SafeError(Exception):
    """An error whose message says what failed without secrets, passwords or buyer data."""


class DetailsPending(SafeError):
    """What an adapter adds to the event could not be had yet; the delivery is retried."""


SAFE_TO_SHOW = (ProvisioningError, SafeError)


def _failure_reason(exc: Exception) -> str:
    """A failed attempt as stored and shown: the message only where its class promises it is safe."""
    if isinstance(exc, SAFE_TO_SHOW):
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:255]
    return f"{type(exc).__name__} (details in the consumer's log)"


@dataclass(frozen=True)
class Enrichment:
    """An enricher and the events it applies to: of instances of `marketplace`, of `event_types`
    (None: any)."""

    enrich: Enricher
    marketplace: str | None = None
    event_types: frozenset[str] | None = None

    def applies(self, marketplace: str, event_type: str) -> bool:
        """Whether it enriches an event of this type on an instance of this marketplace."""
        return (self.marketplace is None or self.marketplace == marketplace) and (
            self.event_types is None or event_type in self.event_types
        )


def _every_minutes(minutes: int):
    """A huey periodic-task schedule: every `minutes` minutes."""
    return lambda moment: (moment.hour * 60 + moment.minute) % max(1, minutes) == 0


class Jobs:
    """The app's huey tasks, bound to its settings and provisioner."""

    def __init__(self, settings: Settings, provisioner: Provisioner, huey: Huey | None = None) -> None:
        self.settings = settings
        self.provisioner = provisioner
        self.huey = huey or make_huey(settings)
        self.extensions: dict[str, Any] = {}  # what each adapter keeps here (its tasks, its clients)
        self.enrichers: list[Enrichment] = []  # what adapters add to an event first (add_enricher)
        self.sweeps: list[Callable[[], None]] = []  # adapters' work the sweeper looks for too
        self.starts: list[Callable[[], None]] = []  # adapters' checks when a consumer starts
        self._deliver: TaskWrapper = self.huey.task(name="deliver")(self.run_deliveries)
        self.huey.periodic_task(_every_minutes(1), name="sweep")(self.sweep)
        self.huey.periodic_task(_every_minutes(settings.reconcile_interval_s // 60), name="reconcile")(
            self.reconcile
        )
        retention.register(self)

    def add_enricher(
        self,
        enrich: Enricher,
        *,
        marketplace: str | None = None,
        event_types: Collection[str] | None = None,
    ) -> None:
        """Have `enrich` add to every event of `marketplace`'s instances and of `event_types` (None: any)
        before the product hears it; every enricher that applies runs, in the order they were added."""
        types = frozenset(event_types) if event_types is not None else None
        self.enrichers.append(Enrichment(enrich, marketplace, types))

    def enriched(self, event: LifecycleEvent) -> LifecycleEvent:
        """`event` with what every enricher that applies to it added."""
        for enrichment in self.enrichers:
            if enrichment.applies(event.instance.marketplace, event.type):
                event = enrichment.enrich(event)
        return event

    # --- producers (called after the marketplace call's transaction committed) ----------------------

    def deliver_soon(self, instance_id: str, at: datetime | None = None) -> None:
        """Ask a consumer to hand over the instance's pending changes (now, or at `at`)."""
        if at is None or at <= utcnow():
            self._deliver(instance_id)
        else:
            # huey's schedule holds whole seconds: rounding down would run the job before `at`
            self._deliver.schedule(args=(instance_id,), eta=at.replace(microsecond=0) + timedelta(seconds=1))

    # --- tasks -----------------------------------------------------------------------------------

    def run_deliveries(self, instance_id: str) -> None:
        """Hand the instance's pending changes to the provisioner, oldest first, under its lease."""
        owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        with connected():
            if not deliveries.acquire(instance_id, owner, self.settings.job_lease_s):
                return  # another runner has it and delivers everything pending
            try:
                self._deliver_pending(instance_id, owner)
            finally:
                deliveries.give_back(instance_id, owner)
            # Whatever is still pending (a retry later on, or a change committed while this runner was
            # finishing and found the lease taken) gets the next runner from here, and only from here.
            left = deliveries.next_pending(instance_id)
            if left is not None and left.instance.state != lifecycle.State.FAILED:
                self.deliver_soon(instance_id, left.next_attempt_at)

    def _deliver_pending(self, instance_id: str, owner: str) -> None:
        """Deliver until nothing is due, a delivery waits for its retry, or provisioning failed."""
        while (item := deliveries.next_pending(instance_id)) is not None:
            if item.next_attempt_at > utcnow():
                return
            if item.instance.state == lifecycle.State.FAILED:
                return  # waits for the marketplace's resend to restart provisioning
            if not self._hand_over(item) and item.status == deliveries.PENDING:
                return  # it waits for its retry, and the changes after it wait behind it
            deliveries.renew(instance_id, owner, self.settings.job_lease_s)

    def _hand_over(self, item: Delivery) -> bool:
        """One attempt at one delivery; True when it was handed over (a failure is recorded)."""
        instance = item.instance
        try:
            sync = getattr(self.provisioner, "sync", None)
            adapters_event = item.event_type not in lifecycle.LIFECYCLE_EVENT_TYPES
            if adapters_event and not callable(sync):
                deliveries.delivered(item)  # queued before the provisioner changed: it never asked for it
                log.info(
                    "not handed over instance=%s event=%s (no sync)", instance.instance_id, item.event_type
                )
                return True
            event = self.enriched(lifecycle.lifecycle_event(item.event, instance))
            if item.event_type == CREATED:
                app_info = self.provisioner.provision(event)
                with database.atomic():
                    lifecycle.complete_provisioning(instance.instance_id, app_info, self.settings.data_key)
                    deliveries.delivered(item)
            elif adapters_event:
                sync(event)
                deliveries.delivered(item)
            else:
                self.provisioner.apply(event)
                deliveries.delivered(item)
        except Exception as exc:
            reason = _failure_reason(exc)
            if not isinstance(exc, SAFE_TO_SHOW):  # its message may hold anything: the log's guard masks it
                log.warning("delivery raised instance=%s", instance.instance_id, exc_info=True)
            settings = self.settings
            retry_at = deliveries.attempt_failed(
                item, reason, settings.job_max_attempts, settings.job_retry_base_s, settings.job_retry_max_s
            )
            log.warning(
                "delivery failed instance=%s event=%s attempt=%d %s: %s",
                instance.instance_id,
                item.event_type,
                item.attempts + 1,
                f"retry at {retry_at:%H:%M:%S}" if retry_at else "gave up",
                reason,
            )
            if retry_at is not None:
                item.status = deliveries.PENDING
            else:
                item.status = deliveries.FAILED
                if item.event_type == CREATED:
                    lifecycle.fail_provisioning(instance.instance_id, reason)
            return False
        log.info("delivered instance=%s event=%s", instance.instance_id, item.event_type)
        return True

    def sweep(self) -> None:
        """Start runners for every instance with due deliveries, then the adapters' own sweeps."""
        with connected():
            due = deliveries.due(utcnow())
        for item in due:
            self.deliver_soon(item.instance_id, item.run_at)
        if due:
            log.info("sweep: %d instances with pending deliveries", len(due))
        for sweep in self.sweeps:
            sweep()

    def reconcile(self) -> None:
        """Find instances past their expiry or their freeze period (acting only with ISV_AUTO_FREEZE)."""
        with connected():
            reconcile.periodic(self.settings)
