"""The broker's catalog (ISV_BROKER_CATALOG, YAML or JSON): read once at start-up, every problem named."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

EXAMPLE = Path(__file__).with_name("catalog.example.yaml")
PASSWORD = "password"  # noqa: S105 (the seed's secret type: a string the broker seals, never echoes)

_NAME = {"type": "string", "minLength": 1, "maxLength": 255}
CATALOG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "services": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "name", "description", "bindable", "plans"],
                "properties": {
                    "id": _NAME,
                    "name": _NAME,
                    "description": {"type": "string"},
                    "bindable": {"type": "boolean"},
                    "plan_updateable": {"type": "boolean"},
                    "instances_retrievable": {"type": "boolean"},
                    "bindings_retrievable": {"type": "boolean"},
                    "allow_context_updates": {"type": "boolean"},
                    "plans": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["id", "name", "description"],
                            "properties": {
                                "id": _NAME,
                                "name": _NAME,
                                "description": {"type": "string"},
                                "free": {"type": "boolean"},
                                "bindable": {"type": "boolean"},
                                "plan_updateable": {"type": "boolean"},
                                "maintenance_info": {
                                    "type": "object",
                                    "required": ["version"],
                                    "properties": {"version": {"type": "string", "minLength": 1}},
                                },
                                "schemas": {"type": ["object", "null"]},
                            },
                        },
                    },
                },
            },
        }
    },
}


class CatalogError(Exception):
    """The catalog cannot be served; the message names every problem."""


@dataclass(frozen=True)
class Plan:
    """One plan: its ids, whether it may be changed to, its create schema and its secret parameters."""

    id: str
    service_id: str
    name: str
    updateable: bool
    maintenance_version: str | None
    create_schema: dict[str, Any] | None  # `password` types read as strings
    update_schema: dict[str, Any] | None
    secrets: frozenset[str] = field(default_factory=frozenset)

    def validate(self, parameters: dict[str, Any], update: bool = False) -> list[str]:
        """What is wrong with `parameters` against the plan's schema (paths and rules, never values)."""
        schema = self.update_schema if update else self.create_schema
        if schema is None:
            return []
        validator = jsonschema.Draft7Validator(schema)
        return sorted(
            f"{'.'.join(str(p) for p in error.absolute_path) or 'parameters'}: {error.validator} "
            f"{'not met' if error.validator != 'required' else _missing(error)}"
            for error in validator.iter_errors(parameters)
        )[:10]


def _missing(error: jsonschema.ValidationError) -> str:
    """The property a `required` rule misses (a name from the schema, never a value)."""
    wanted = [name for name in error.validator_value if name not in (error.instance or {})]
    return "missing " + ", ".join(wanted)


@dataclass(frozen=True)
class Catalog:
    """The services and plans the broker sells, and the document `GET /v2/catalog` answers."""

    document: dict[str, Any]
    services: dict[str, dict[str, Any]]
    plans: dict[tuple[str, str], Plan]
    body: bytes  # the catalog reply, serialised once

    def plan(self, service_id: Any, plan_id: Any) -> Plan | None:
        """The plan of this service, or None."""
        if not isinstance(service_id, str) or not isinstance(plan_id, str):
            return None
        return self.plans.get((service_id, plan_id))


def _readable(schema: Any) -> tuple[Any, set[str]]:
    """The schema with `password` types as strings (for jsonschema), and the secret property names."""
    secrets: set[str] = set()
    if not isinstance(schema, dict):
        return schema, secrets
    schema = copy.deepcopy(schema)
    for name, spec in (schema.get("properties") or {}).items():
        if isinstance(spec, dict) and spec.get("type") == PASSWORD:
            spec["type"] = "string"
            secrets.add(name)
    return schema, secrets


def _plan_schema(plan: dict[str, Any], kind: str, action: str) -> Any:
    schemas = plan.get("schemas") or {}
    part = (schemas.get(kind) or {}) if isinstance(schemas, dict) else {}
    return ((part.get(action) or {}) if isinstance(part, dict) else {}).get("parameters")


def build(document: Any, source: str = "catalog") -> Catalog:
    """The catalog of `document`, or CatalogError naming every problem."""
    problems = [
        f"{source}: {'.'.join(str(p) for p in error.absolute_path) or 'document'}: {error.message}"
        for error in jsonschema.Draft7Validator(CATALOG_SCHEMA).iter_errors(document)
    ]
    if problems:
        raise CatalogError("; ".join(sorted(problems)[:20]))
    services: dict[str, dict[str, Any]] = {}
    plans: dict[tuple[str, str], Plan] = {}
    seen_names: set[str] = set()
    for s_index, service in enumerate(document["services"]):
        where = f"{source}: services.{s_index}"
        if service["id"] in services:
            problems.append(f"{where}.id: {service['id']!r} is used twice")
        if service["name"] in seen_names:
            problems.append(f"{where}.name: {service['name']!r} is used twice")
        services[service["id"]] = service
        seen_names.add(service["name"])
        plan_ids: set[str] = set()
        for p_index, plan in enumerate(service["plans"]):
            at = f"{where}.plans.{p_index}"
            if plan["id"] in plan_ids:
                problems.append(f"{at}.id: {plan['id']!r} is used twice in the service")
            plan_ids.add(plan["id"])
            create, secrets = _readable(_plan_schema(plan, "service_instance", "create"))
            update, update_secrets = _readable(_plan_schema(plan, "service_instance", "update"))
            for action, schema in (("create", create), ("update", update)):
                if schema is None:
                    continue
                try:
                    jsonschema.Draft7Validator.check_schema(schema)
                except jsonschema.SchemaError as exc:
                    problems.append(
                        f"{at}.schemas.service_instance.{action}.parameters: not a JSON schema: {exc.message}"
                    )
            updateable = plan.get("plan_updateable", service.get("plan_updateable", False))
            maintenance = (plan.get("maintenance_info") or {}).get("version")
            plans[(service["id"], plan["id"])] = Plan(
                plan["id"],
                service["id"],
                plan["name"],
                bool(updateable),
                maintenance,
                create,
                update,
                frozenset(secrets | update_secrets),
            )
    if problems:
        raise CatalogError("; ".join(problems[:20]))
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Catalog(document, services, plans, body)


def load(path: Path) -> Catalog:
    """The catalog in the YAML or JSON file at `path` (JSON is YAML too), or CatalogError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: is not UTF-8 text") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"{path}: is not valid YAML or JSON{where}") from None
    return build(document, str(path))
