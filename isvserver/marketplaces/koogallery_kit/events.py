"""Kit sync changes as events for the seller's product: their kinds, what is stored, what is sent.

An accepted change is recorded through the core lifecycle (`Lifecycle.record`) with only ids, flags and
counts; what the product hears (names, mobiles, the client secret when ISV_WEBHOOK_SEND_SECRETS=1) is
read from the Kit tables when the event is delivered, by the enricher `init_jobs` registers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from isvserver.jobs import Jobs
from isvserver.marketplaces.koogallery_kit import sso_state
from isvserver.marketplaces.koogallery_kit.reads import event_detail
from isvserver.provisioning import LifecycleEvent

TENANT, APPLICATION, USERS, ORGS = "kit_tenant", "kit_application", "kit_users", "kit_orgs"
EVENT_TYPES = {
    TENANT: "tenant.synced",
    APPLICATION: "application.synced",
    USERS: "users.synced",
    ORGS: "orgs.synced",
}
KINDS = {  # activity → instance_event kind
    "tenantSync": TENANT,
    "applicationSync": APPLICATION,
    "authSync": USERS,
    "singleOrgSync": ORGS,
    "allOrgSync": ORGS,
}


def change(activity: str, data: dict[str, Any]) -> dict[str, Any]:
    """What is stored of an accepted sync (its instance_event detail): ids, flag, counts, never PII."""
    detail: dict[str, Any] = {"activity": activity, "tenant_id": data["tenant_id"]}
    if "flag" in data:
        detail["flag"] = data["flag"]
    if "app_id" in data:
        detail["app_id"] = data["app_id"]
    if activity == "authSync":
        names = sorted({user["user_name"] for user in data["user_list"]})
        detail.update(user_names=names, count=len(names))
    elif activity == "singleOrgSync":
        detail.update(org_codes=[data["org_code"]], count=1)
    elif activity == "allOrgSync":
        detail["count"] = len({org["org_code"] for org in data["org_info_list"]})
    return detail


def _read_kind(event: LifecycleEvent) -> tuple[str, dict[str, Any]]:
    """The reads.event_detail kind and arguments of a recorded change."""
    change_ = event.change
    kind = change_["kind"]
    if kind == TENANT:
        return "tenant", {}
    if kind == APPLICATION:
        return "application", {"app_id": change_.get("app_id")}
    if kind == USERS:
        return "users", {"app_id": change_.get("app_id"), "user_names": change_.get("user_names")}
    if change_.get("activity") == "singleOrgSync":
        return "org", {"org_codes": change_.get("org_codes")}
    return "orgs", {}


class Enricher:
    """Adds `sync` (reads.event_detail, read now) to the Kit events of the app's job queue."""

    def __init__(self, jobs: Jobs) -> None:
        self.settings = jobs.settings

    def __call__(self, event: LifecycleEvent) -> LifecycleEvent:
        """The event with `extra["sync"]`: the record as stored now, or None when it is gone."""
        kind, arguments = _read_kind(event)
        include_secret = kind == "application" and self.settings.of("koogallery_kit").send_secrets
        try:
            sync = event_detail(
                kind,
                event.instance.instance_id,
                self.settings.data_keys,
                include_secret=include_secret,
                **arguments,
            )
        except LookupError:
            sync = None
        return replace(event, extra={**event.extra, "sync": sync})


PRUNE_EVERY_S = 3600


def init_jobs(jobs: Jobs) -> None:
    """Register the enricher of the Kit's event types (on instances of any marketplace), and the hourly
    prune of expired single sign-on logins."""
    jobs.add_enricher(Enricher(jobs), event_types=EVENT_TYPES.values())
    jobs.every("kit.prune_sso_states", PRUNE_EVERY_S, lambda runtime: sso_state.prune())
