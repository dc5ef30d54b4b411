"""The outbox: recorded lifecycle changes handed to the provisioner in order per instance, with backoff.

A runner takes an instance's lease (a row update, so it holds across processes and hosts), hands over
its pending deliveries oldest first, and gives the lease back. A runner killed mid-job leaves the lease
to expire; the sweeper then starts a new runner and the same delivery (same event id) is handed over
again, which the product recognises.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import fn

from isvserver.db import database
from isvserver.models import Delivery, Instance, InstanceEvent, utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Due:
    """An instance with pending deliveries, and when its next one may run."""

    instance_id: str
    run_at: datetime


def acquire(instance_id: str, owner: str, lease_s: float) -> bool:
    """Take the instance's lease unless a live runner holds it; True when taken."""
    now = utcnow()
    with database.atomic():
        taken = (
            Instance.update(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
            .where(
                (Instance.instance_id == instance_id)
                & (Instance.lease_until.is_null() | (Instance.lease_until < now))
            )
            .execute()
        )
    return taken == 1


def renew(instance_id: str, owner: str, lease_s: float) -> None:
    """Extend the lease this runner holds."""
    with database.atomic():
        Instance.update(lease_until=utcnow() + timedelta(seconds=lease_s)).where(
            (Instance.instance_id == instance_id) & (Instance.lease_owner == owner)
        ).execute()


def give_back(instance_id: str, owner: str) -> None:
    """Release the lease this runner holds."""
    with database.atomic():
        Instance.update(lease_owner=None, lease_until=None).where(
            (Instance.instance_id == instance_id) & (Instance.lease_owner == owner)
        ).execute()


def next_pending(instance_id: str) -> Delivery | None:
    """The instance's oldest pending delivery, with its event and instance."""
    return (
        Delivery.select(Delivery, InstanceEvent, Instance)
        .join(InstanceEvent, on=Delivery.event == InstanceEvent.id)
        .switch(Delivery)
        .join(Instance, on=Delivery.instance == Instance.id)
        .where((Instance.instance_id == instance_id) & (Delivery.status == PENDING))
        .order_by(Delivery.id)
        .first()
    )


def delivered(delivery: Delivery) -> None:
    """Mark the delivery done (inside the caller's transaction when there is one)."""
    Delivery.update(status=DELIVERED, delivered_at=utcnow(), last_error=None).where(
        Delivery.id == delivery.id
    ).execute()


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after `attempts` failed attempts: exponential, capped, with ±20 % jitter."""
    return min(cap_s, base_s * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)


def attempt_failed(
    delivery: Delivery, error: str, max_attempts: int, base_s: float, cap_s: float
) -> datetime | None:
    """Count a failed attempt; when to try again, or None when that was the last attempt."""
    attempts = delivery.attempts + 1
    final = attempts >= max_attempts
    retry_at = None if final else utcnow() + timedelta(seconds=backoff_s(attempts, base_s, cap_s))
    with database.atomic():
        Delivery.update(
            attempts=attempts,
            status=FAILED if final else PENDING,
            next_attempt_at=retry_at or utcnow(),
            last_error=error[:255],
        ).where(Delivery.id == delivery.id).execute()
    return retry_at


def due(now: datetime, limit: int = 500) -> list[Due]:
    """Instances with pending deliveries, each with the time its next runner may start (lease, backoff)."""
    rows = (
        Delivery.select(Instance.instance_id, fn.MIN(Delivery.next_attempt_at), Instance.lease_until)
        .join(Instance, on=Delivery.instance == Instance.id)
        .where((Delivery.status == PENDING) & (Instance.state != "failed"))
        .group_by(Instance.instance_id, Instance.lease_until)
        .limit(limit)
        .tuples()
    )
    return [Due(instance_id, max(now, next_at, lease or now)) for instance_id, next_at, lease in rows]


def pending_count() -> int:
    """How many deliveries wait to be handed over."""
    return Delivery.select().where(Delivery.status == PENDING).count()
