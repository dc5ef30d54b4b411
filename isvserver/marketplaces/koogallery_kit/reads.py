"""The read side of Kit sync data: listings for the CLI (PII masked) and what the product receives."""

from __future__ import annotations

from typing import Any

from peewee import fn

from isvserver.marketplaces.koogallery_kit.models import KitApplication, KitOrg, KitTenant, KitUser
from isvserver.marketplaces.koogallery_kit.pii import shown, unseal_optional
from isvserver.sealing import DataKeys

EVENT_KINDS = ("tenant", "application", "users", "org", "orgs")


def _live_counts(model: type[KitApplication | KitUser | KitOrg], instance_ids: list[str]) -> dict[str, int]:
    query = (
        model.select(model.instance_id, fn.COUNT(model.id))
        .where(model.instance_id.in_(instance_ids), model.deleted_at.is_null())
        .group_by(model.instance_id)
    )
    return dict(query.tuples())


def tenants(limit: int = 100) -> list[dict[str, Any]]:
    """The most recently changed tenants (no PII), with their live application, user and org counts."""
    rows = list(KitTenant.select().order_by(KitTenant.updated_at.desc(), KitTenant.id.desc()).limit(limit))
    ids = [row.instance_id for row in rows]
    apps, users, orgs = (_live_counts(model, ids) for model in (KitApplication, KitUser, KitOrg))
    return [
        {
            "instance_id": row.instance_id,
            "tenant_id": row.tenant_id,
            "tenant_code": row.tenant_code,
            "domain_name": row.domain_name,
            "updated_at": row.updated_at,
            "deleted_at": row.deleted_at,
            "applications": apps.get(row.instance_id, 0),
            "users": users.get(row.instance_id, 0),
            "orgs": orgs.get(row.instance_id, 0),
        }
        for row in rows
    ]


def org_tree(orgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Orgs nested under their parents (`children`); an unknown parent, or a cycle, makes a root."""
    nodes = {org["org_code"]: {**org, "children": []} for org in orgs}

    def attached(code: str) -> bool:
        """Whether `code`'s parent exists and its chain of parents does not lead back to `code`."""
        seen, parent = set(), nodes[code].get("parent_code")
        while parent in nodes and parent != code and parent not in seen:
            seen.add(parent)
            parent = nodes[parent].get("parent_code")
        return parent != code and nodes[code].get("parent_code") in nodes

    roots = []
    for code, node in nodes.items():
        if attached(code):
            nodes[node["parent_code"]]["children"].append(node)
        else:
            roots.append(node)
    return roots


def _org_row(row: KitOrg) -> dict[str, Any]:
    return {"org_code": row.org_code, "org_name": row.org_name, "parent_code": row.parent_code}


def tenant_detail(instance_id: str, data_keys: DataKeys, show_pii: bool = False) -> dict[str, Any] | None:
    """One tenant with its applications (client ids, never secrets), users and org tree; PII masked."""
    tenant = KitTenant.get_or_none(KitTenant.instance_id == instance_id)
    apps = (
        KitApplication.select().where(KitApplication.instance_id == instance_id).order_by(KitApplication.id)
    )
    users = (
        KitUser.select().where(KitUser.instance_id == instance_id).order_by(KitUser.app_id, KitUser.user_name)
    )
    orgs = list(KitOrg.select().where(KitOrg.instance_id == instance_id).order_by(KitOrg.org_code))
    if tenant is None and not apps.exists() and not users.exists() and not orgs:
        return None
    header = {"instance_id": instance_id}
    if tenant is not None:
        header.update(
            tenant_id=tenant.tenant_id,
            order_id=tenant.order_id,
            tenant_code=tenant.tenant_code,
            name=shown(data_keys, tenant.name_sealed, show_pii),
            domain_name=tenant.domain_name,
            created_at=tenant.created_at,
            updated_at=tenant.updated_at,
            deleted_at=tenant.deleted_at,
        )
    return {
        **header,
        "applications": [
            {
                "app_id": a.app_id,
                "client_id": a.client_id,
                "updated_at": a.updated_at,
                "deleted_at": a.deleted_at,
            }
            for a in apps
        ],
        "users": [
            {
                "app_id": u.app_id,
                "user_name": u.user_name,
                "name": shown(data_keys, u.name_sealed, show_pii),
                "org_code": u.org_code,
                "position": shown(data_keys, u.position_sealed, show_pii),
                "employee_code": shown(data_keys, u.employee_code_sealed, show_pii),
                "employee_type": u.employee_type,
                "role": u.role,
                "enabled": u.enabled,
                "mobile": shown(data_keys, u.mobile_sealed, show_pii),
                "email": shown(data_keys, u.email_sealed, show_pii),
                "work_place": shown(data_keys, u.work_place_sealed, show_pii),
                "revoked_at": u.revoked_at,
                "deleted_at": u.deleted_at,
            }
            for u in users
        ],
        "orgs": org_tree([_org_row(o) for o in orgs if o.deleted_at is None]),
        "deleted_orgs": [
            {**_org_row(o), "deleted_at": o.deleted_at} for o in orgs if o.deleted_at is not None
        ],
    }


def _user_event(row: KitUser, data_keys: DataKeys) -> dict[str, Any]:
    return {
        "userName": row.user_name,
        "name": unseal_optional(data_keys, row.name_sealed),
        "orgCode": row.org_code,
        "position": unseal_optional(data_keys, row.position_sealed),
        "employeeCode": unseal_optional(data_keys, row.employee_code_sealed),
        "employeeType": row.employee_type,
        "role": row.role,
        "enabled": row.enabled,
        "mobile": unseal_optional(data_keys, row.mobile_sealed),
        "email": unseal_optional(data_keys, row.email_sealed),
        "workPlace": unseal_optional(data_keys, row.work_place_sealed),
        "revoked": row.revoked_at is not None,
        "deleted": row.deleted_at is not None,
    }


def _org_event(row: KitOrg) -> dict[str, Any]:
    return {
        "orgCode": row.org_code,
        "orgName": row.org_name,
        "parentCode": row.parent_code,
        "deleted": row.deleted_at is not None,
    }


def event_detail(
    kind: str,
    instance_id: str,
    data_keys: DataKeys,
    *,
    app_id: str | None = None,
    user_names: list[str] | None = None,
    org_codes: list[str] | None = None,
    include_secret: bool = False,
) -> dict[str, Any]:
    """What the seller's product receives for a change (over its signed webhook only: PII in clear).

    `kind` is one of EVENT_KINDS; `application` and `users` need `app_id`; `users` and `org` may be narrowed
    to `user_names` / `org_codes`; the client secret is included only with `include_secret`. LookupError
    when the record does not exist.
    """
    event: dict[str, Any] = {"kind": kind, "instanceId": instance_id}
    if kind == "tenant":
        tenant = KitTenant.get_or_none(KitTenant.instance_id == instance_id)
        if tenant is None:
            raise LookupError("no Kit tenant for this instance")
        return {
            **event,
            "tenantId": tenant.tenant_id,
            "orderId": tenant.order_id,
            "tenantCode": tenant.tenant_code,
            "name": unseal_optional(data_keys, tenant.name_sealed),
            "domainName": tenant.domain_name,
            "deleted": tenant.deleted_at is not None,
        }
    if kind == "application":
        app = KitApplication.get_or_none(
            KitApplication.instance_id == instance_id, KitApplication.app_id == app_id
        )
        if app is None:
            raise LookupError("no Kit application with this appId for this instance")
        event.update(tenantId=app.tenant_id, appId=app.app_id, clientId=app.client_id)
        if include_secret:
            event["clientSecret"] = unseal_optional(data_keys, app.client_secret_sealed)
        return {**event, "deleted": app.deleted_at is not None}
    if kind == "users":
        query = KitUser.select().where(KitUser.instance_id == instance_id, KitUser.app_id == app_id)
        if user_names is not None:
            query = query.where(KitUser.user_name.in_(user_names))
        rows = list(query.order_by(KitUser.user_name))
        if not rows:
            raise LookupError("no Kit users for this application")
        users = [_user_event(row, data_keys) for row in rows]
        return {**event, "tenantId": rows[0].tenant_id, "appId": app_id, "users": users}
    if kind in ("org", "orgs"):
        query = KitOrg.select().where(KitOrg.instance_id == instance_id)
        if kind == "org" and org_codes is not None:
            query = query.where(KitOrg.org_code.in_(org_codes))
        rows = list(query.order_by(KitOrg.org_code))
        if not rows:
            raise LookupError("no Kit orgs for this instance")
        return {**event, "tenantId": rows[0].tenant_id, "orgs": [_org_event(row) for row in rows]}
    raise ValueError(f"unknown Kit event kind; expected one of {', '.join(EVENT_KINDS)}")
