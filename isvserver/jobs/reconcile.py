"""Expiry guard: instances past their expiry the marketplace never froze, freezes never released.

What happens to an instance past its expiry is its adapter's `expiry_policy`: GUARD (listed; frozen with
ISV_AUTO_FREEZE or `--freeze`), FREEZE (frozen when it passes, whatever the setting), IGNORE (left out).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peewee import JOIN, ModelSelect, fn

from isvserver import lifecycle
from isvserver.adapters import ExpiryPolicy, expiry_policies
from isvserver.db import connected, database
from isvserver.lifecycle import Action, LifecycleError, State
from isvserver.models import Instance, InstanceEvent, utcnow
from isvserver.settings import Settings

log = logging.getLogger("isvserver.reconcile")

EXPIRED_NOT_FROZEN = "expired_not_frozen"
FROZEN_NOT_RELEASED = "frozen_not_released"
DAY_S = 86400


@dataclass(frozen=True)
class Overdue:
    """An instance the marketplace should have frozen or released by now."""

    instance_id: str
    order_id: str
    state: str
    expire_at: datetime | None
    frozen_since: datetime | None  # None for an expired instance that was never frozen
    days_overdue: float
    marketplace: str = ""


@dataclass(frozen=True)
class Report:
    """What one reconcile run found and did."""

    now: datetime
    freeze_days: int
    expired_not_frozen: list[Overdue]
    frozen_not_released: list[Overdue]
    auto_frozen: int


def _kept(query: ModelSelect, ignored: Collection[str]) -> ModelSelect:
    """`query` without the instances of the `ignored` marketplaces."""
    return query.where(Instance.marketplace.not_in(list(ignored))) if ignored else query


def ignored_marketplaces(policies: Mapping[str, ExpiryPolicy]) -> list[str]:
    """The marketplaces whose instances' expiry reconcile leaves alone (policy IGNORE)."""
    return sorted(name for name, policy in policies.items() if policy == ExpiryPolicy.IGNORE)


def _expired_not_frozen(now: datetime, ignored: Collection[str] = ()) -> ModelSelect:
    """Active instances whose expiry has passed (columns chosen by the caller)."""
    query = Instance.select().where(
        (Instance.state == State.ACTIVE.value)
        & Instance.released_at.is_null()
        & Instance.expire_at.is_null(False)
        & (Instance.expire_at < now)
    )
    return _kept(query, ignored)


def _frozen_not_released(
    now: datetime, freeze_days: int, ignored: Collection[str] = ()
) -> tuple[ModelSelect, Any]:
    """Frozen instances whose freeze is older than `freeze_days`, and the expression of when it began.

    The freeze began at the instance's latest `frozen` event (one grouped subquery), else at its last
    update.
    """
    last_frozen = (
        InstanceEvent.select(InstanceEvent.instance, fn.MAX(InstanceEvent.created_at).alias("frozen_at"))
        .where(InstanceEvent.kind == Action.FREEZE.value)
        .group_by(InstanceEvent.instance)
        .alias("last_frozen")
    )
    since = fn.COALESCE(last_frozen.c.frozen_at, Instance.updated_at).python_value(
        Instance.updated_at.python_value
    )
    query = (
        Instance.select()
        .join(last_frozen, JOIN.LEFT_OUTER, on=(last_frozen.c.instance_ref == Instance.id))
        .where((Instance.state == State.FROZEN.value) & (since < now - timedelta(days=freeze_days)))
    )
    return _kept(query, ignored), since


def _days(delta: timedelta) -> float:
    return round(delta.total_seconds() / DAY_S, 1)


def find_overdue(
    now: datetime, freeze_days: int, ignored: Collection[str] = ()
) -> tuple[list[Overdue], list[Overdue]]:
    """(expired but never frozen, frozen longer than `freeze_days` but never released), most overdue first,
    leaving out the instances of the `ignored` marketplaces.

    `now` is naive UTC, like every stored time.
    """
    expired = [
        Overdue(instance_id, order_id, state, expire_at, None, _days(now - expire_at), marketplace)
        for instance_id, order_id, state, expire_at, marketplace in _expired_not_frozen(now, ignored)
        .select(
            Instance.instance_id, Instance.order_id, Instance.state, Instance.expire_at, Instance.marketplace
        )
        .order_by(Instance.expire_at, Instance.instance_id)
        .tuples()
    ]
    query, since = _frozen_not_released(now, freeze_days, ignored)
    frozen = [
        Overdue(
            instance_id,
            order_id,
            state,
            expire_at,
            frozen_since,
            _days(now - frozen_since - timedelta(days=freeze_days)),
            marketplace,
        )
        for instance_id, order_id, state, expire_at, frozen_since, marketplace in query.select(
            Instance.instance_id,
            Instance.order_id,
            Instance.state,
            Instance.expire_at,
            since,
            Instance.marketplace,
        )
        .order_by(since, Instance.instance_id)
        .tuples()
    ]
    return expired, frozen


def count_overdue(now: datetime, freeze_days: int, ignored: Collection[str] = ()) -> dict[str, int]:
    """How many instances find_overdue would list, by kind, in two COUNT queries."""
    frozen, _ = _frozen_not_released(now, freeze_days, ignored)
    return {
        EXPIRED_NOT_FROZEN: _expired_not_frozen(now, ignored).select(fn.COUNT(Instance.id)).scalar() or 0,
        FROZEN_NOT_RELEASED: frozen.select(fn.COUNT(Instance.id)).scalar() or 0,
    }


def freeze_expired(marketplace: str, now: datetime, outbox: bool) -> int:
    """Freeze the instances of `marketplace` whose expiry has passed (for an adapter whose policy is
    FREEZE, between reconcile runs); how many were frozen."""
    rows = [
        Overdue(instance_id, order_id, state, expire_at, None, 0.0, marketplace)
        for instance_id, order_id, state, expire_at in _expired_not_frozen(now)
        .where(Instance.marketplace == marketplace)
        .select(Instance.instance_id, Instance.order_id, Instance.state, Instance.expire_at)
        .order_by(Instance.expire_at, Instance.instance_id)
        .tuples()
    ]
    return auto_freeze(rows, now, outbox) if rows else 0


def auto_freeze(rows: list[Overdue], now: datetime, outbox: bool) -> int:
    """Freeze the instances of `rows` still expired and unfrozen at `now`, each in its own transaction.

    An instance renewed, frozen or released meanwhile is skipped. With `outbox`, each freeze is also
    queued for delivery to the seller's product. Returns how many were frozen.
    """
    frozen = 0
    for row in rows:
        still_overdue = _expired_not_frozen(now).where(Instance.instance_id == row.instance_id)
        try:
            with database.atomic():
                # Lock the row and re-check it: the marketplace may have changed it since it was listed.
                if (still_overdue.for_update() if database.for_update else still_overdue).first() is None:
                    continue
                if lifecycle.set_frozen(row.instance_id, True, outbox=outbox):
                    frozen += 1
        except LifecycleError:
            continue
    return frozen


def run(settings: Settings, now: datetime, act: bool, freeze_days: int | None = None) -> Report:
    """Find the overdue instances on the bound database, freeze the expired ones (all of them if `act`,
    else those whose adapter's policy is FREEZE), log a summary."""
    days = settings.freeze_days if freeze_days is None else freeze_days
    policies = expiry_policies(settings.marketplaces)
    with connected():
        expired, frozen = find_overdue(now, days, ignored_marketplaces(policies))
        due = [
            row
            for row in expired
            if act or policies.get(row.marketplace, ExpiryPolicy.GUARD) == ExpiryPolicy.FREEZE
        ]
        auto_frozen = auto_freeze(due, now, outbox=True) if due else 0
    log.info(
        "reconcile expired_not_frozen=%d frozen_not_released=%d auto_frozen=%d",
        len(expired),
        len(frozen),
        auto_frozen,
    )
    return Report(now, days, expired, frozen, auto_frozen)


def periodic(settings: Settings, now: datetime | None = None) -> Report:
    """The scheduled run: it freezes expired instances only when ISV_AUTO_FREEZE is on."""
    return run(settings, now or utcnow(), act=settings.auto_freeze)
