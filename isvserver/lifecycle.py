"""The marketplace-agnostic instance lifecycle: an explicit transition table over the store."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from peewee import Database

from isvserver.db import database, ident, is_postgres, names, placeholders, statement
from isvserver.deferred import after_commit
from isvserver.models import Delivery, ExternalId, Instance, InstanceEvent, ParkedChange, utcnow
from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent, Provisioner
from isvserver.sealing import DataKeys, seal, unseal


class State(StrEnum):
    """Where an instance is in its life."""

    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FROZEN = "frozen"
    RELEASED = "released"
    FAILED = "failed"  # provisioning gave up after its retries; the next newInstance resend restarts it


class Action(StrEnum):
    """A change a marketplace can ask for; each accepted one becomes an instance_event row of that kind."""

    PROVISIONED = "provisioned"
    PROVISIONING_FAILED = "provisioning_failed"
    PROVISIONING_RESTARTED = "provisioning_restarted"
    RENEW = "renewed"
    CONVERT_TRIAL = "trial_converted"
    UNSUBSCRIBE_RENEWAL = "renewal_unsubscribed"
    CHANGE_RENEWAL = "renewal_changed"
    FREEZE = "frozen"
    UNFREEZE = "unfrozen"
    UPGRADE = "upgraded"
    RELEASE = "released"


class LifecycleError(Exception):
    """A request the lifecycle cannot accept in the instance's current state."""


class InstanceNotFound(LifecycleError):
    """No instance has this id."""


class InstanceReleased(LifecycleError):
    """The instance was released; it cannot be renewed, upgraded or unfrozen."""


class StillProvisioning(LifecycleError):
    """The instance is still being provisioned; ask again later."""


class ChangeRejected(LifecycleError):
    """The product cannot take the requested change."""


class IdConflict(LifecycleError):
    """The exact id a platform chose belongs to another creation (another idempotency key)."""


class InvalidInstanceId(LifecycleError):
    """The exact id a platform chose is not a safe instance id (1–64 of A–Z a–z 0–9 . _ -)."""


# An operation's state, in the words Open Service Broker uses (any interface can map them to its own).
IN_PROGRESS, SUCCEEDED, FAILED = "in progress", "succeeded", "failed"
OPERATION_PREFIX = "op-"


@dataclass(frozen=True)
class Operation:
    """What a lifecycle command did: the change it recorded (or the earlier one it repeated), to poll."""

    id: str | None  # None: nothing was ever recorded for it (nothing to wait for)
    instance_id: str
    changed: bool  # whether this call recorded the change (False: a repeat, or nothing to do)
    instance: Instance | None = None  # the instance, for a creation


@dataclass(frozen=True)
class OperationState:
    """Where an operation is, read from the database: IN_PROGRESS, SUCCEEDED or FAILED."""

    id: str
    instance_id: str
    kind: str  # the instance_event kind: created, upgraded, released…
    state: str
    description: str


CREATED = "created"  # the event kind of a new instance

# The event types a provisioner hears about, by instance_event kind (adapters add their own kinds).
EVENT_TYPES: dict[str, str] = {
    "created": "instance.created",
    "renewed": "instance.renewed",
    "trial_converted": "instance.renewed",
    "renewal_unsubscribed": "instance.renewed",
    "renewal_changed": "instance.renewed",
    "frozen": "instance.frozen",
    "unfrozen": "instance.unfrozen",
    "upgraded": "instance.upgraded",
    "released": "instance.released",
}
# The lifecycle's own types (what every provisioner hears); the others are adapters' and go to `sync`.
LIFECYCLE_EVENT_TYPES = frozenset(EVENT_TYPES.values())
LIFECYCLE_KINDS = frozenset(EVENT_TYPES)


def register_event_types(types: dict[str, str]) -> None:
    """Add an adapter's own event kinds (a kind already known keeps its type, or must agree)."""
    for kind, event_type in types.items():
        if EVENT_TYPES.setdefault(kind, event_type) != event_type:
            raise ValueError(f"event kind {kind!r} is already {EVENT_TYPES[kind]!r}")


SAME = "same"  # accepted, nothing to record
RECORD = "record"  # accepted, state unchanged, the change is recorded (expiry, spec)
EXPIRY_ACTIONS = (Action.RENEW, Action.CONVERT_TRIAL, Action.UNSUBSCRIBE_RENEWAL, Action.CHANGE_RENEWAL)

P, A, F, R, X = State.PROVISIONING, State.ACTIVE, State.FROZEN, State.RELEASED, State.FAILED
_GONE = InstanceReleased

# What each action does in each state: a next state, SAME, RECORD, or the error to raise. Changes that
# arrive while provisioning runs (or after it failed) are recorded and applied in order after it: a
# freeze recorded then makes the instance frozen, not active, once it is provisioned.
TRANSITIONS: dict[Action, dict[State, State | str | type[LifecycleError]]] = {
    Action.PROVISIONED: {P: A, X: A, A: SAME, F: SAME, R: SAME},
    Action.PROVISIONING_FAILED: {P: X, X: SAME, A: SAME, F: SAME, R: SAME},
    Action.PROVISIONING_RESTARTED: {X: P, P: SAME, A: SAME, F: SAME, R: SAME},
    **{action: {P: RECORD, X: RECORD, A: RECORD, F: RECORD, R: _GONE} for action in EXPIRY_ACTIONS},
    Action.FREEZE: {P: RECORD, X: RECORD, A: F, F: SAME, R: SAME},
    Action.UNFREEZE: {P: RECORD, X: RECORD, A: SAME, F: A, R: _GONE},
    Action.UPGRADE: {P: RECORD, X: RECORD, A: RECORD, F: RECORD, R: _GONE},
    Action.RELEASE: {P: R, X: R, A: R, F: R, R: SAME},
}
NOT_PROVISIONED = (P, X)

EXTERNAL_ID_NAMESPACE = uuid.UUID("4f1b1a52-7c1e-5b7e-9f0a-15e0c10d0015")  # of ids derived from others
_INSTANCE_ID = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,64}")  # a safe URL path segment


def fits_instance_id(candidate: str) -> bool:
    """Whether `candidate` can be an instance id as it is (a safe URL path segment of at most 64)."""
    return _INSTANCE_ID.fullmatch(candidate) is not None


def instance_id_for(marketplace: str, external_id: str) -> tuple[str, str | None]:
    """The instance id proposed for `external_id`, and the external id to keep beside it.

    An id that fits the charset is used as it is (nothing kept beside it); one that does not gets a UUID
    derived from it (UUIDv5: the same one every time), and is kept whole beside it (`external_id_of`).
    """
    if fits_instance_id(external_id):
        return external_id, None
    if not external_id:
        return str(uuid.uuid4()), None
    return str(uuid.uuid5(EXTERNAL_ID_NAMESPACE, f"{marketplace}\n{external_id}")), external_id


def external_id_of(instance_id: str) -> str | None:
    """The external id kept beside the instance's derived id (None when the id is the external one)."""
    row = (
        ExternalId.select(ExternalId.external_id)
        .join(Instance)
        .where(Instance.instance_id == instance_id)
        .first()
    )
    return row.external_id if row is not None else None


def view(instance: Instance) -> InstanceView:
    """The provisioner's view of an instance row."""
    return InstanceView(
        instance_id=instance.instance_id,
        marketplace=instance.marketplace,
        order_id=instance.order_id,
        order_line_id=instance.order_line_id,
        product_id=instance.product_id,
        expire_at=instance.expire_at,
        is_trial=instance.is_trial,
        state=instance.state,
    )


def lifecycle_event(
    event: InstanceEvent, instance: Instance, order: dict[str, Any] | None = None
) -> LifecycleEvent:
    """The provisioner's view of one recorded change; its id is stable across retries."""
    change = {"kind": event.kind, **(json.loads(event.detail) if event.detail else {})}
    for name, value in change.items():
        if name.endswith("_at") and isinstance(value, str):
            change[name] = datetime.fromisoformat(value)  # stored as text by _record
    if event.order_id:
        change.update(order_id=event.order_id, order_line_id=event.order_line_id)
    return LifecycleEvent(
        id=f"evt_{instance.marketplace}_{event.id}",
        type=EVENT_TYPES[event.kind],
        occurred_at=event.created_at,
        instance=view(instance),
        change=change,
        order=order,
    )


def _select_for_update(condition: Any) -> Instance | None:
    """The first matching row, locked for this transaction (a PostgreSQL row lock; SQLite's IMMEDIATE
    transaction already holds the database's write lock)."""
    query = Instance.select().where(condition)
    return (query.for_update() if database.for_update else query).first()


def _locked(instance_id: str) -> Instance:
    """The instance with this id, locked for this transaction."""
    instance = _select_for_update(Instance.instance_id == instance_id)
    if instance is None:
        raise InstanceNotFound(instance_id)
    return instance


def _record(
    instance: Instance,
    kind: str,
    to_state: State,
    order: tuple[str | None, str | None] = (None, None),
    idempotency_key: str | None = None,
    outbox: bool = False,
    **detail: Any,
) -> InstanceEvent:
    event = InstanceEvent.create(
        instance=instance,
        kind=kind,
        from_state=instance.state,
        to_state=to_state.value,
        order_id=order[0],
        order_line_id=order[1],
        idempotency_key=idempotency_key,
        detail=json.dumps(detail, default=str, sort_keys=True) if detail else None,
    )
    if outbox and event.kind in EVENT_TYPES:
        Delivery.create(instance=instance, event=event, event_type=EVENT_TYPES[event.kind], status="pending")
    return event


def _apply(
    instance: Instance,
    action: Action,
    order: tuple[str | None, str | None] = (None, None),
    idempotency_key: str | None = None,
    outbox: bool = False,
    **detail: Any,
) -> bool:
    """Apply `action` per TRANSITIONS inside the caller's transaction; True when something changed.

    A change already recorded under `idempotency_key` is a retry of a success: it changes nothing and
    succeeds whatever the state is now. With `outbox`, the change is also queued for the provisioner.
    """
    if idempotency_key is not None and (
        InstanceEvent.select()
        .where((InstanceEvent.instance == instance) & (InstanceEvent.idempotency_key == idempotency_key))
        .exists()
    ):
        return False
    outcome = TRANSITIONS[action][State(instance.state)]
    if isinstance(outcome, type):
        raise outcome(instance.instance_id)
    if outcome == SAME:
        return False
    to_state = State(instance.state) if outcome == RECORD else State(outcome)
    if action == Action.PROVISIONED and _frozen_meanwhile(instance):
        to_state = State.FROZEN
    _record(instance, action.value, to_state, order, idempotency_key, outbox, **detail)
    instance.state = to_state.value
    instance.updated_at = utcnow()
    if to_state == State.RELEASED:
        instance.released_at = instance.updated_at
    return True


def _frozen_meanwhile(instance: Instance) -> bool:
    """Whether the last freeze or unfreeze recorded before the instance was provisioned is a freeze."""
    last = (
        InstanceEvent.select(InstanceEvent.kind)
        .where(
            (InstanceEvent.instance == instance)
            & InstanceEvent.kind.in_([Action.FREEZE.value, Action.UNFREEZE.value])
        )
        .order_by(InstanceEvent.id.desc())
        .first()
    )
    return last is not None and last.kind == Action.FREEZE.value


def _store_app_info(instance: Instance, app_info: AppInfo, data_key: bytes) -> None:
    app_info.check()
    instance.front_end_url = app_info.front_end_url
    instance.admin_url = app_info.admin_url
    instance.user_name = app_info.user_name
    instance.password_encrypted = seal(data_key, app_info.password) if app_info.password else None
    instance.memo = app_info.memo


def create_instance(
    marketplace: str,
    creation_key: str,
    proposed_id: str,
    provisioner: Provisioner,
    data_key: bytes,
    reference: tuple[str | None, str | None] = (None, None),
    business_id: str | None = None,
    exact: bool = False,
    detail: dict[str, Any] | None = None,
) -> tuple[Instance, bool]:
    """The instance created under this idempotency key and whether this call created it (once; resends
    get the same). `reference` is the order line that asked for it, when there is one.

    With `exact`, the instance gets `proposed_id` or nothing: InvalidInstanceId when it is no safe id,
    IdConflict when another creation holds it. Otherwise a taken or unsafe id is replaced by a UUID.
    `detail` (never a secret) goes with the created event to the product. An inline provisioner
    provisions it here; any other gets the creation queued (outbox). A resend for an instance whose
    provisioning failed starts that provisioning again.
    """
    by_key = (Instance.marketplace == marketplace) & (Instance.creation_key == creation_key)
    order_id, order_line_id = reference
    # INSERT first: the UNIQUE constraints decide (creation key; instance_id), no SELECT before it.
    # Only when the row stays out is the existing one read; when no row has this key, it was the
    # instance_id that collided (another order took the proposed id): again with a UUID.
    if exact and not fits_instance_id(proposed_id):
        raise InvalidInstanceId(proposed_id[:64])
    first, external_id = instance_id_for(marketplace, proposed_id)
    detail = dict(detail or {})
    if business_id is not None:
        detail["business_id"] = business_id
    with database.atomic():
        for candidate in (first,) if exact else (first, str(uuid.uuid4())):
            now = utcnow()
            instance = Instance(
                instance_id=candidate,
                marketplace=marketplace,
                creation_key=creation_key,
                order_id=order_id,
                order_line_id=order_line_id,
                business_id=business_id,
                state=State.PROVISIONING.value,
                created_at=now,
                updated_at=now,
            )
            if _inserted(instance):
                break
            existing = _select_for_update(by_key)
            if existing is not None:
                return _restarted_if_failed(existing), False  # a resend, or a concurrent call was first
            if exact:
                raise IdConflict(proposed_id)
        else:
            raise RuntimeError("a new instance_id collided twice")  # two UUIDs taken: not expected
        if external_id is not None:
            ExternalId.create(instance=instance, marketplace=marketplace, external_id=external_id)
        outbox = not provisioner.inline
        event = _record(instance, CREATED, State.PROVISIONING, reference, outbox=outbox, **detail)
        if not outbox:
            _store_app_info(instance, provisioner.provision(lifecycle_event(event, instance)), data_key)
            # What _apply(PROVISIONED) does, less its look for a freeze recorded meanwhile: a row
            # inserted by this transaction has no other event.
            to_state = TRANSITIONS[Action.PROVISIONED][State.PROVISIONING]
            _record(instance, Action.PROVISIONED.value, to_state)
            instance.state, instance.updated_at = to_state.value, utcnow()
            instance.save(only=instance.dirty_fields)
        _adopt_parked(instance, provisioner)
        return instance, True


PARK_LOCK_CLASS = 18771  # the advisory-lock class of parked changes (the migrations' lock is one bigint)


def hears(provisioner: Provisioner, kind: str) -> bool:
    """Whether changes of `kind` go to the provisioner's outbox: never for an inline provisioner; an
    adapter's kind only for one with a `sync` method (a provisioner never sees a type it did not ask for)."""
    if provisioner.inline:
        return False
    return kind in LIFECYCLE_KINDS or callable(getattr(provisioner, "sync", None))


def _lock_instance_id(instance_id: str) -> None:
    """Serialise parking and adopting for one instance id until the transaction ends (PostgreSQL: an
    advisory lock; SQLite's IMMEDIATE transaction already holds the database's write lock)."""
    if is_postgres():
        database.execute_sql(f"SELECT pg_advisory_xact_lock({PARK_LOCK_CLASS}, hashtext(%s))", (instance_id,))


def _adopt_parked(instance: Instance, provisioner: Provisioner) -> int:
    """Record the changes parked for the new instance's id, in the order they came; how many."""
    _lock_instance_id(instance.instance_id)
    parked = list(
        ParkedChange.select()
        .where((ParkedChange.instance_id == instance.instance_id) & ParkedChange.adopted_at.is_null())
        .order_by(ParkedChange.id)
    )
    for row in parked:
        detail = json.loads(row.detail) if row.detail else {}
        event = _record(
            instance,
            row.kind,
            State(instance.state),
            idempotency_key=row.idempotency_key,
            outbox=hears(provisioner, row.kind),
            **detail,
        )
        ParkedChange.update(adopted_at=utcnow(), event=event.id).where(ParkedChange.id == row.id).execute()
    return len(parked)


RECORDED, PARKED, REPEATED = "recorded", "parked", "repeated"


def record_change(
    instance_id: str,
    kind: str,
    detail: dict[str, Any],
    provisioner: Provisioner,
    idempotency_key: str | None = None,
) -> str:
    """Record an adapter's change of `kind` (an event kind it declared) against an instance id.

    The instance's state is unchanged. An instance id not known yet parks the change until
    create_instance adopts it. A change already recorded or parked under `idempotency_key` is REPEATED.
    `detail` (ids, flags, counts: never a secret or buyer data) is stored as JSON.
    """
    if kind not in EVENT_TYPES or kind in LIFECYCLE_KINDS:
        raise ValueError(f"{kind!r} is not an adapter's declared event kind")
    text = json.dumps(detail, default=str, sort_keys=True) if detail else None
    with database.atomic():
        _lock_instance_id(instance_id)
        instance = _select_for_update(Instance.instance_id == instance_id)
        if instance is None:
            if idempotency_key is not None and (
                ParkedChange.select()
                .where(
                    (ParkedChange.instance_id == instance_id)
                    & (ParkedChange.idempotency_key == idempotency_key)
                )
                .exists()
            ):
                return REPEATED
            ParkedChange.create(
                instance_id=instance_id, kind=kind, idempotency_key=idempotency_key, detail=text
            )
            return PARKED
        if idempotency_key is not None and (
            InstanceEvent.select()
            .where((InstanceEvent.instance == instance) & (InstanceEvent.idempotency_key == idempotency_key))
            .exists()
        ):
            return REPEATED
        _record(
            instance,
            kind,
            State(instance.state),
            idempotency_key=idempotency_key,
            outbox=hears(provisioner, kind),
            **detail,
        )
        return RECORDED


def _inserted(instance: Instance) -> bool:
    """INSERT the new row unless a UNIQUE constraint keeps it out; True (and its id set) when it went in."""
    query = Instance.insert(**instance.__data__).on_conflict_ignore()
    cursor = database.execute(query.returning(Instance.id) if database.returning_clause else query)
    if database.returning_clause:
        row = cursor.fetchone()
        if row is None:
            return False
        instance.id = row[0]
    elif cursor.rowcount == 1:
        instance.id = cursor.lastrowid
    else:
        return False
    instance._dirty.clear()
    return True


def _restarted_if_failed(instance: Instance) -> Instance:
    """The existing instance of a resent newInstance; a failed provisioning starts again."""
    if instance.state == State.FAILED and _apply(instance, Action.PROVISIONING_RESTARTED):
        Delivery.update(status="pending", attempts=0, next_attempt_at=utcnow(), last_error=None).where(
            (Delivery.instance == instance) & (Delivery.status == "failed")
        ).execute()
        instance.save()
    return instance


def complete_provisioning(instance_id: str, app_info: AppInfo, data_key: bytes) -> bool:
    """Finish a pending provisioning with the product's AppInfo; True when the instance became active
    (or frozen, when a freeze arrived meanwhile). An instance released meanwhile stays released."""
    with database.atomic():
        instance = _locked(instance_id)
        if instance.state not in NOT_PROVISIONED:
            return False
        _store_app_info(instance, app_info, data_key)
        changed = _apply(instance, Action.PROVISIONED)
        instance.save()
        return changed


def fail_provisioning(instance_id: str, reason: str) -> bool:
    """Mark the instance's provisioning failed (after its last retry); True when it changed."""
    with database.atomic():
        instance = _locked(instance_id)
        changed = _apply(instance, Action.PROVISIONING_FAILED, reason=reason)
        if changed:
            instance.save()
        return changed


def change_expiry(
    instance_id: str,
    action: Action,
    reference: tuple[str | None, str | None],
    idempotency_key: str,
    expire_at: datetime,
    product_id: str | None = None,
    outbox: bool = False,
) -> bool:
    """Renew, convert a trial, unsubscribe a renewal period or change a renewal; once per key."""
    if action not in EXPIRY_ACTIONS:
        raise ValueError(f"{action} does not change the expiry")
    with database.atomic():
        instance = _locked(instance_id)
        changed = _apply(
            instance,
            action,
            reference,
            idempotency_key,
            outbox,
            expire_at=expire_at,
            product_id=product_id,
        )
        if changed:
            instance.expire_at = expire_at
            if product_id:
                instance.product_id = product_id
            if action == Action.CONVERT_TRIAL:
                instance.is_trial = False
            instance.save()
        return changed


def set_frozen(instance_id: str, frozen: bool, outbox: bool = False, **detail: Any) -> bool:
    """Freeze (keep data) or unfreeze; repeating the current status succeeds and changes nothing."""
    with database.atomic():
        instance = _locked(instance_id)
        changed = _apply(instance, Action.FREEZE if frozen else Action.UNFREEZE, outbox=outbox, **detail)
        if changed:
            instance.save()
        return changed


def upgrade(
    instance_id: str,
    reference: tuple[str | None, str | None],
    idempotency_key: str,
    outbox: bool = False,
    **detail: Any,
) -> bool:
    """Record an upgrade of the instance (`detail`: what changed, never a secret); once per key."""
    with database.atomic():
        instance = _locked(instance_id)
        changed = _apply(instance, Action.UPGRADE, reference, idempotency_key, outbox, **detail)
        if changed:
            instance.save()
        return changed


def release(
    instance_id: str, order_id: str | None = None, order_line_id: str | None = None, outbox: bool = False
) -> bool:
    """Mark the instance released (never deleted); a repeated release succeeds."""
    with database.atomic():
        instance = _locked(instance_id)
        changed = _apply(instance, Action.RELEASE, (order_id, order_line_id), outbox=outbox)
        if changed:
            instance.save()
        return changed


def check_change(instance_id: str, product_info: dict[str, Any], provisioner: Provisioner) -> None:
    """Raise unless the product can take this renewal change."""
    instance = Instance.select().where(Instance.instance_id == instance_id).first()
    if instance is None:
        raise InstanceNotFound(instance_id)
    if instance.state == State.RELEASED:
        raise InstanceReleased(instance_id)
    if instance.state in NOT_PROVISIONED:
        raise StillProvisioning(instance_id)
    reason = provisioner.check_change(view(instance), product_info)
    if reason:
        raise ChangeRejected(reason)


def await_provisioning(instance_id: str, deadline: float) -> str:
    """The instance's state once it is no longer provisioning, or when `deadline` (time.monotonic()) comes."""
    pause = 0.01
    while True:
        state = Instance.select(Instance.state).where(Instance.instance_id == instance_id).scalar()
        left = deadline - time.monotonic()
        if state != State.PROVISIONING or left <= 0:
            return state
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.1)


class InstanceRow(NamedTuple):
    """What queryInstance reads of an instance (a plain row: no model object per row)."""

    instance_id: str
    state: str
    front_end_url: str | None
    admin_url: str | None
    user_name: str | None
    password_encrypted: str | None
    memo: str | None


_ROW_FIELDS = tuple(getattr(Instance, name) for name in InstanceRow._fields)


def _find_sql(count: int) -> Callable[[Database], str]:
    def build(db: Database) -> str:
        columns = names(db, *(f.column_name for f in _ROW_FIELDS))
        return (
            f"SELECT {columns} FROM {ident(db, Instance._meta.table_name)} "  # noqa: S608 (names from the model)
            f"WHERE {ident(db, Instance.instance_id.column_name)} IN ({placeholders(db, count)})"
        )

    return build


def find_instances(instance_ids: Sequence[str]) -> dict[str, InstanceRow]:
    """The instances with these ids, in one query (its text built once per number of ids)."""
    ids = list(instance_ids)
    if not ids:
        return {}
    cursor = database.execute_sql(statement(("instance.find", len(ids)), _find_sql(len(ids))), ids)
    return {row.instance_id: row for row in map(InstanceRow._make, cursor.fetchall())}  # text columns


def app_info(instance: Instance | InstanceRow, data_keys: DataKeys) -> AppInfo | None:
    """The stored AppInfo with the password decrypted (by any of `data_keys`), or None while there is none."""
    if instance.front_end_url is None:
        return None
    return AppInfo(
        front_end_url=instance.front_end_url,
        admin_url=instance.admin_url,
        user_name=instance.user_name,
        password=unseal(data_keys, instance.password_encrypted) if instance.password_encrypted else None,
        memo=instance.memo,
    )


class Deliveries(Protocol):
    """What the lifecycle needs of the job queue: a runner for an instance's pending changes."""

    def deliver_soon(self, instance_id: str, at: datetime | None = None) -> None:
        """Ask a consumer to hand over the instance's pending changes."""
        ...


class Lifecycle:
    """The lifecycle's commands as adapters call them: each decides whether its change goes to the
    outbox (any provisioner that is not inline) and queues the delivery once the call has committed."""

    def __init__(self, provisioner: Provisioner, jobs: Deliveries, data_key: bytes) -> None:
        self.provisioner = provisioner
        self.jobs = jobs
        self.data_key = data_key

    @property
    def outbox(self) -> bool:
        """Whether changes reach the product through the outbox (the provisioner is not inline)."""
        return not self.provisioner.inline

    def _queued(
        self, instance_id: str, changed: bool, kind: str, idempotency_key: str | None = None
    ) -> Operation:
        if changed and self.outbox:
            after_commit(lambda: self.jobs.deliver_soon(instance_id))
        return Operation(_operation_id(instance_id, kind, idempotency_key), instance_id, changed)

    def create(
        self,
        marketplace: str,
        idempotency_key: str,
        proposed_id: str,
        reference: tuple[str | None, str | None] = (None, None),
        business_id: str | None = None,
        exact: bool = False,
        detail: dict[str, Any] | None = None,
    ) -> Operation:
        """The creation under this key (its instance, whether this call created it); provisioning is
        queued. With `exact`, the instance has `proposed_id` or the call fails (IdConflict)."""
        instance, created = create_instance(
            marketplace,
            idempotency_key,
            proposed_id,
            self.provisioner,
            self.data_key,
            reference,
            business_id,
            exact,
            detail,
        )
        if instance.state in NOT_PROVISIONED:
            after_commit(lambda: self.jobs.deliver_soon(instance.instance_id))
        operation_id = _operation_id(instance.instance_id, CREATED)
        return Operation(operation_id, instance.instance_id, created, instance)

    def change_expiry(
        self,
        instance_id: str,
        action: Action,
        idempotency_key: str,
        expire_at: datetime,
        product_id: str | None = None,
        reference: tuple[str | None, str | None] = (None, None),
    ) -> Operation:
        """Renew, convert a trial, unsubscribe or change a renewal; once per idempotency key."""
        changed = change_expiry(
            instance_id, action, reference, idempotency_key, expire_at, product_id, outbox=self.outbox
        )
        return self._queued(instance_id, changed, action.value, idempotency_key)

    def set_frozen(self, instance_id: str, frozen: bool) -> Operation:
        """Freeze (keep data) or unfreeze; repeating the current status changes nothing."""
        kind = (Action.FREEZE if frozen else Action.UNFREEZE).value
        return self._queued(instance_id, set_frozen(instance_id, frozen, outbox=self.outbox), kind)

    def upgrade(
        self,
        instance_id: str,
        idempotency_key: str,
        reference: tuple[str | None, str | None] = (None, None),
        detail: dict[str, Any] | None = None,
    ) -> Operation:
        """Record an upgrade (`detail`: what changed, never a secret); once per idempotency key."""
        changed = upgrade(instance_id, reference, idempotency_key, outbox=self.outbox, **(detail or {}))
        return self._queued(instance_id, changed, Action.UPGRADE.value, idempotency_key)

    def release(self, instance_id: str, reference: tuple[str | None, str | None] = (None, None)) -> Operation:
        """Mark released (never deleted); a repeated release changes nothing and has the first's operation."""
        changed = release(instance_id, *reference, outbox=self.outbox)
        return self._queued(instance_id, changed, Action.RELEASE.value)

    def operations(self, instance_id: str) -> list[OperationState]:
        """The instance's operations, oldest first (its creation and every change recorded since)."""
        return instance_operations(instance_id)

    def operation(self, operation_id: str) -> OperationState | None:
        """Where the operation is (read from the database, on any worker, any time after); None if unknown."""
        return operation_state(operation_id)

    def check_change(self, instance_id: str, product_info: dict[str, Any]) -> None:
        """Raise unless the product can take this renewal change."""
        check_change(instance_id, product_info, self.provisioner)

    def record(
        self, instance_id: str, kind: str, detail: dict[str, Any], idempotency_key: str | None = None
    ) -> bool:
        """Record an adapter's change (its declared event kind) against an instance id, parked while the
        instance is unknown; queued for the product after commit. False when it repeats `idempotency_key`."""
        outcome = record_change(instance_id, kind, detail, self.provisioner, idempotency_key)
        if outcome == RECORDED and hears(self.provisioner, kind):
            after_commit(lambda: self.jobs.deliver_soon(instance_id))
        return outcome != REPEATED


def _operation_id(instance_id: str, kind: str, idempotency_key: str | None = None) -> str | None:
    """The handle of the instance's latest change of `kind` (under `idempotency_key` when given)."""
    query = (
        InstanceEvent.select(InstanceEvent.id)
        .join(Instance)
        .where((Instance.instance_id == instance_id) & (InstanceEvent.kind == kind))
    )
    if idempotency_key is not None:
        query = query.where(InstanceEvent.idempotency_key == idempotency_key)
    event_id = query.order_by(InstanceEvent.id.desc()).limit(1).scalar()
    return f"{OPERATION_PREFIX}{event_id}" if event_id is not None else None


PROVISIONING_KINDS = (Action.PROVISIONED, Action.PROVISIONING_FAILED, Action.PROVISIONING_RESTARTED)


def operation_state(operation_id: str) -> OperationState | None:
    """The state of the change `operation_id` names: a creation until provisioning ends, any other change
    until the product has it (its delivery; done at once when nothing was to deliver); None if unknown."""
    number = operation_id.removeprefix(OPERATION_PREFIX)
    if not operation_id.startswith(OPERATION_PREFIX) or not number.isdigit() or len(number) > 18:
        return None
    event = InstanceEvent.select().where(InstanceEvent.id == int(number)).first()
    if event is None:
        return None
    instance = event.instance

    def answer(state: str, description: str) -> OperationState:
        return OperationState(operation_id, instance.instance_id, event.kind, state, description[:255])

    if event.kind == CREATED:
        last = (
            InstanceEvent.select(InstanceEvent.kind, InstanceEvent.detail)
            .where(
                (InstanceEvent.instance == instance)
                & (InstanceEvent.id > event.id)
                & InstanceEvent.kind.in_([kind.value for kind in PROVISIONING_KINDS])
            )
            .order_by(InstanceEvent.id.desc())
            .first()
        )
        if last is not None and last.kind == Action.PROVISIONED.value:
            return answer(SUCCEEDED, "provisioned")
        if last is not None and last.kind == Action.PROVISIONING_FAILED.value:
            reason = json.loads(last.detail).get("reason", "") if last.detail else ""
            return answer(FAILED, f"provisioning failed: {reason}" if reason else "provisioning failed")
        if instance.state == State.RELEASED:
            return answer(FAILED, "released before it was provisioned")
        return answer(IN_PROGRESS, "provisioning")
    delivery = Delivery.select().where(Delivery.event == event.id).first()
    if delivery is None or delivery.status == "delivered":
        return answer(SUCCEEDED, event.kind)
    if delivery.status == "failed":
        return answer(FAILED, f"{event.kind}: the product did not take it: {delivery.last_error or 'failed'}")
    return answer(IN_PROGRESS, f"{event.kind}: waiting for the product")


def instance_operations(instance_id: str) -> list[OperationState]:
    """Every operation of the instance, oldest first: its creation and the changes recorded since (the
    provisioning's own steps are part of the creation)."""
    own = {kind.value for kind in PROVISIONING_KINDS}
    ids = (
        InstanceEvent.select(InstanceEvent.id, InstanceEvent.kind)
        .join(Instance)
        .where(Instance.instance_id == instance_id)
        .order_by(InstanceEvent.id)
        .tuples()
    )
    found = (operation_state(f"{OPERATION_PREFIX}{event_id}") for event_id, kind in ids if kind not in own)
    return [state for state in found if state is not None]
