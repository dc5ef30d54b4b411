"""The adapter protocol: what a marketplace interface declares to the core, and the registry that finds it.

An adapter is a package `isvserver.marketplaces.<name>` whose module-level `ADAPTER` is an `Adapter`.
The core never imports one by its name in code: `load` finds the names listed in ISV_MARKETPLACES.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click
    from flask import Blueprint, Response
    from peewee import Field, Model

    from isvserver import lanes
    from isvserver.settings import Settings
    from isvserver.usage import Metering

PACKAGE = "isvserver.marketplaces"
PARTS_PACKAGE = "isvserver.parts"
DEFAULT_MARKETPLACES = "koogallery"  # ISV_MARKETPLACES when unset
NO_PARTS = "none"  # ISV_PARTS=none enables no part


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
    command: click.Command | None  # None: a flow alone
    # Run by `isvserver simulate flow URL [--test] [--key K]` in the adapters' order, with URL, whether
    # --test was given and the --key given (the basic interface's: a flow of another interface signs
    # with its own configured key); True when every answer was right (a flow that has no key
    # configured says so and passes).
    flow: Callable[[str, bool, str | None], bool] | None = None


@dataclass(frozen=True)
class DevelopmentSecret:
    """A secret of an adapter's own that development mode makes when its variable is unset."""

    env_var: str
    make: Callable[[], str]
    # What `isvserver serve` prints of a value it just made (a private key's public half, say).
    shown: Callable[[str], str] = str
    description: str = ""


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
    # The largest request body its paths take, when not ISV_MAX_BODY_BYTES (the web worker frames
    # each request against the limit of the mount its path falls under).
    max_body_bytes: int | None = None
    # Which of its requests only read, and go before waiting changes (isvserver/lanes.py); None: GET and HEAD.
    reads: lanes.Judge | None = None

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
    # Pay-per-use: how it takes usage records from the ledger (isvserver.usage); None: it takes none.
    metering: Metering | None = None
    # Gauges of its own read at scrape time (/metrics): prometheus metric families, read inside a
    # database connection.
    gauges: Callable[[], Iterable[Any]] | None = None
    # Secrets of its own that development mode generates when unset, like the key interfaces' keys
    # (kept in the instance folder's development-keys.json, printed when made).
    development_secrets: tuple[DevelopmentSecret, ...] = ()
    # What reconcile does with its instances past their `expire_at`.
    expiry_policy: ExpiryPolicy = ExpiryPolicy.GUARD
    # A check of the AppInfo its instances are provisioned with (instance row, AppInfo) → None or the
    # reason it is refused: what its wire format cannot carry fails provisioning with that reason.
    app_info_check: Callable[[Any, Any], str | None] | None = None


def available() -> tuple[str, ...]:
    """The names of every adapter package installed (found on disk: none is imported)."""
    package = importlib.import_module(PACKAGE)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg))


def load(name: str) -> Adapter:
    """The adapter of package `isvserver.marketplaces.<name>`."""
    valid = f"the adapters are {', '.join(available())}"
    if not name.isidentifier():
        raise AdapterError(f"ISV_MARKETPLACES: {name!r} is not an adapter name; {valid}")
    try:
        module = importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"{PACKAGE}.{name}",):
            raise AdapterError(f"ISV_MARKETPLACES: there is no adapter {name!r}; {valid}") from None
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


@dataclass(frozen=True)
class Part:
    """An application part that is not a marketplace (the product API, the console): the same kind of
    declaration as an Adapter, as `PART` in package `isvserver.parts.<name>`, enabled by ISV_PARTS."""

    name: str
    mounts: tuple[Mount, ...] = ()  # its blueprints at their prefixes, as an adapter's
    on_by_default: bool = False  # enabled when ISV_PARTS is unset
    load_settings: Callable[[Mapping[str, str], bool], Any] | None = None
    cli_commands: tuple[click.Command, ...] = ()
    openapi: Callable[[Settings], tuple[dict[str, Any], dict[str, Any]]] | None = None
    sealed_columns: tuple[tuple[Field, Field], ...] = ()
    models: tuple[type[Model], ...] = ()  # its tables; the SQL is in its migrations/ folder
    init_jobs: Callable[[Any], None] | None = None
    gauges: Callable[[], Iterable[Any]] | None = None  # read at scrape time, as an adapter's


def load_part(name: str) -> Part:
    """The part of package `isvserver.parts.<name>`."""
    if not name.isidentifier():
        raise AdapterError(f"ISV_PARTS: {name!r} is not a part name")
    try:
        module = importlib.import_module(f"{PARTS_PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{PARTS_PACKAGE}.{name}":
            raise AdapterError(f"ISV_PARTS: there is no part {name!r}") from None
        raise
    part = getattr(module, "PART", None)
    if not isinstance(part, Part):
        raise AdapterError(f"ISV_PARTS: {PARTS_PACKAGE}.{name} declares no PART")
    return part


def all_parts() -> tuple[Part, ...]:
    """Every part shipped, by name."""
    import pkgutil

    package = importlib.import_module(PARTS_PACKAGE)
    return tuple(load_part(m.name) for m in sorted(pkgutil.iter_modules(package.__path__)) if m.ispkg)


def part_names(raw: str | None) -> tuple[str, ...]:
    """The part names an ISV_PARTS value lists (unset: the parts on by default; `none`: none)."""
    if raw is None or not raw.strip():
        return tuple(part.name for part in all_parts() if part.on_by_default)
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    return () if names == (NO_PARTS,) else names


def enabled_parts(environ: Mapping[str, str]) -> tuple[Part, ...]:
    """The parts ISV_PARTS enables in `environ`, for commands built before the settings are read (a name
    that is no part is left out here: loading the settings reports it)."""
    found = []
    for name in part_names(environ.get("ISV_PARTS")):
        try:
            found.append(load_part(name))
        except AdapterError:
            continue
    return tuple(found)
