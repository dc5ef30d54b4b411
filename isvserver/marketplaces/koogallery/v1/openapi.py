"""The OpenAPI operation of V1's GET on the produce path (merged beside V2's POST, per method)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from isvserver.marketplaces.koogallery.v1.schemas import ACTIVITIES, REQUESTS
from isvserver.settings import Settings

BODY_SIGN_PATTERN = r'^sign_type="HMAC-SHA256", signature="[A-Za-z0-9+/]{43}="$'
TEXT = {"type": "string"}
APP_INFO = {
    "type": "object",
    "required": ["frontEndUrl"],
    "additionalProperties": False,
    "properties": {
        "frontEndUrl": TEXT,
        "adminUrl": TEXT,
        "userName": {**TEXT, "description": "AES-CBC encrypted (spec §4): 16-character IV + Base64"},
        "password": {**TEXT, "description": "AES-CBC encrypted (spec §4): 16-character IV + Base64"},
        "memo": TEXT,
    },
}
REPLY = {
    "type": "object",
    "required": ["resultCode", "resultMsg"],
    "additionalProperties": False,
    "properties": {
        "resultCode": {"type": "string", "pattern": "^[0-9]{6}$"},
        "resultMsg": {"type": "string", "maxLength": 255},
        "instanceId": TEXT,
        "encryptType": {"type": "string", "enum": ["1", "2"]},
        "appInfo": APP_INFO,
        "info": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["instanceId"],
                "additionalProperties": False,
                "properties": {"instanceId": TEXT, "appInfo": APP_INFO},
            },
        },
        "license": {**TEXT, "description": "the license: the provisioner's, or ISVL1.<payload>.<signature>"},
    },
}


def _names() -> list[str]:
    """Every field any V1 activity reads, in first-seen order (activity and testFlag first)."""
    seen: dict[str, None] = {}
    for schema in REQUESTS.values():
        for name, field in schema.fields.items():
            if isinstance(field, fields.Field) and name not in ("activity",):
                seen.setdefault(field.data_key or name)
    return list(seen)


def _reply(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "Body-Sign": {
                "description": "Base64(HMAC-SHA256(key, the exact body bytes)), mandatory in V1",
                "required": True,
                "schema": {"type": "string", "pattern": BODY_SIGN_PATTERN},
            }
        },
        "content": {"application/json": {"schema": REPLY}},
    }


def operation(settings: Settings) -> dict[str, Any]:
    """The `get` operation of the produce path."""
    window = settings.of("koogallery").v1_check_window
    parameters = [
        {
            "name": "activity",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "enum": list(ACTIVITIES)},
        },
        {
            "name": "timeStamp",
            "in": "query",
            "required": True,
            "description": "yyyyMMddHHmmssSSS, UTC"
            + (
                f", within {window} s of the server's clock"
                if window
                else " (not checked: ISV_V1_CHECK_WINDOW=0)"
            ),
            "schema": {"type": "string", "pattern": "^[0-9]{17}$"},
        },
        {
            "name": "authToken",
            "in": "query",
            "required": True,
            "description": "Base64(HMAC-SHA256(key + timeStamp, every other parameter URL-decoded, sorted "
            "by name, joined k=v&…)); accepted once; wrong, missing or replayed: 000001",
            "schema": {"type": "string"},
        },
        *({"name": name, "in": "query", "required": False, "schema": TEXT} for name in _names()),
    ]
    return {
        "operationId": "produce_v1",
        "summary": "Every KooGallery V1 basic and License call; `activity` picks the operation",
        "parameters": parameters,
        "responses": {
            "200": _reply(
                "the result: 000000 success, 000001 authentication failed, 000002 invalid request, 000003 "
                "no such instance, 000004 in progress, 000005 internal error"
            )
        },
    }
