"""The adapter protocol: what a marketplace interface declares to the core, and the registry that finds it.

An adapter is a package `isvserver.marketplaces.<name>` whose module-level `ADAPTER` is an `Adapter`.
The core never imports one by its name in code: `load` finds the names listed in ISV_MARKETPLACES.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click
    from flask import Blueprint, Response
    from peewee import Field, Model

    from isvserver.settings import Settings

PACKAGE = "isvserver.marketplaces"
DEFAULT_MARKETPLACES = "koogallery"  # ISV_MARKETPLACES when unset


class AdapterError(Exception):
    """An adapter named in ISV_MARKETPLACES cannot be loaded; the message says which and why."""


@dataclass(frozen=True)
class KeyInterface:
    """An interface type bound to its own access keys in the marketplace's console (spec §1)."""

    name: str  # stored in access_key.interface, at most 16 characters
    env_var: str  # the comma-separated keys, e.g. ISV_ACCESS_KEYS
    description: str
    required: bool = True  # production refuses to start without a key
    generated_in_development: bool = True


@dataclass(frozen=True)
class Section:
    """What an adapter shows of an instance in `isvserver instances show`: rows and how to print them."""

    name: str  # its key in --json
    title: str  # its heading in the text output
    rows: list[dict[str, Any]]
    render: Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class Simulation:
    """How `isvserver simulate` plays the marketplace toward one of an adapter's interfaces."""

    name: str  # `isvserver simulate NAME …` runs `command` with the arguments after NAME
    command: click.Command
    # Run by `isvserver simulate flow URL [--test]` after the basic flow, with URL and whether --test was
    # given; True when every answer was right (a flow that has no key configured says so and passes).
    flow: Callable[[str, bool], bool] | None = None


class ExpiryPolicy(StrEnum):
    """What reconcile does with an instance whose `expire_at` has passed, by its marketplace."""

    # The marketplace freezes (and releases) its instances itself: one it never froze is listed as
    # overdue, and frozen by reconcile only with ISV_AUTO_FREEZE (KooGallery).
    GUARD = "guard"
    # `expire_at` is the end of what the buyer paid and nobody else acts on it: reconcile freezes the
    # instance when it passes, whatever ISV_AUTO_FREEZE says (the V Cloud market's endAt).
    FREEZE = "freeze"
    # `expire_at` is only informative: reconcile never lists, counts or freezes these instances.
    IGNORE = "ignore"


@dataclass(frozen=True)
class Mount:
    """One blueprint at its prefix, and who answers errors on its paths."""

    blueprint: Blueprint
    prefix: Callable[[Settings], str]
    # Its answer to a 404, 405, 413 or 500 on its paths (an unhandled error is a 500): the mount decides
    # the status it sends; without one, the core's plain JSON error with that status.
    error_response: Callable[[int, str], Response] | None = None
    # Where mounts share paths, the methods this one owns (None: all).
    methods: frozenset[str] | None = None

    def owns(self, prefix: str, path: str, method: str | None) -> bool:
        """Whether a request for `method` (None: any) on `path` is this mount's, its prefix being `prefix`."""
        if prefix and path != prefix and not path.startswith(prefix + "/"):
            return False
        return method is None or self.methods is None or method in self.methods


@dataclass(frozen=True)
class Adapter:
    """One marketplace interface: its endpoints, settings, keys, commands, documents and stored data."""

    name: str
    # Its blueprints, each at its own prefix; none for an adapter that is never called
    # (it reads its marketplace from a job).
    mounts: tuple[Mount, ...] = ()
    # The adapter's own settings from the environment; raise SettingsError naming the variable.
    load_settings: Callable[[Mapping[str, str], bool], Any] | None = None
    key_interfaces: tuple[KeyInterface, ...] = ()
    cli_commands: tuple[click.Command, ...] = ()
    # OpenAPI paths and components of its endpoints: (paths, schemas) for the settings given.
    openapi: Callable[[Settings], tuple[dict[str, Any], dict[str, Any]]] | None = None
    # Columns sealed with ISV_DATA_KEY (re-sealed by `isvserver reseal`): (secret, the row's name).
    sealed_columns: tuple[tuple[Field, Field], ...] = ()
    models: tuple[type[Model], ...] = ()
    # Background work of its own on the app's job queue (isvserver.jobs.Jobs): its tasks, its sweeps,
    # and enrichers (Jobs.add_enricher) adding what it knows to events before the product hears them.
    init_jobs: Callable[[Any], None] | None = None
    # What it shows of one of its instances in `isvserver instances show`.
    instance_sections: Callable[[Any, Settings], tuple[Section, ...]] | None = None
    # Event types of its own: instance_event kind → the type the product hears.
    event_types: Mapping[str, str] = field(default_factory=dict)
    # What `isvserver simulate` can send to its interfaces, by name.
    simulations: tuple[Simulation, ...] = ()
    # What reconcile does with its instances past their `expire_at`.
    expiry_policy: ExpiryPolicy = ExpiryPolicy.GUARD


def load(name: str) -> Adapter:
    """The adapter of package `isvserver.marketplaces.<name>`."""
    if not name.isidentifier():
        raise AdapterError(f"ISV_MARKETPLACES: {name!r} is not an adapter name")
    try:
        module = importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"{PACKAGE}.{name}",):
            raise AdapterError(f"ISV_MARKETPLACES: there is no adapter {name!r}") from None
        raise
    adapter = getattr(module, "ADAPTER", None)
    if not isinstance(adapter, Adapter):
        raise AdapterError(f"ISV_MARKETPLACES: {PACKAGE}.{name} declares no ADAPTER")
    return adapter


def load_all(names: Sequence[str]) -> tuple[Adapter, ...]:
    """The adapters of `names`, in that order."""
    return tuple(load(name) for name in names)


def expiry_policies(names: Sequence[str]) -> dict[str, ExpiryPolicy]:
    """Each named adapter's expiry policy, by marketplace name (a marketplace not named: GUARD)."""
    return {adapter.name: adapter.expiry_policy for adapter in load_all(names)}


def enabled(environ: Mapping[str, str]) -> tuple[Adapter, ...]:
    """The adapters ISV_MARKETPLACES names in `environ`, for commands built before the settings are read
    (a name that is no adapter is left out here: loading the settings reports it)."""
    names = environ.get("ISV_MARKETPLACES") or DEFAULT_MARKETPLACES
    found = []
    for name in dict.fromkeys(n.strip() for n in names.split(",") if n.strip()):
        try:
            found.append(load(name))
        except AdapterError:
            continue
    return tuple(found)
