"""Provisioner classes for the `python:package.module:Class` loader tests."""

from __future__ import annotations

from typing import Any

from isvserver.provisioning import AppInfo, InstanceView, LifecycleEvent


class SampleProvisioner:
    """A product that answers from memory; it declares no `inline`, so it runs in the job consumer."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """A tenant URL for the instance."""
        return AppInfo(
            front_end_url=f"https://sample.example/{event.instance.instance_id}", user_name="sample"
        )

    def apply(self, event: LifecycleEvent) -> None:
        """Remember the event type."""
        self.applied.append(event.type)

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """Only the `small` and `large` specs exist."""
        return None if product_info.get("spec") in ("small", "large") else "no such spec"


class InlineSample(SampleProvisioner):
    """The same, answering inside the marketplace's call."""

    inline = True


class SlottedSample:
    """A provisioner that takes no new attributes and declares no `inline`."""

    __slots__ = ()

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """A fixed tenant URL."""
        return AppInfo(front_end_url="https://slotted.example/")

    def apply(self, event: LifecycleEvent) -> None:
        """Nothing to do."""

    def check_change(self, instance: InstanceView, product_info: dict[str, Any]) -> str | None:
        """Nothing is ever acceptable."""
        return "never"


class MissingApply:
    """Not a provisioner: it cannot apply changes."""

    def provision(self, event: LifecycleEvent) -> AppInfo:
        """A fixed tenant URL."""
        return AppInfo(front_end_url="https://missing.example/")

    check_change = None


class NeedsArguments(SampleProvisioner):
    """A provisioner that cannot be created without arguments."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint


NOT_A_CLASS = SampleProvisioner()
