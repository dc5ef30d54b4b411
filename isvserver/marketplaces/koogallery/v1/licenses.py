"""License products (getLicense, refreshLicense, expireLicense, releaseLicense; GET + authToken).

A license belongs to an instance created through the one lifecycle (once per order). Its string comes
from the provisioner when it has the optional `issue_license(instance, grant) -> str` capability, else
from the built-in issuer: an Ed25519-signed token (isvserver.licenses, ISV_LICENSE_SIGNING_KEY).
Renewal reissues it with the new expiry; expiry and release mark its state; each change reaches the
product as any lifecycle change does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from isvserver import licenses, lifecycle
from isvserver.calls import counted
from isvserver.db import database
from isvserver.lifecycle import Action
from isvserver.marketplaces.koogallery.results import SUCCESS
from isvserver.marketplaces.koogallery.v1.handlers import (
    MARKETPLACE,
    Handler,
    Reply,
    order_change_key,
    purchase,
    reply,
    test_instance_id,
    test_success,
)
from isvserver.marketplaces.koogallery.v1.models import License
from isvserver.models import Instance, utcnow
from isvserver.provisioning import ProvisioningError
from isvserver.runtime import Runtime
from isvserver.sealing import seal, unseal

ACTIVE, EXPIRED, RELEASED = "active", "expired", "released"


def _issuer(rt: Runtime) -> Any:
    """The provisioner's `issue_license`, else the built-in Ed25519 issuer; ProvisioningError if neither."""
    own = getattr(rt.provisioner, "issue_license", None)
    if callable(own):
        return own
    seed = rt.settings.of(MARKETPLACE).license_signing_key
    if seed is None:
        raise ProvisioningError(
            "no license issuer: set ISV_LICENSE_SIGNING_KEY (isvserver license keygen) or give the "
            "provisioner an issue_license method"
        )
    return lambda instance, grant: licenses.issue(seed, grant)


def _issued(rt: Runtime, instance: Instance, grant: licenses.Grant) -> str:
    token = _issuer(rt)(lifecycle.view(instance), grant)
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise ProvisioningError("the license issuer gave no license string (1 to 4096 characters)")
    return token


def _grant(row: License, instance_id: str, expire_at: datetime | None, version: int) -> licenses.Grant:
    return licenses.Grant(
        license_id=row.license_id,
        instance_id=instance_id,
        sku_code=row.sku_code,
        expire_at=expire_at,
        version=version,
        marketplace=MARKETPLACE,
        issued_at=utcnow(),
    )


def get_license(rt: Runtime, data: dict[str, Any]) -> Reply:
    """The order's instance (created once) and its license (issued once; a resend gets the current one)."""
    _issuer(rt)  # no issuer: refused before anything is created
    instance, _ = purchase(rt, data, "license")
    row = License.get_or_none(License.instance_id == instance.instance_id)
    if row is None:
        row = License(
            instance_id=instance.instance_id,
            license_id=str(uuid.uuid4()),
            sku_code=data["skuCode"],
            state=ACTIVE,
            expire_at=instance.expire_at,
            version=1,
        )
        row.license_sealed = seal(
            rt.settings.data_key, _issued(rt, instance, _grant(row, instance.instance_id, row.expire_at, 1))
        )
        row.save(force_insert=True)
    token = unseal(rt.settings.data_keys, row.license_sealed)
    return reply(SUCCESS, "success", instanceId=instance.instance_id, license=token)


def _license_of(instance_id: str) -> License:
    query = License.select().where(License.instance_id == instance_id)
    row = (query.for_update() if database.for_update else query).first()
    if row is None:
        raise lifecycle.InstanceNotFound(instance_id)
    return row


def refresh_license(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Renewal: the new expiry on the instance, the license reissued with it (once per order)."""
    instance_id = data["instanceId"]
    row = _license_of(instance_id)
    changed = rt.lifecycle.change_expiry(
        instance_id,
        Action.RENEW,
        order_change_key(data["orderId"]),
        data["expireTime"],
        reference=(data["orderId"], None),
    ).changed
    if counted(changed):
        rt.lifecycle.set_frozen(instance_id, False)
        instance = Instance.get(Instance.instance_id == instance_id)
        version = row.version + 1
        token = _issued(rt, instance, _grant(row, instance_id, data["expireTime"], version))
        License.update(
            state=ACTIVE,
            expire_at=data["expireTime"],
            version=version,
            license_sealed=seal(rt.settings.data_key, token),
            updated_at=utcnow(),
        ).where(License.id == row.id).execute()
    return reply(SUCCESS, "success")


def expire_license(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Expiry: the instance frozen, the license marked expired; repeating it succeeds."""
    row = _license_of(data["instanceId"])
    counted(rt.lifecycle.set_frozen(data["instanceId"], True).changed)
    if row.state == ACTIVE:
        License.update(state=EXPIRED, updated_at=utcnow()).where(License.id == row.id).execute()
    return reply(SUCCESS, "success")


def release_license(rt: Runtime, data: dict[str, Any]) -> Reply:
    """Release: the instance released, the license marked released (never deleted); repeating succeeds."""
    row = _license_of(data["instanceId"])
    counted(rt.lifecycle.release(data["instanceId"], (data["orderId"], None)).changed)
    if row.state != RELEASED:
        License.update(state=RELEASED, updated_at=utcnow()).where(License.id == row.id).execute()
    return reply(SUCCESS, "success")


def test_get_license(rt: Runtime, data: dict[str, Any]) -> Reply:
    """A deterministic id and a license string marked as a debug one, nothing created."""
    instance_id = test_instance_id(data["orderId"])
    return reply(
        SUCCESS, "success (debug request)", instanceId=instance_id, license=f"TEST-LICENSE-{instance_id}"
    )


HANDLERS: dict[str, Handler] = {
    "getLicense": get_license,
    "refreshLicense": refresh_license,
    "expireLicense": expire_license,
    "releaseLicense": release_license,
}
READ_ONLY_ACTIVITIES: frozenset[str] = frozenset()
TEST_HANDLERS: dict[str, Handler] = {**dict.fromkeys(HANDLERS, test_success), "getLicense": test_get_license}
