"""The OpenAPI path of the buyer's view of an order."""

from __future__ import annotations

from typing import Any

from isvserver.marketplaces.vcloud.config import BUYER_PATH
from isvserver.settings import Settings

ERROR = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
}
ORDER = {
    "type": "object",
    "required": ["orderId", "status", "state", "frontEndUrl"],
    "properties": {
        "orderId": {"type": "string"},
        "status": {"type": "string", "description": "the platform's last status of the order, as given"},
        "state": {
            "type": "string",
            "description": "the instance's state (provisioning, active, frozen, released, failed), or what "
            "the order is waiting for (waiting, unknown_status, unreadable, id_conflict)",
        },
        "frontEndUrl": {"type": "string", "nullable": True},
        "access": {
            "type": "object",
            "description": "present when the order has a publicKey and the instance access details",
            "required": ["sealed", "encoding", "algorithm"],
            "properties": {
                "sealed": {
                    "type": "string",
                    "description": "base64 of a sealed box (libsodium crypto_box_seal) to the order's "
                    'publicKey, holding {"userName": …, "password": …}',
                },
                "encoding": {"type": "string", "enum": ["base64"]},
                "algorithm": {"type": "string"},
            },
        },
    },
}


def spec(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, schemas) of GET /vcloud/v1/orders/{orderId}."""

    def reply(description: str, schema: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{schema}"}
        return {"description": description, "content": {"application/json": {"schema": ref}}}

    operation = {
        "summary": "The buyer's view of a V Cloud order: its state and frontEndUrl, access details sealed",
        "parameters": [{"name": "orderId", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": reply("the order", "VCloudOrderOut"),
            "404": reply("an order this server has not seen", "VCloudError"),
        },
    }
    paths = {f"{BUYER_PATH}/orders/{{orderId}}": {"get": operation}}
    return paths, {"VCloudOrderOut": ORDER, "VCloudError": ERROR}
