"""Registration from a service template (spec §2): look each part up by name, create what is missing,
report what differs, never duplicate. Nothing is updated: the platform documents no update call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from isvserver.marketplaces.vcloud.client import PlatformClient
from isvserver.marketplaces.vcloud.config import VCloudSettings
from isvserver.marketplaces.vcloud.template import Template, TemplateError

CREATE, SAME, DIFFERS = "create", "same", "differs"


class RegistrationError(Exception):
    """The platform did not list what it was just asked to create."""


@dataclass(frozen=True)
class Step:
    """What registration does (or would do) with one part of the template."""

    kind: str  # provider, category, service
    name: str
    action: str  # create, same, differs
    differences: tuple[str, ...] = ()
    within: str = ""  # the category of a service

    def line(self, dry_run: bool) -> str:
        """How `isvserver vcloud register` reports it."""
        what = f"{self.kind} {self.name!r}" + (f" in {self.within!r}" if self.within else "")
        if self.action == CREATE:
            return f"{what}: {'would create' if dry_run else 'created'}"
        if self.action == SAME:
            return f"{what}: registered, as the template says"
        return (
            f"{what}: registered, but differs in {', '.join(self.differences)} "
            "(the platform keeps its values: change them there)"
        )


def _normal(value: Any) -> Any:
    """A value as compared: numbers as floats, mapping keys as text, nothing else changed."""
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _differences(wanted: dict[str, Any], found: dict[str, Any]) -> tuple[str, ...]:
    """The fields of `wanted` whose value the platform's `found` does not hold."""
    return tuple(name for name, value in wanted.items() if _normal(value) != _normal(found.get(name)))


def _named(items: Iterable[dict[str, Any]], name: str, **fields: str) -> dict[str, Any] | None:
    """The item named exactly `name` (and matching `fields`): the platform's filter may be loose."""
    for item in items:
        if item.get("name") == name and all(item.get(k) == v for k, v in fields.items()):
            return item
    return None


def _optional(source: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: source[name] for name in names if name in source}


def service_body(service: dict[str, Any], provider: str, category: str, category_id: str) -> dict[str, Any]:
    """The platform's body for a service of the template."""
    prices = [
        {
            "price": price["price"],
            "chargingOptions": price.get("chargingOptions", {}),
            "duration": {str(hours): factor for hours, factor in price.get("duration", {}).items()},
        }
        for price in service["durationToPrice"]
    ]
    return {
        "name": service["name"],
        "durationToPrice": prices,
        "provider": provider,
        "refundable": service["refundable"],
        "categoryID": category_id,
        "category": category,
        **_optional(service, "serviceOptions", "serviceAPI", "description", "apiHost"),
    }


class Registration:
    """One run of the template against the platform (`dry_run`: look only)."""

    def __init__(
        self,
        client: PlatformClient,
        settings: VCloudSettings,
        dry_run: bool = False,
        report: Callable[[Step], None] = lambda step: None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.dry_run = dry_run
        self.report = report
        self.steps: list[Step] = []

    def _step(self, step: Step) -> None:
        self.steps.append(step)
        self.report(step)

    def run(self, template: Template) -> list[Step]:
        """Register the template's provider, categories and services; the steps, in order."""
        provider = template.provider
        name = provider["name"]
        wallet = provider.get("walletAddress") or self.settings.wallet
        api_host = provider.get("apiHost") or self.settings.api_host
        if not wallet:
            raise TemplateError(
                "no wallet: set ISV_VCLOUD_WALLET (or provider.walletAddress in the template)"
            )
        if not api_host:
            raise TemplateError(
                "no apiHost: set ISV_VCLOUD_API_HOST (or provider.apiHost in the template), the URL where "
                "buyers reach this server"
            )
        body = {"name": name, "id": name, "walletAddress": wallet, "apiHost": api_host}
        found = _named(self.client.providers(name=name), name)
        if found is None:
            self._step(Step("provider", name, CREATE))
            if not self.dry_run:
                self.client.create_provider(body)
                if _named(self.client.providers(name=name), name) is None:
                    raise RegistrationError(f"the platform does not list provider {name!r} after creating it")
        else:
            differences = _differences({"walletAddress": wallet, "apiHost": api_host}, found)
            self._step(Step("provider", name, DIFFERS if differences else SAME, differences))
        for category in template.categories:
            self._category(name, category, exists=found is not None or not self.dry_run)
        return self.steps

    def _find_category(self, provider: str, name: str) -> dict[str, Any] | None:
        return _named(self.client.categories(provider=provider, name=name), name, provider=provider)

    def _category(self, provider: str, category: dict[str, Any], exists: bool) -> None:
        name = category["name"]
        wanted = _optional(category, "serviceOptions", "description", "apiHost")
        found = self._find_category(provider, name) if exists else None
        if found is None:
            self._step(Step("category", name, CREATE))
            if not self.dry_run:
                self.client.create_category({"provider": provider, "name": name, **wanted})
                found = self._find_category(provider, name)
                if found is None or not found.get("categoryID"):
                    raise RegistrationError(f"the platform does not list category {name!r} after creating it")
        else:
            differences = _differences(wanted, found)
            self._step(Step("category", name, DIFFERS if differences else SAME, differences))
        category_id = str(found["categoryID"]) if found is not None else ""
        for service in category["services"]:
            self._service(provider, name, category_id, service)

    def _find_service(
        self, provider: str, category: str, category_id: str, name: str
    ) -> dict[str, Any] | None:
        listed = self.client.services(provider=provider, category=category, name=name)
        return _named(listed, name, categoryID=category_id)

    def _service(self, provider: str, category: str, category_id: str, service: dict[str, Any]) -> None:
        name = service["name"]
        body = service_body(service, provider, category, category_id)
        found = self._find_service(provider, category, category_id, name) if category_id else None
        if found is None:
            self._step(Step("service", name, CREATE, within=category))
            if not self.dry_run:
                self.client.create_service(body)
                if self._find_service(provider, category, category_id, name) is None:
                    raise RegistrationError(f"the platform does not list service {name!r} after creating it")
            return
        compared = {k: v for k, v in body.items() if k not in ("name", "provider", "categoryID", "category")}
        listed = dict(found)
        if isinstance(compared.get("serviceAPI"), dict) and isinstance(found.get("serviceAPI"), dict):
            # the platform lists every part of serviceAPI: compare those the template gives
            listed["serviceAPI"] = {k: found["serviceAPI"].get(k) for k in compared["serviceAPI"]}
        differences = _differences(compared, listed)
        self._step(Step("service", name, DIFFERS if differences else SAME, differences, category))
