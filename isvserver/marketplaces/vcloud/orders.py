"""One V Cloud order → the lifecycle (spec §2): paid → create, endAt passed → freeze, done, aborted or
refunded → release. Unknown statuses are stored and logged, never acted on.

Statuses [decision]: the seed shows `OrderFiled` and the service statuses `ServiceRunning`, `ServiceDone`
and `ServiceAbort`; the other order statuses known here follow its timestamps (paidTS, filedTS,
completeTS, refundTS). Paid means a payment time (`paidTS` or `PaidTS`, both spellings of the seed) or
a paid status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from isvserver.db import database
from isvserver.lifecycle import Action, IdConflict, State, fits_instance_id
from isvserver.marketplaces.vcloud.config import MARKETPLACE
from isvserver.marketplaces.vcloud.models import VCloudOrder
from isvserver.models import Instance, utcnow
from isvserver.runtime import Runtime

log = logging.getLogger("isvserver.vcloud")

PENDING, PAID, REFUNDED = "pending", "paid", "refunded"
ORDER_STATUSES = {
    "OrderPending": PENDING,  # created, waiting for the buyer's payment
    "OrderPaid": PAID,
    "OrderFiled": PAID,  # the provider's resources are ready (filedTS)
    "OrderCompleted": PAID,  # completeTS: the order is complete (its service status says how it ended)
    "OrderRefunded": REFUNDED,
}
RUNNING, ENDED = "running", "ended"
SERVICE_STATUSES = {
    "": RUNNING,  # not activated yet: the paid service is the buyer's
    "ServiceRunning": RUNNING,
    "ServiceDone": ENDED,
    "ServiceAbort": ENDED,
}
ID_COLUMN = 64  # what instance.order_id holds


class Outcome(StrEnum):
    """What an order became, as `isvserver vcloud orders` shows it."""

    WAITING = "waiting"  # not paid: nothing to create yet
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FROZEN = "frozen"
    RELEASED = "released"
    FAILED = "failed"  # provisioning gave up; the next poll that reads the order retries it
    UNKNOWN_STATUS = "unknown_status"  # stored and logged, nothing done
    UNREADABLE = "unreadable"  # fields of the wrong type: stored and logged, nothing done
    ID_CONFLICT = "id_conflict"  # another creation has the order's id: logged, nothing created


class Target(StrEnum):
    """Where the order says its instance should be."""

    NONE = "none"
    ACTIVE = "active"
    FROZEN = "frozen"
    RELEASED = "released"


class BadPage(ValueError):
    """An item of the order listing has no usable id: it cannot be kept, and is left out."""


@dataclass(frozen=True)
class Order:
    """The fields of a platform order the provider acts on."""

    order_id: str
    status: str | None
    service_status: str | None
    service_id: str | None
    service_name: str | None
    public_key: str | None
    paid_ts: int | None
    end_at: int | None
    refund_ts: int | None
    updated_at: int | None
    unreadable: tuple[str, ...]  # the fields present with a type the platform does not document


def _text(raw: dict[str, Any], name: str, unreadable: list[str], limit: int = 255) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        unreadable.append(name)
        return None
    return value


def _time(raw: dict[str, Any], names: tuple[str, ...], unreadable: list[str]) -> int | None:
    for name in names:
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53:
            unreadable.append(name)
            return None
        return int(value)
    return None


def usable_id(order_id: Any) -> bool:
    """Whether `order_id` can key an order (text of 1 to 200 printable characters)."""
    return isinstance(order_id, str) and 0 < len(order_id) <= 200 and order_id.isprintable()


def parse(raw: dict[str, Any]) -> Order:
    """The order of one listing item; BadPage when it has no id to keep it by."""
    order_id = raw.get("id")
    if not usable_id(order_id):
        raise BadPage("an order without a usable id")
    bad: list[str] = []
    order = Order(
        order_id=order_id,
        status=_text(raw, "status", bad, 64),
        service_status=_text(raw, "serviceStatus", bad, 64),
        service_id=_text(raw, "serviceID", bad, 200),
        service_name=_text(raw, "service", bad),
        public_key=_text(raw, "publicKey", bad, 4096) or None,
        paid_ts=_time(raw, ("paidTS", "PaidTS"), bad),
        end_at=_time(raw, ("endAt",), bad),
        refund_ts=_time(raw, ("refundTS",), bad),
        updated_at=_time(raw, ("updatedAt",), bad),
        unreadable=(),
    )
    return order if not bad else Order(**{**order.__dict__, "unreadable": tuple(bad)})


def target(order: Order, has_instance: bool, now_s: int) -> Target | None:
    """Where the order's instance should be at `now_s`; None when a status is unknown (nothing is done)."""
    kind = ORDER_STATUSES.get(order.status or "")
    service = SERVICE_STATUSES.get(order.service_status or "")
    if kind is None or service is None:
        return None
    paid = bool(order.paid_ts) or kind == PAID
    if not paid and not has_instance:
        return Target.NONE
    if kind == REFUNDED or order.refund_ts or service == ENDED:
        return Target.RELEASED
    if order.end_at and order.end_at <= now_s:
        return Target.FROZEN
    return Target.ACTIVE


def _epoch(moment: int) -> datetime:
    return datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)


def _stored(order: Order) -> dict[str, Any]:
    return {
        "status": (order.status or "")[:64],
        "service_status": order.service_status,
        "service_id": order.service_id,
        "service_name": order.service_name,
        "public_key": order.public_key,
        "paid_ts": order.paid_ts,
        "end_at": order.end_at,
        "refund_ts": order.refund_ts,
        "platform_updated_at": order.updated_at,
    }


def _row(order: Order) -> tuple[VCloudOrder, bool]:
    """The order's row, locked for this transaction (inserted when new), and whether it is new."""
    now = utcnow()
    inserted = (
        VCloudOrder.insert(
            order_id=order.order_id,
            outcome=Outcome.WAITING.value,
            first_seen_at=now,
            last_seen_at=now,
            changed_at=now,
            **_stored(order),
        )
        .on_conflict_ignore()
        .execute()
    )
    query = VCloudOrder.select().where(VCloudOrder.order_id == order.order_id)
    row = (query.for_update() if database.for_update else query).get()
    return row, bool(inserted) and row.sweep == 0


def follow(rt: Runtime, order: Order, sweep: int, now_s: int) -> bool:
    """Store the order and bring its instance where it says, in one transaction; True when this sweep
    had read it already (the listing shifted under the sweep)."""
    with database.atomic():
        row, new = _row(order)
        again = row.sweep == sweep
        before = (row.status, row.service_status, row.outcome)
        settled = not new and not order.unreadable and _settled(order, row, now_s)
        for name, value in _stored(order).items():
            setattr(row, name, value)
        row.sweep, row.last_seen_at = sweep, utcnow()
        if settled:  # read again unchanged, its instance already where it says: nothing to ask for
            row.save(only=[VCloudOrder.sweep, VCloudOrder.last_seen_at])
            return again
        outcome, note = _act(rt, order, row, now_s)
        changed = new or before != (row.status, row.service_status, outcome.value)
        if changed and outcome in (Outcome.UNKNOWN_STATUS, Outcome.UNREADABLE, Outcome.ID_CONFLICT):
            log.warning("vcloud order %s: %s; stored, nothing done", order.order_id, note)
        if changed:
            row.changed_at = utcnow()
        row.outcome, row.note = outcome.value, note
        row.save()
    return again


SETTLED = {
    Outcome.WAITING.value: Target.NONE,
    Outcome.ACTIVE.value: Target.ACTIVE,
    Outcome.FROZEN.value: Target.FROZEN,
    Outcome.RELEASED.value: Target.RELEASED,
}


def _settled(order: Order, row: VCloudOrder, now_s: int) -> bool:
    """Whether the order is as stored and its instance already where it says (an order whose status is
    unknown stays unknown). A provisioning that is running or gave up is not settled: reading the
    order again starts a failed one again, as a marketplace's resend does."""
    if any(getattr(row, name) != value for name, value in _stored(order).items()):
        return False
    if row.outcome == Outcome.UNKNOWN_STATUS.value:
        return True
    return (
        row.outcome in SETTLED and target(order, row.instance_id is not None, now_s) == SETTLED[row.outcome]
    )


def _reference(order: Order) -> tuple[str | None, None]:
    """The order as the instance's reference (its order_id column holds 64 characters)."""
    return (order.order_id if len(order.order_id) <= ID_COLUMN else None, None)


def _act(rt: Runtime, order: Order, row: VCloudOrder, now_s: int) -> tuple[Outcome, str | None]:
    """Drive the lifecycle toward the order's target; what the order became and why."""
    if order.unreadable:
        return Outcome.UNREADABLE, f"unreadable field(s): {', '.join(order.unreadable)}"
    goal = target(order, row.instance_id is not None, now_s)
    if goal is None:
        return (
            Outcome.UNKNOWN_STATUS,
            f"unknown status {order.status!r} / service status {order.service_status!r}",
        )
    if goal == Target.NONE:
        return Outcome.WAITING, None
    lifecycle = rt.lifecycle
    # Once per order (its creation key): a later read returns the same instance, and restarts a
    # provisioning that gave up.
    # The instance id is the order id; one outside the instance id's charset gets an id derived from it,
    # with the order id kept beside it.
    try:
        creation = lifecycle.create(
            MARKETPLACE,
            f"order:{order.order_id}",
            order.order_id,
            _reference(order),
            exact=fits_instance_id(order.order_id),
        )
    except IdConflict:
        return Outcome.ID_CONFLICT, "another instance has this order's id: nothing created"
    instance = creation.instance
    row.instance_id = instance_id = creation.instance_id
    if creation.changed:
        log.info("vcloud order %s: instance %s created", order.order_id, instance_id)
    if instance is not None and instance.state != State.RELEASED and order.end_at:
        expire_at = _epoch(order.end_at)
        if instance.expire_at != expire_at:
            lifecycle.change_expiry(instance_id, Action.RENEW, f"vcloud:endAt:{order.end_at}", expire_at)
    # A freeze or unfreeze is asked for once the instance is provisioned (the lifecycle records every
    # one asked for while provisioning runs): a later poll asks when it is.
    state = _state(instance_id)
    if goal == Target.RELEASED:
        if lifecycle.release(instance_id, _reference(order)).changed:
            log.info("vcloud order %s: instance %s released", order.order_id, instance_id)
    elif goal == Target.FROZEN and state == State.ACTIVE:
        if lifecycle.set_frozen(instance_id, True).changed:
            log.info("vcloud order %s: instance %s frozen (endAt passed)", order.order_id, instance_id)
    elif goal == Target.ACTIVE and state == State.FROZEN:  # endAt moved past now again
        lifecycle.set_frozen(instance_id, False)
    return Outcome(_state(instance_id)), None


def _state(instance_id: str) -> str:
    return Instance.select(Instance.state).where(Instance.instance_id == instance_id).scalar()


def freeze_due(rt: Runtime, now_s: int) -> int:
    """Freeze the instances of orders whose endAt has passed since they were last read (the platform
    does not list an order again when only time passes); how many were frozen."""
    due = [
        order_id
        for (order_id,) in VCloudOrder.select(VCloudOrder.order_id)
        .where(
            VCloudOrder.outcome.in_([Outcome.ACTIVE.value, Outcome.PROVISIONING.value])
            & VCloudOrder.end_at.is_null(False)
            & (VCloudOrder.end_at > 0)
            & (VCloudOrder.end_at <= now_s)
        )
        .tuples()
    ]
    frozen = 0
    for order_id in due:
        with database.atomic():
            row = VCloudOrder.get(VCloudOrder.order_id == order_id)
            if row.instance_id is None or _state(row.instance_id) != State.ACTIVE:
                continue  # still provisioning: frozen by a later poll
            if rt.lifecycle.set_frozen(row.instance_id, True).changed:
                frozen += 1
                log.info("vcloud order %s: instance %s frozen (endAt passed)", order_id, row.instance_id)
            row.outcome, row.changed_at = _state(row.instance_id), utcnow()
            row.save()
    return frozen
