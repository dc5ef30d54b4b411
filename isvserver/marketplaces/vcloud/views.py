"""The buyer's view of an order on the provider's apiHost: `GET /vcloud/v1/orders/{orderId}`.

It answers the order's state and frontEndUrl; the access details (user name, password) only sealed to
the order's publicKey, never in clear. An order this server has not seen answers 404.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from isvserver.db import connected
from isvserver.lifecycle import app_info
from isvserver.marketplaces.vcloud.models import VCloudOrder
from isvserver.marketplaces.vcloud.orders import usable_id
from isvserver.marketplaces.vcloud.sealing import ALGORITHM, public_key, seal
from isvserver.models import Instance
from isvserver.runtime import runtime

bp = Blueprint("vcloud", __name__)


def answer(status: int, body: dict[str, Any]) -> Response:
    """JSON that no cache keeps."""
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def error_response(status: int, message: str) -> Response:
    """The answer to a 404, 405 or 500 under the prefix."""
    return answer(status, {"error": message, "status": status})


@bp.get("/orders/<path:order_id>")
def show_order(order_id: str) -> Response:
    """The order's state, its frontEndUrl and, sealed to its publicKey, the access details."""
    rt = runtime()
    if not usable_id(order_id):
        return error_response(404, "no such order")
    with connected():
        order = VCloudOrder.get_or_none(VCloudOrder.order_id == order_id)
        instance = (
            Instance.get_or_none(Instance.instance_id == order.instance_id)
            if order is not None and order.instance_id
            else None
        )
    if order is None:
        return error_response(404, "no such order")
    body: dict[str, Any] = {
        "orderId": order.order_id,
        "status": order.status,
        "state": instance.state if instance is not None else order.outcome,
        "frontEndUrl": instance.front_end_url if instance is not None else None,
    }
    info = app_info(instance, rt.settings.data_keys) if instance is not None else None
    key = public_key(order.public_key)
    if info is not None and key is not None and (info.user_name or info.password):
        details = {"userName": info.user_name, "password": info.password}
        body["access"] = {"sealed": seal(key, details), "encoding": "base64", "algorithm": ALGORITHM}
    return answer(200, body)
