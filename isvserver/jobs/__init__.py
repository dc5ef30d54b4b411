"""Background jobs on huey: hand lifecycle changes to the provisioner, sweep, reconcile, adapters' tasks.

The database is the record of what must happen (the delivery outbox, adapters' pending work); a huey
message only says "look now". A message lost with a killed consumer is found again by the sweeper,
which runs every minute and when a consumer starts.

Periodic jobs with an interval in seconds (`Jobs.every`) run on threads of the consumer, each under a
database lease (isvserver/jobs/periodic.py): one run at a time across consumers and hosts. They run
inside the app's context with a database connection, and get the app's Runtime (settings, lifecycle,
provisioner, jobs), as request handlers do.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from huey import Huey
from huey.api import TaskWrapper

from isvserver import lifecycle
from isvserver.db import connected, database
from isvserver.deferred import collecting
from isvserver.jobs import deliveries, periodic, reconcile, retention
from isvserver.jobs.queue import make_huey
from isvserver.models import Delivery, utcnow
from isvserver.provisioning import LifecycleEvent, Provisioner, ProvisioningError
from isvserver.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

    from isvserver.runtime import Runtime

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


@dataclass(frozen=True)
class Every:
    """A periodic job: its name, its interval and lease in seconds, and what it runs."""

    name: str
    seconds: float
    fn: Callable[[Runtime], None]
    lease_s: float


MIN_LOOK_S = 0.05  # the shortest wait between two looks at a periodic job
DATABASE_RETRY_S = 5.0  # the longest wait after a look failed (the database did not answer)


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
        self.periodic: dict[str, Every] = {}  # Jobs.every's jobs, by name
        self.app: Flask | None = None  # set by create_app: jobs run in its context
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
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

    # --- periodic jobs ----------------------------------------------------------------------------

    def every(
        self, name: str, seconds: float, fn: Callable[[Runtime], None], lease_s: float | None = None
    ) -> None:
        """Run `fn(runtime)` every `seconds` seconds, at most once at a time across consumers and hosts.

        The run holds a database lease of `lease_s` seconds (ISV_JOB_LEASE_S when None), renewed while it
        runs; a consumer that dies mid-run loses it when it expires, and another takes the job over.
        """
        if not name or len(name) > periodic.NAME_LENGTH:
            raise ValueError(f"a periodic job's name is 1 to {periodic.NAME_LENGTH} characters")
        if name in self.periodic:
            raise ValueError(f"periodic job {name!r} is already registered")
        if not seconds > 0:
            raise ValueError(f"periodic job {name!r}: the interval must be more than 0 seconds")
        lease = float(lease_s if lease_s is not None else self.settings.job_lease_s)
        if not lease > 0:
            raise ValueError(f"periodic job {name!r}: the lease must be more than 0 seconds")
        self.periodic[name] = Every(name, float(seconds), fn, lease)

    def bind(self, app: Flask) -> None:
        """Run jobs in the context of `app` (create_app calls it)."""
        self.app = app

    @contextmanager
    def context(self) -> Iterator[Runtime]:
        """The app's context with a database connection, and its Runtime: where a job runs, as a request
        handler does. What the job deferred until after its commits (queued deliveries) runs at the end."""
        from isvserver.runtime import runtime

        if self.app is None:
            raise RuntimeError("these jobs belong to no app (create_app binds them)")
        with self.app.app_context(), connected(), collecting() as steps:
            try:
                yield runtime()
            finally:
                for step in steps:
                    step()

    def run_periodic(self, name: str, owner: str | None = None) -> float:
        """One look at periodic job `name`: run it when it is due and no live runner holds it.

        Returns the seconds until it is worth looking again.
        """
        job = self.periodic[name]
        owner = owner or periodic.runner_id()
        with connected():
            periodic.ensure(name, job.seconds)
            started = utcnow()
            if not periodic.acquire(name, owner, job.lease_s, started):
                return periodic.wait_s(periodic.read(name))
        error = None
        beat = threading.Event()
        heart = threading.Thread(
            target=self._renew, args=(job, owner, beat), name=f"lease-{name}", daemon=True
        )
        heart.start()
        began = time.perf_counter()
        try:
            with self.context() as runtime:
                job.fn(runtime)
        except Exception as exc:
            error = _failure_reason(exc)
            log.warning("periodic job %s failed: %s", name, error, exc_info=not isinstance(exc, SAFE_TO_SHOW))
        finally:
            beat.set()
            heart.join()
            with connected():
                kept = periodic.finish(name, owner, started, job.seconds, error)
        if not kept:
            log.warning(
                "periodic job %s: its lease expired during the run (another runner may have run it)", name
            )
        log.debug("periodic job %s ran in %.3f s", name, time.perf_counter() - began)
        return job.seconds

    def _renew(self, job: Every, owner: str, done: threading.Event) -> None:
        """Renew the lease of a running job every third of its length until it is done."""
        while not done.wait(job.lease_s / 3):
            try:
                with connected():
                    if not periodic.renew(job.name, owner, job.lease_s):
                        log.warning("periodic job %s: lost its lease while running", job.name)
                        return
            except Exception:  # the database did not answer: try again, the lease still runs
                log.warning("periodic job %s: could not renew its lease", job.name)

    def _follow(self, name: str) -> None:
        """Look at periodic job `name` again and again until the consumer stops."""
        job = self.periodic[name]
        owner = periodic.runner_id()
        while not self._stop.is_set():
            try:
                wait = self.run_periodic(name, owner)
            except Exception:  # the database did not answer the look: look again soon
                log.warning("periodic job %s: cannot reach the database", name)
                wait = DATABASE_RETRY_S
            self._stop.wait(min(max(wait, MIN_LOOK_S), job.seconds))

    def start_periodic(self) -> None:
        """Start following every periodic job on threads of this process (the consumer calls it)."""
        self._stop.clear()
        for name in self.periodic:
            thread = threading.Thread(target=self._follow, args=(name,), name=f"every-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_periodic(self, timeout_s: float = 30.0) -> None:
        """Stop following: runs in progress finish (for up to `timeout_s` in all), none start."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [thread for thread in self._threads if thread.is_alive()]

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
