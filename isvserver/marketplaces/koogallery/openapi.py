"""The OpenAPI paths of the V2 basic produce endpoint, generated from its marshmallow schemas."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from isvserver.marketplaces.koogallery.schemas import (
    REPLIES,
    REQUESTS,
    RESULT_OUT,
    ExpireTime,
    ProductInfo,
    TestFlag,
)
from isvserver.marketplaces.koogallery.v1 import openapi as v1_openapi
from isvserver.settings import Settings

OPENAPI_VERSION = "3.0.3"
# ^\d{14}(\d{3})?$ spelled out as yyyyMMddHHmmss[SSS] (years 1000-9999), so that generated values are dates.
EXPIRE_TIME_PATTERN = (
    r"^[1-9][0-9]{3}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]([0-9]{3})?$"
)
BODY_SIGN_PATTERN = r'^sign_type="HMAC-SHA256", signature="[A-Za-z0-9+/]{43}="$'
JSON = "application/json"


def custom_fields(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """apispec attribute function: the wire form of the custom fields of schemas.py."""
    if isinstance(field, ExpireTime):
        return {
            "type": "string",
            "pattern": EXPIRE_TIME_PATTERN,
            "description": "yyyyMMddHHmmss or yyyyMMddHHmmssSSS, UTC",
        }
    if isinstance(field, TestFlag):
        return {
            "oneOf": [{"type": "string", "enum": ["0", "1"]}, {"type": "integer", "enum": [0, 1]}],
            "description": '"1" (or 1): a debug call, verified and logged, touching no instance',
        }
    if isinstance(field, ProductInfo):
        return {
            "oneOf": [{"type": "object"}, {"type": "string"}],
            "description": "the target spec: a JSON object, or a string holding one",
        }
    return {}


def _query_parameters(settings: Settings) -> list[dict[str, Any]]:
    """`signature`, `timestamp` and `nonce` of spec §2.1."""
    window = settings.signature_tolerance
    return [
        {
            "name": "signature",
            "in": "query",
            "required": True,
            "description": "hex(HMAC-SHA256(key, key + nonce + timestamp + lowercase_hex(HMAC-SHA256(key, "
            "body)))), upper-case as the marketplace sends it (compared case-insensitively); wrong or "
            "missing: 000001",
            "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"},
        },
        {
            "name": "timestamp",
            "in": "query",
            "required": True,
            "description": f"UNIX time in milliseconds (13 digits; 10 digits are read as seconds), within "
            f"{window} s of the server's clock in both directions; missing, malformed or stale: 000002",
            "schema": {"type": "string", "pattern": "^([0-9]{13}|[0-9]{10})$"},
        },
        {
            "name": "nonce",
            "in": "query",
            "required": True,
            "description": "random, 1 to 128 printable ASCII characters, used once (a replay answers "
            "000001); missing or malformed: 000002",
            "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[ -~]+$"},
        },
    ]


def _signed_reply(description: str, schema: dict[str, Any], logged: bool = True) -> dict[str, Any]:
    """A response with a JSON body and the Body-Sign header of spec §3 (and X-Request-Id when `logged`)."""
    headers: dict[str, Any] = {
        "Body-Sign": {
            "description": "Base64(HMAC-SHA256(key, the exact body bytes)) with the key that verified the "
            "request (the first key of the interface when verification failed)",
            "required": True,
            "schema": {"type": "string", "pattern": BODY_SIGN_PATTERN},
        }
    }
    if logged:
        headers["X-Request-Id"] = {
            "description": "the id of this call in the log and the callback log",
            "schema": {"type": "string"},
        }
    return {"description": description, "headers": headers, "content": {JSON: {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    """A reference to a schema component."""
    return {"$ref": f"#/components/schemas/{name}"}


def _register_requests(spec: APISpec) -> dict[str, str]:
    """One component per activity, its `activity` pinned to that value; the discriminator mapping."""
    mapping = {}
    for activity, schema in REQUESTS.items():
        name = type(schema).__name__
        spec.components.schema(name, schema=schema)
        spec.components.schemas[name]["properties"]["activity"] = {"type": "string", "enum": [activity]}
        mapping[activity] = _ref(name)["$ref"]
    return mapping


def _register_replies(spec: APISpec) -> list[str]:
    """The reply components, the envelope last; each one is closed, so exactly one matches a reply."""
    names = []
    for schema in [*REPLIES.values(), RESULT_OUT]:
        name = type(schema).__name__
        spec.components.schema(name, schema=schema)
        names.append(name)
    return names


def paths(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and schema components of the produce endpoint at ISV_PRODUCE_PATH."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="isvserver: Huawei Cloud KooGallery produce interface (V2 basic)",
        version=version("isvserver"),
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={
            "description": "Every call is HMAC-signed (query signature, timestamp, nonce); every reply "
            "is HTTP 200 with a signed JSON body holding resultCode and resultMsg, except 405 and 413."
        },
    )
    plugin.converter.add_attribute_function(custom_fields)
    mapping = _register_requests(spec)
    replies = _register_replies(spec)
    envelope = type(RESULT_OUT).__name__
    spec.path(
        path=settings.of("koogallery").produce_path,
        operations={
            "post": {
                "operationId": "produce",
                "summary": "Every V2 basic call; the body's `activity` picks the operation",
                "parameters": _query_parameters(settings),
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "oneOf": [{"$ref": ref} for ref in mapping.values()],
                                "discriminator": {"propertyName": "activity", "mapping": mapping},
                            }
                        }
                    },
                },
                "responses": {
                    "200": _signed_reply(
                        "the result: 000000 success, 000001 authentication failed, 000002 invalid "
                        "request, 000003 no such instance, 000004 in progress, 000005 internal error",
                        {"oneOf": [_ref(name) for name in replies]},
                    ),
                    "405": _signed_reply("not POST", _ref(envelope), logged=False),
                    "413": _signed_reply(f"body over {settings.max_body_bytes} bytes", _ref(envelope)),
                },
            }
        },
    )
    document = spec.to_dict()
    document["paths"][settings.of("koogallery").produce_path]["get"] = v1_openapi.operation(settings)
    return document["paths"], document["components"]["schemas"]
