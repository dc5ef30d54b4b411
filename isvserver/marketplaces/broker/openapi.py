"""The broker's paths in /openapi.json (token, catalog, instances, last operation)."""

from __future__ import annotations

from typing import Any

from isvserver.marketplaces.broker.config import NAME
from isvserver.settings import Settings

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/BrokerError"}


def _responses(*codes: str) -> dict[str, Any]:
    texts = {
        "200": "done (or identical, already done)",
        "201": "created",
        "202": "accepted: poll last_operation with the operation",
        "400": "bad request",
        "401": "missing, expired or unknown credentials",
        "404": "no such service instance",
        "409": "the instance id exists with other attributes",
        "410": "gone (deprovisioned)",
        "412": "X-Broker-API-Version below 2.13",
        "422": "AsyncRequired, ConcurrencyError or MaintenanceInfoConflict",
        "429": "too many failed token requests from this source",
    }
    return {
        code: {
            "description": texts[code],
            "content": {JSON: {"schema": ERROR if code >= "400" else {"type": "object"}}},
        }
        for code in codes
    }


def _instance_paths(base: str) -> dict[str, Any]:
    security = [{"accessToken": []}, {"bearer": []}, {"basic": []}]
    instance = {
        "put": {
            "operationId": f"brokerProvision{base}",
            "security": security,
            "responses": _responses("200", "201", "202", "400", "401", "409", "412", "422"),
        },
        "get": {
            "operationId": f"brokerFetch{base}",
            "security": security,
            "responses": _responses("200", "401", "404", "412"),
        },
        "patch": {
            "operationId": f"brokerUpdate{base}",
            "security": security,
            "responses": _responses("200", "202", "400", "401", "404", "412", "422"),
        },
        "delete": {
            "operationId": f"brokerDeprovision{base}",
            "security": security,
            "responses": _responses("200", "202", "401", "410", "412", "422"),
        },
    }
    return {
        "catalog": {
            "get": {
                "operationId": f"brokerCatalog{base}",
                "security": security,
                "responses": _responses("200", "401", "412"),
            }
        },
        "instance": instance,
        "last_operation": {
            "get": {
                "operationId": f"brokerLastOperation{base}",
                "security": security,
                "responses": _responses("200", "400", "401", "404", "410", "412"),
            }
        },
    }


def paths(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token path and the broker's paths under its prefix (AppCube's and OSB's /v2 forms)."""
    own = settings.of(NAME)
    found: dict[str, Any] = {
        own.token_path: {
            "post": {
                "operationId": "brokerToken",
                "summary": "client credentials: a form or JSON body, or HTTP Basic",
                "responses": _responses("200", "400", "401", "429"),
            }
        }
    }
    for base, prefix in (("", own.path), ("V2", f"{own.path}/v2")):
        parts = _instance_paths(base)
        found[f"{prefix}/catalog"] = parts["catalog"]
        found[f"{prefix}/service_instances/{{instance_id}}"] = parts["instance"]
        found[f"{prefix}/service_instances/{{instance_id}}/last_operation"] = parts["last_operation"]
    schemas = {
        "BrokerError": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "description": {"type": "string"}},
        }
    }
    return found, schemas
