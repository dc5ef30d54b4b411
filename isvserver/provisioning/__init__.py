"""The provisioning boundary: how an instance reaches the seller's product."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

APP_INFO_LIMITS = {"front_end_url": 512, "admin_url": 512, "user_name": 128, "password": 128, "memo": 1024}


@dataclass(frozen=True)
class AppInfo:
    """What a buyer needs to use the tenant: where to log in and with which account."""

    front_end_url: str
    admin_url: str | None = None
    user_name: str | None = None
    password: str | None = field(default=None, repr=False)
    memo: str | None = None

    def check(self) -> None:
        """Raise ProvisioningError unless every field is within what marketplaces accept."""
        if not self.front_end_url:
            raise ProvisioningError("the product gave no frontEndUrl")
        for name, value in vars(self).items():
            if value is not None and len(value) > APP_INFO_LIMITS[name]:
                raise ProvisioningError(
                    f"the product's {name} is longer than {APP_INFO_LIMITS[name]} characters"
                )


@dataclass(frozen=True)
class InstanceView:
    """What a provisioner is told about an instance."""

    instance_id: str
    marketplace: str
    order_id: str | None  # the order line that created it; None for an instance created without one
    order_line_id: str | None
    product_id: str | None
    expire_at: datetime | None
    is_trial: bool
    state: str = "provisioning"


@dataclass(frozen=True)
class LifecycleEvent:
    """One accepted lifecycle change as a provisioner is told it; `id` is the same on every retry."""

    id: str
    type: str  # one of lifecycle.EVENT_TYPES' values: instance.created, instance.renewed…
    occurred_at: datetime
    instance: InstanceView
    change: dict[str, Any] = field(default_factory=dict)  # the change itself: kind, scene, expire_at…
    order: dict[str, Any] | None = None  # the change's order line from the order-query API, if fetched
    # What an adapter's enricher added, by name: each a key of the webhook's `data` (Kit: `sync`).
    extra: dict[str, Any] = field(default_factory=dict)


class ProvisioningError(Exception):
    """The product could not provision the instance; the message is safe to show the marketplace."""


class Provisioner(Protocol):
    """Creates tenants in the seller's product, applies their lifecycle changes, judges renewal changes.

    An `inline` provisioner answers at once without I/O and runs inside the marketplace's call; any
    other runs in the job consumer, where a raised exception is retried with backoff. One that also
    has a `sync(event)` method (BaseProvisioner has one) hears the adapters' own events too
    (tenant.synced, users.synced…); one without it is never handed them.
    """

    inline: bool

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """The new tenant's AppInfo (`event.type` is instance.created); raise to have it retried."""
        ...

    def apply(self, event: LifecycleEvent) -> None:
        """Carry out a renewal, freeze, unfreeze, upgrade or release; raise to have it retried."""
        ...

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """None when the product can take the renewal change to `product_info`, else the reason."""
        ...


class BaseProvisioner:
    """A provisioner to subclass: override `provision`; every other event is accepted unless overridden.

    Its `sync` opts in to the adapters' own events (`event.type` says which: tenant.synced,
    application.synced, users.synced, orgs.synced…; `event.extra` holds what the adapter added).
    """

    inline = False

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """The new tenant's AppInfo; a subclass must say how it is made."""
        raise ProvisioningError(f"{type(self).__name__} does not provision tenants")

    def apply(self, event: LifecycleEvent) -> None:
        """Accept a renewal, freeze, unfreeze, upgrade or release (override to carry it out)."""

    def sync(self, event: LifecycleEvent) -> None:
        """Accept an adapter's own event (override to carry it out); raise to have it retried."""

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """Accept every renewal change (override to refuse one with its reason)."""
        return None
