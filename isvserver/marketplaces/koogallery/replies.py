"""Reply bodies of the V2 basic interface, serialised once and signed exactly as sent (spec §3)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from flask import Response
from marshmallow import Schema, fields

from isvserver.marketplaces.koogallery.results import IN_PROGRESS, SUCCESS
from isvserver.marketplaces.koogallery.schemas import REPLIES, RESULT_OUT
from isvserver.marketplaces.koogallery.signing import body_sign

Reply = dict[str, Any]


def reply(code: str, message: str, **fields: Any) -> Reply:
    """A reply body: resultCode, resultMsg, then the activity's own fields."""
    return {"resultCode": code, "resultMsg": message, **fields}


def signed_response(body: Reply, key: str, status: int = 200, activity: str | None = None) -> Response:
    """Serialise once, sign exactly those bytes, send them untouched."""
    schema = (
        REPLIES.get(activity or "", RESULT_OUT)
        if body["resultCode"] in (SUCCESS, IN_PROGRESS)
        else RESULT_OUT
    )
    data = json.dumps(_dumped(schema, body), ensure_ascii=True, separators=(",", ":")).encode("ascii")
    response = Response(data, status=status, content_type="application/json")
    response.headers["Body-Sign"] = body_sign(key, data)
    return response


def _dumped(schema: Schema, data: dict[str, Any]) -> dict[str, Any]:
    """What `schema.dump(data)` gives for the reply schemas, without marshmallow's per-call machinery.

    The schema's fields in its order, each only when present and not None (OutSchema drops empty
    values), strings as str, nested schemas and lists of them the same way (see _plan).
    """
    out = {}
    for name, key, nested, many in _plan(schema):
        value = data.get(name)
        if value is None:
            continue
        if nested is NUMBER:
            out[key] = float(value)  # Double(12,4): a JSON number
        elif nested is None:
            out[key] = str(value)
        elif many:
            out[key] = [_dumped(nested, item) for item in value]
        else:
            out[key] = _dumped(nested, value)
    return out


NUMBER: Any = object()  # a plan's mark for a number field (fields.Decimal)


@lru_cache(maxsize=32)
def _plan(schema: Schema) -> tuple[tuple[str, str, Any, bool], ...]:
    """(name, key in the reply, nested schema, NUMBER or None, is a list) of each field, in dump order."""
    plan = []
    for name, field in schema.dump_fields.items():
        inner = field.inner if isinstance(field, fields.List) else field
        if isinstance(inner, fields.Nested):
            plan.append((name, field.data_key or name, inner.schema, inner is not field))
        elif isinstance(inner, fields.Decimal) and inner is field:
            plan.append((name, field.data_key or name, NUMBER, False))
        elif isinstance(inner, fields.String) and inner is field:
            plan.append((name, field.data_key or name, None, False))
        else:
            raise TypeError(f"{type(schema).__name__}.{name}: only strings and nested schemas are dumped")
    return tuple(plan)
