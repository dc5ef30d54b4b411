"""Replies are serialised without marshmallow's dump on the hot path: the same bytes as the schemas give."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isvserver.marketplaces.koogallery.replies import _dumped
from isvserver.marketplaces.koogallery.schemas import REPLIES, RESULT_OUT

BODIES: list[dict[str, Any]] = [
    {"resultCode": "000000", "resultMsg": "success", "instanceId": "i-1", "extra": "dropped"},
    {"resultCode": "000001", "resultMsg": None},
    {"resultMsg": "out of order", "resultCode": "000000", "info": []},
    {
        "resultCode": "000000",
        "resultMsg": "success",
        "info": [
            {
                "instanceId": "a",
                "appInfo": {
                    "memo": None,
                    "password": "p\u00e9",
                    "frontEndUrl": "https://a.example/",
                    "adminUrl": None,
                    "userName": "admin",
                    "unknown": "dropped",
                },
            },
            {"instanceId": "b"},
            {"instanceId": "c", "appInfo": {}},
            {"instanceId": "d", "appInfo": None},
        ],
    },
]


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("schema", [*REPLIES.values(), RESULT_OUT], ids=lambda s: type(s).__name__)
def test_reply_bytes_are_the_schemas(body: dict[str, Any], schema: Any) -> None:
    assert json.dumps(_dumped(schema, body)) == json.dumps(schema.dump(body))
