"""The OpenAPI document: the core's probes and every enabled adapter's paths, served as JSON."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from flask import Blueprint, Response, jsonify

from isvserver.adapters import load, load_part
from isvserver.runtime import runtime
from isvserver.settings import Settings
from isvserver.web import private

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"

bp = Blueprint("openapi", __name__)
bp.before_request(private.only_operators)

HEALTHZ = {
    "get": {
        "operationId": "healthz",
        "summary": "The process is up (no database needed)",
        "responses": {
            "200": {
                "description": "up",
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"type": "string", "enum": ["ok"]}},
                        }
                    }
                },
            }
        },
    }
}


def build_spec(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of every enabled adapter's endpoints and of /healthz."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    names = []
    for name in settings.marketplaces:
        adapter = load(name)
        names.append(name)
        if adapter.openapi is not None:
            own_paths, own_schemas = adapter.openapi(settings)
            for path, item in own_paths.items():
                paths.setdefault(path, {}).update(item)  # interfaces sharing a path keep each its methods
            schemas.update(own_schemas)
    for name in settings.parts:
        part = load_part(name)
        if part.openapi is not None:
            own_paths, own_schemas = part.openapi(settings)
            for path, item in own_paths.items():
                paths.setdefault(path, {}).update(item)
            schemas.update(own_schemas)
    paths["/healthz"] = HEALTHZ
    return {
        "paths": paths,
        "info": {
            "title": f"isvserver: marketplace interfaces ({', '.join(names)})",
            "version": version("isvserver"),
            "description": "Every marketplace call is HMAC-signed; every reply is a signed JSON body "
            "holding the marketplace's result code (HTTP 200), except 405 and 413.",
        },
        "openapi": OPENAPI_VERSION,
        "components": {"schemas": schemas},
    }


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document (no signature needed)."""
    return jsonify(build_spec(runtime().settings))
