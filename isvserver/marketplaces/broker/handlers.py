"""What each broker call does over the one lifecycle: catalog, provision, fetch, last operation, update,
deprovision. Each returns a `calls.Answer` (OSB status, body, headers); validation happened before."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from isvserver import lifecycle
from isvserver.calls import Answer, wait_after_commit
from isvserver.lifecycle import IN_PROGRESS, OperationState, State
from isvserver.marketplaces.broker.catalog import Plan
from isvserver.marketplaces.broker.config import NAME
from isvserver.marketplaces.broker.models import BrokerInstance
from isvserver.models import Instance, utcnow
from isvserver.runtime import Runtime
from isvserver.sealing import seal, unseal

MASK = "******"


def error(status: int, name: str | None, description: str) -> Answer:
    """An OSB error answer: `{"error": name, "description": …}` (no `error` when OSB names none)."""
    body: dict[str, Any] = {"description": description[:255]}
    if name:
        body = {"error": name, **body}
    return Answer(status, body)


def split(parameters: dict[str, Any], secrets: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters with each secret as MASK, and the secrets alone."""
    masked = {name: MASK if name in secrets else value for name, value in parameters.items()}
    return masked, {name: value for name, value in parameters.items() if name in secrets}


def _canonical(*parts: Any) -> bytes:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def canonical_digest(key: bytes, *parts: Any) -> str:
    """A keyed digest of `parts` (secrets included, so a plain hash would let them be guessed)."""
    return hmac.new(key, _canonical(*parts), hashlib.sha256).hexdigest()


def _same_secrets(rt: Runtime, instance: Instance, secrets: dict[str, Any]) -> bool:
    """Whether the existing instance was created with these secret parameters (compared unsealed, in
    constant time, so a data-key rotation changes nothing)."""
    row = (
        BrokerInstance.select(BrokerInstance.secrets_sealed)
        .where(BrokerInstance.instance == instance)
        .first()
    )
    stored = (
        json.loads(unseal(rt.settings.data_keys, row.secrets_sealed)) if row and row.secrets_sealed else {}
    )
    return hmac.compare_digest(_canonical(stored), _canonical(secrets))


def broker_instance(instance_id: str) -> tuple[Instance, BrokerInstance] | None:
    """The broker's instance with this id (never another marketplace's), with its broker row."""
    row = (
        BrokerInstance.select(BrokerInstance, Instance)
        .join(Instance)
        .where((Instance.instance_id == instance_id) & (Instance.marketplace == NAME))
        .first()
    )
    return (row.instance, row) if row is not None else None


def _display(instance: Instance) -> list[dict[str, str]]:
    """What the buyer should see of the tenant (never a password)."""
    shown = []
    for description, value in (
        ("login URL", instance.front_end_url),
        ("administration URL", instance.admin_url),
        ("administrator", instance.user_name),
    ):
        if value:
            shown.append({"description": description, "type": "string", "value": value})
    return shown


def _provisioned(instance: Instance, masked: dict[str, Any], status: int) -> Answer:
    body: dict[str, Any] = {"metadata": {"display": _display(instance)}, "parameters": masked}
    if instance.front_end_url:
        body["dashboard_url"] = instance.front_end_url
    return Answer(status, body)


def catalog(rt: Runtime, data: dict[str, Any]) -> Answer:
    """The catalog, serialised once at start-up."""
    return Answer(200, rt.settings.of(NAME).catalog.body)


def provision(rt: Runtime, data: dict[str, Any]) -> Answer:
    """Create the instance under the platform's id (once per id, service, plan and parameters)."""
    plan: Plan = data["plan"]
    instance_id, parameters = data["instance_id"], data["parameters"]
    masked, secrets = split(parameters, plan.secrets)
    # The creation key holds no secret (not even a hash of one: a password could be guessed from it);
    # an identical creation is then told from a conflicting one by its sealed secrets, below.
    key = hashlib.sha256(_canonical(plan.service_id, plan.id, masked)).hexdigest()
    detail = {"service_id": plan.service_id, "plan_id": plan.id, "parameters": masked}
    operation = rt.lifecycle.create(NAME, f"{instance_id}:{key}", instance_id, exact=True, detail=detail)
    instance = operation.instance
    assert instance is not None  # a creation always has its instance
    if not operation.changed and not _same_secrets(rt, instance, secrets):
        return error(409, None, "an instance with this id exists with other attributes")
    if operation.changed:
        BrokerInstance.create(
            instance=instance,
            service_id=plan.service_id,
            plan_id=plan.id,
            parameters=json.dumps(masked, ensure_ascii=False),
            secrets_sealed=seal(rt.settings.data_key, json.dumps(secrets)) if secrets else None,
            context=json.dumps(data.get("context")) if data.get("context") is not None else None,
            maintenance_version=plan.maintenance_version,
        )
    if instance.state == State.RELEASED:
        return error(409, None, "an instance with this id was deprovisioned; use a new instance id")
    done = 201 if operation.changed else 200
    if instance.state not in lifecycle.NOT_PROVISIONED:
        return _provisioned(instance, masked, done)
    accepted = Answer(202, {"operation": operation.id})
    if data["accepts_incomplete"]:
        return accepted

    def within_budget(until: float) -> Answer:
        """AppCube sends no accepts_incomplete: wait for the product within the budget (and the call's
        answer deadline, when a waiting slot is free), else the operation to poll."""
        state = lifecycle.await_provisioning(instance_id, until)
        if state in (State.ACTIVE, State.FROZEN):
            fresh = Instance.get(Instance.instance_id == instance_id)
            return _provisioned(fresh, masked, done)
        if state == State.FAILED:
            return error(500, None, "provisioning failed; the same request starts it again")
        return accepted

    wait_after_commit(rt.settings.provision_budget_ms, within_budget)
    return accepted


def _operation_answer(rt: Runtime, state: OperationState, instance: Instance) -> Answer:
    headers: tuple[tuple[str, str], ...] = ()
    if state.state == IN_PROGRESS:
        headers = (("Retry-After", str(rt.settings.of(NAME).retry_after_s)),)
    body = {
        "state": state.state,
        "description": state.description,
        "instance_usable": instance.state == State.ACTIVE,
        "update_repeatable": True,
    }
    return Answer(200, body, headers)


def fetch(rt: Runtime, data: dict[str, Any]) -> Answer:
    """The instance: its plan, parameters (secrets masked), whether it is usable and its last operation."""
    found = broker_instance(data["instance_id"])
    if found is None or found[0].state == State.RELEASED:
        return error(404, None, "no such service instance")
    instance, row = found
    last = lifecycle.last_operation(instance.instance_id)
    body: dict[str, Any] = {
        "service_id": row.service_id,
        "plan_id": row.plan_id,
        "parameters": json.loads(row.parameters),
        "description": last.description if last else "",
        "instance_usable": instance.state == State.ACTIVE,
        "state": last.state if last else IN_PROGRESS,
        "update_repeatable": True,
    }
    if instance.front_end_url:
        body["dashboard_url"] = instance.front_end_url
    if row.maintenance_version:
        body["maintenance_info"] = {"version": row.maintenance_version}
    return Answer(200, body)


def last_operation(rt: Runtime, data: dict[str, Any]) -> Answer:
    """The state of the operation named (or of the instance's last one), with Retry-After while it runs."""
    instance = (
        Instance.select()
        .where((Instance.instance_id == data["instance_id"]) & (Instance.marketplace == NAME))
        .first()
    )
    if instance is None:
        return error(404, None, "no such service instance")
    wanted = data.get("operation")
    if wanted:
        state = rt.lifecycle.operation(wanted)
        if state is None or state.instance_id != instance.instance_id:
            return error(400, None, "no such operation for this service instance")
    else:
        state = rt.lifecycle.last_operation(instance.instance_id)
        if state is None:
            return error(404, None, "no operation for this service instance")
    if state.kind == lifecycle.Action.RELEASE.value and state.state == lifecycle.SUCCEEDED:
        return Answer(410, {"state": state.state, "description": "deprovisioned"})  # OSB: deleted
    return _operation_answer(rt, state, instance)


def update(rt: Runtime, data: dict[str, Any]) -> Answer:
    """A plan or parameter change: an upgrade of the instance (refused when the plan is not updateable)."""
    found = broker_instance(data["instance_id"])
    if found is None or found[0].state == State.RELEASED:
        return error(404, None, "no such service instance")
    instance, row = found
    if instance.state in lifecycle.NOT_PROVISIONED:
        return error(422, "ConcurrencyError", "the service instance is still being provisioned")
    catalog_ = rt.settings.of(NAME).catalog
    current = catalog_.plan(row.service_id, row.plan_id)
    target: Plan | None = data["plan"] or current
    if target is None or target.service_id != row.service_id:
        return error(400, None, "plan_id is not a plan of the instance's service")
    if target.id != row.plan_id and (current is None or not current.updateable):
        return error(400, "PlanChangeNotSupported", "the instance's plan cannot be changed")
    secrets = json.loads(unseal(rt.settings.data_keys, row.secrets_sealed)) if row.secrets_sealed else {}
    old = {**json.loads(row.parameters), **secrets}
    merged = {**old, **data["parameters"]}
    problems = target.validate(merged)
    if problems:
        return error(400, None, "invalid parameters: " + "; ".join(problems))
    if target.id == row.plan_id and merged == old:
        return _repeated_update(rt, instance, data)
    # A parameter once secret stays secret, whatever the new plan's schema says of it.
    secret_names = target.secrets | (current.secrets if current else frozenset()) | frozenset(secrets)
    masked, new_secrets = split(merged, secret_names)
    last = lifecycle.last_operation(instance.instance_id)
    key = canonical_digest(rt.settings.data_key, last.id if last else "", target.id, merged)
    detail = {
        "service_id": row.service_id,
        "plan_id": target.id,
        "previous_plan_id": row.plan_id,
        "parameters": masked,
    }
    operation = rt.lifecycle.upgrade(instance.instance_id, f"broker-update:{key}", detail=detail)
    BrokerInstance.update(
        plan_id=target.id,
        parameters=json.dumps(masked, ensure_ascii=False),
        secrets_sealed=seal(rt.settings.data_key, json.dumps(new_secrets)) if new_secrets else None,
        maintenance_version=target.maintenance_version,
        updated_at=utcnow(),
    ).where(BrokerInstance.id == row.id).execute()
    if data["accepts_incomplete"] and rt.lifecycle.outbox:
        return Answer(202, {"operation": operation.id})
    return Answer(200, {})


def _repeated_update(rt: Runtime, instance: Instance, data: dict[str, Any]) -> Answer:
    """An update that asks for what the instance already has: its running operation, or done."""
    last = rt.lifecycle.operations(instance.instance_id)
    running = [op for op in last if op.kind == lifecycle.Action.UPGRADE.value and op.state == IN_PROGRESS]
    if running and data["accepts_incomplete"]:
        return Answer(202, {"operation": running[-1].id})
    return Answer(200, {})


def deprovision(rt: Runtime, data: dict[str, Any]) -> Answer:
    """Release the instance (never deleted); 410 once it is gone; 422 while its creation runs."""
    instance = (
        Instance.select()
        .where((Instance.instance_id == data["instance_id"]) & (Instance.marketplace == NAME))
        .first()
    )
    if instance is None:
        return error(410, None, "no such service instance")
    if instance.state == State.PROVISIONING:
        return error(422, "ConcurrencyError", "the service instance is still being provisioned")
    if instance.state == State.RELEASED:
        releases = [
            op for op in rt.lifecycle.operations(instance.instance_id) if op.kind == lifecycle.Action.RELEASE
        ]
        if releases and releases[-1].state == IN_PROGRESS:
            return Answer(202, {"operation": releases[-1].id})
        return error(410, None, "the service instance is already deprovisioned")
    operation = rt.lifecycle.release(instance.instance_id)
    if data["accepts_incomplete"] and rt.lifecycle.outbox:
        return Answer(202, {"operation": operation.id})
    return Answer(200, {})
