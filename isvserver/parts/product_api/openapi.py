"""The product API's paths in /openapi.json."""

from __future__ import annotations

from typing import Any

from isvserver.settings import Settings
from isvserver.usage import MAX_RECORDS, Reason, Status

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/ProductApiError"}


def paths(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, schemas) of POST /v1/usage."""
    record_in = {
        "type": "object",
        "required": ["instanceId", "meteringSn", "beginTime", "endTime", "value"],
        "properties": {
            "instanceId": {"type": "string", "maxLength": 64},
            "meteringSn": {"type": "string", "maxLength": 64, "description": "the record's identity"},
            "beginTime": {"type": "string", "description": "ISO-8601 or yyyyMMdd'T'HHmmss'Z' (UTC)"},
            "endTime": {"type": "string", "description": "ISO-8601 or yyyyMMdd'T'HHmmss'Z' (UTC)"},
            "value": {
                "oneOf": [{"type": "number"}, {"type": "string"}],
                "description": "> 0, at most 4 decimals",
            },
            "relatedInstanceId": {"type": "string", "maxLength": 64, "description": "package instance"},
        },
    }
    outcome = {
        "type": "object",
        "required": ["meteringSn", "status"],
        "properties": {
            "meteringSn": {"type": "string", "nullable": True},
            "status": {"type": "string", "enum": [s.value for s in Status]},
            "code": {"type": "string", "enum": [r.value for r in Reason]},
            "reason": {"type": "string"},
        },
    }
    schemas = {
        "UsageIn": {
            "type": "object",
            "required": ["records"],
            "properties": {
                "records": {"type": "array", "minItems": 1, "maxItems": MAX_RECORDS, "items": record_in}
            },
        },
        "UsageOut": {
            "type": "object",
            "required": ["accepted", "duplicate", "refused", "records"],
            "properties": {
                "accepted": {"type": "integer"},
                "duplicate": {"type": "integer"},
                "refused": {"type": "integer"},
                "records": {"type": "array", "items": outcome},
            },
        },
        "ProductApiError": {
            "type": "object",
            "required": ["error", "status"],
            "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
        },
    }

    def error(description: str) -> dict[str, Any]:
        return {"description": description, "content": {JSON: {"schema": ERROR}}}

    post = {
        "operationId": "postUsage",
        "summary": "The product reports usage records of its on-demand instances",
        "security": [{"productToken": []}],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/UsageIn"}}},
        },
        "responses": {
            "200": {
                "description": "per record: accepted (stored), duplicate, or refused with a reason",
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/UsageOut"}}},
            },
            "400": error("the body is not a record list; nothing stored"),
            "401": error("no valid product token"),
            "413": error("the body is too large"),
            "503": error("the ledger cannot be reached; nothing stored, send again"),
        },
    }
    return {"/v1/usage": {"post": post}}, schemas
