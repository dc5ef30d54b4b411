"""Idempotent application of validated Kit syncs, inside the caller's transaction; True when anything changed.

Every write is a repeat-safe upsert: INSERT … ON CONFLICT DO NOTHING, then the row re-selected by its
business key and brought up to date (never an IntegrityError, so the caller's PostgreSQL transaction
survives a concurrent identical call). A delete or revoke only marks the row, and a mark of a row already
marked, or never seen, changes nothing. The read side for the CLI and events lives in `reads`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peewee import ModelSelect

from isvserver.db import database, is_postgres
from isvserver.marketplaces.koogallery_kit.models import KitApplication, KitOrg, KitTenant, KitUser
from isvserver.marketplaces.koogallery_kit.pii import same_as_stored, seal_optional
from isvserver.marketplaces.koogallery_kit.reads import event_detail, tenant_detail, tenants
from isvserver.models import BaseModel, utcnow
from isvserver.sealing import DataKeys

__all__ = [
    "event_detail",
    "sync_all_orgs",
    "sync_application",
    "sync_org",
    "sync_tenant",
    "sync_users",
    "tenant_detail",
    "tenants",
]

DELETE, ADD, MODIFY, REVOKE = 0, 1, 2, 3
CHUNK = 500  # ids per IN (…) list


def _locked(query: ModelSelect) -> ModelSelect:
    """`query` taking row locks on PostgreSQL (SQLite's BEGIN IMMEDIATE already serialises writers)."""
    return query.for_update() if is_postgres() else query


def _select(model: type[BaseModel], key: dict[str, Any]) -> Any:
    conditions = [getattr(model, name) == value for name, value in key.items()]
    return _locked(model.select().where(*conditions)).first()


def _inserted(query: Any, model: type[BaseModel]) -> bool:
    """Run an INSERT … ON CONFLICT DO NOTHING; True only when this row went in (a concurrent identical
    call's row, committed while this one waited on PostgreSQL, leaves this one out: not a change)."""
    if database.returning_clause:
        return database.execute(query.returning(model.id)).fetchone() is not None
    return database.execute(query).rowcount == 1


def _upsert(
    model: type[BaseModel],
    key: dict[str, Any],
    plain: dict[str, Any],
    sealed: dict[str, str | None],
    data_keys: DataKeys | None,
    clear: Iterable[str] = ("deleted_at",),
    row: Any = None,
) -> bool:
    """Make the row of `key` hold these values (restoring it when marked); True when anything changed."""
    changed = False
    if row is None:
        row = _select(model, key)
    if row is None:
        now = utcnow()
        values = {**key, **plain, **{c: seal_optional(data_keys, v) for c, v in sealed.items()}}
        changed = _inserted(
            model.insert(**values, created_at=now, updated_at=now).on_conflict_ignore(), model
        )
        row = _select(model, key)  # ours, or a concurrent identical call's: made equal below either way
    updates: dict[str, Any] = {name: value for name, value in plain.items() if getattr(row, name) != value}
    for column, value in sealed.items():
        if not same_as_stored(data_keys, getattr(row, column), value):
            updates[column] = seal_optional(data_keys, value)
    updates.update({column: None for column in clear if getattr(row, column) is not None})
    if updates:
        model.update(**updates, updated_at=utcnow()).where(model.id == row.id).execute()
        changed = True
    return changed


def _mark(model: type[BaseModel], column: str, conditions: list[Any]) -> bool:
    """Set `column` to now on the live rows matching `conditions` that lack it; True when any did."""
    now = utcnow()
    field = getattr(model, column)
    live = [field.is_null(), model.deleted_at.is_null()]
    return model.update({field: now, model.updated_at: now}).where(*conditions, *live).execute() > 0


def sync_tenant(data: dict[str, Any], data_keys: DataKeys) -> bool:
    """Apply a loaded tenantSync (flag 0 delete, 1 add, 2 modify): one tenant per instance."""
    key = {"instance_id": data["instance_id"]}
    if data["flag"] == DELETE:
        return _mark(KitTenant, "deleted_at", [KitTenant.instance_id == key["instance_id"]])
    plain = {
        "tenant_id": data["tenant_id"],
        "order_id": data["order_id"],
        "tenant_code": data["tenant_code"],
        "domain_name": data["domain_name"],
    }
    return _upsert(KitTenant, key, plain, {"name_sealed": data["name"]}, data_keys)


def sync_application(data: dict[str, Any], client_secret_plain: str | None, data_keys: DataKeys) -> bool:
    """Apply a loaded applicationSync with its decrypted clientSecret (flag 0 delete, 1 add, 2 modify)."""
    key = {"instance_id": data["instance_id"], "app_id": data["app_id"]}
    if data["flag"] == DELETE:
        conditions = [
            KitApplication.instance_id == key["instance_id"],
            KitApplication.app_id == key["app_id"],
        ]
        return _mark(KitApplication, "deleted_at", conditions)
    if client_secret_plain is None:
        raise ValueError("an added or modified application needs its decrypted clientSecret")
    plain = {"tenant_id": data["tenant_id"], "client_id": data["client_id"]}
    return _upsert(KitApplication, key, plain, {"client_secret_sealed": client_secret_plain}, data_keys)


def _user_values(data: dict[str, Any], user: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str | None]]:
    plain = {
        "tenant_id": data["tenant_id"],
        "org_code": user["org_code"],
        "employee_type": user.get("employee_type"),
        "role": user["role"],
        "enabled": user["enabled"],
    }
    sealed = {
        "name_sealed": user["name"],
        "position_sealed": user.get("position"),
        "employee_code_sealed": user.get("employee_code"),
        "mobile_sealed": user.get("mobile"),
        "email_sealed": user.get("email"),
        "work_place_sealed": user.get("work_place"),
    }
    return plain, sealed


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def sync_users(data: dict[str, Any], data_keys: DataKeys) -> bool:
    """Apply a loaded authSync (flag 0 delete, 1 add, 2 modify, 3 revoke) for up to 500 users at once."""
    instance_id, app_id = data["instance_id"], data["app_id"]
    users = {user["user_name"]: user for user in data["user_list"]}  # a name listed twice: the last wins
    names = list(users)
    scope = [KitUser.instance_id == instance_id, KitUser.app_id == app_id]
    if data["flag"] in (DELETE, REVOKE):
        column = "deleted_at" if data["flag"] == DELETE else "revoked_at"
        marked = [_mark(KitUser, column, [*scope, KitUser.user_name.in_(chunk)]) for chunk in _chunks(names)]
        return any(marked)
    existing = {}
    for chunk in _chunks(names):
        for row in _locked(KitUser.select().where(*scope, KitUser.user_name.in_(chunk))):
            existing[row.user_name] = row
    clear = ("deleted_at", "revoked_at") if data["flag"] == ADD else ("deleted_at",)
    changed = False
    for name, user in users.items():
        key = {"instance_id": instance_id, "app_id": app_id, "user_name": name}
        plain, sealed = _user_values(data, user)
        changed |= _upsert(KitUser, key, plain, sealed, data_keys, clear, existing.get(name))
    return changed


def _org_values(data: dict[str, Any], org: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant_id": data["tenant_id"],
        "org_name": org["org_name"],
        "parent_code": org.get("parent_code"),
    }


def sync_org(data: dict[str, Any]) -> bool:
    """Apply a loaded singleOrgSync (flag 0 delete, 1 add, 2 modify)."""
    key = {"instance_id": data["instance_id"], "org_code": data["org_code"]}
    if data["flag"] == DELETE:
        conditions = [KitOrg.instance_id == key["instance_id"], KitOrg.org_code == key["org_code"]]
        return _mark(KitOrg, "deleted_at", conditions)
    return _upsert(KitOrg, key, _org_values(data, data), {}, None)


def sync_all_orgs(data: dict[str, Any]) -> bool:
    """Apply a loaded allOrgSync, replacing the tree: absent orgs marked deleted, listed ones restored."""
    instance_id = data["instance_id"]
    orgs = {org["org_code"]: org for org in data["org_info_list"]}  # a code listed twice: the last wins
    existing = {
        row.org_code: row for row in _locked(KitOrg.select().where(KitOrg.instance_id == instance_id))
    }
    changed = False
    for code, org in orgs.items():
        key = {"instance_id": instance_id, "org_code": code}
        changed |= _upsert(KitOrg, key, _org_values(data, org), {}, None, row=existing.get(code))
    gone = [row.id for code, row in existing.items() if code not in orgs and row.deleted_at is None]
    for start in range(0, len(gone), CHUNK):
        changed |= _mark(KitOrg, "deleted_at", [KitOrg.id.in_(gone[start : start + CHUNK])])
    return changed
