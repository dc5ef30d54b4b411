"""marshmallow schemas of every V1 request (spec §9) and License activity: query parameters, all text."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import unquote

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from isvserver.calls import load_json
from isvserver.marketplaces.koogallery.schemas import (
    ExpireTime,
    check_query_ids,
    ident,
    instance_ref,
    text,
)

BASIC_ACTIVITIES = (
    "newInstance",
    "refreshInstance",
    "expireInstance",
    "releaseInstance",
    "upgrade",
    "queryInstance",
)
LICENSE_ACTIVITIES = ("getLicense", "refreshLicense", "expireLicense", "releaseLicense")
ACTIVITIES = BASIC_ACTIVITIES + LICENSE_ACTIVITIES
CHARGING_MODES = ("0", "1", "3", "5")  # on-demand, period, one-time, on-demand package
ON_DEMAND = "0"
MAX_EXTEND_PARAMS = 2048
INTEGER = re.compile(r"[0-9]{1,9}")
DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,4})?")


def _pattern(regex: re.Pattern[str], what: str) -> validate.Validator:
    return validate.Regexp(regex, error=f"must be {what}")


def whole(required: bool = False) -> fields.String:
    """A whole number sent as text (kept as the text the marketplace sent)."""
    return fields.String(required=required, validate=_pattern(INTEGER, "a whole number"))


def decimal() -> fields.String:
    """A decimal amount sent as text (at most 4 decimals)."""
    return fields.String(validate=_pattern(DECIMAL, "a decimal number with at most 4 decimals"))


class ExtendParams(fields.Field):
    """`saasExtendParams`: URL-encoded Base64 of a JSON array of {name, value}; loaded as a map."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        if not isinstance(value, str) or len(value) > MAX_EXTEND_PARAMS:
            raise ValidationError(f"must be at most {MAX_EXTEND_PARAMS} characters")
        return decode_extend_params(value)


def decode_extend_params(value: str) -> dict[str, str]:
    """The name → value map of a `saasExtendParams` (its URL encoding undone if the query left one)."""
    text_value = unquote(value) if "%" in value else value
    try:
        raw = base64.b64decode(text_value.replace(" ", "+").encode("ascii"), validate=True)
        items = load_json(raw.decode("utf-8"))
    except (UnicodeError, binascii.Error, ValueError):
        raise ValidationError("must be URL-encoded Base64 of a JSON array of {name, value}") from None
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("value", ""), str)
        for i in items
    ):
        raise ValidationError("must be a JSON array of {name, value} objects with string values")
    return {item["name"]: item.get("value", "") for item in items}


def encode_extend_params(params: dict[str, str]) -> str:
    """Base64 of the JSON array the marketplace sends for `params` (the query encodes it once more)."""
    items = [{"name": name, "value": value} for name, value in params.items()]
    return base64.b64encode(json.dumps(items, ensure_ascii=False).encode("utf-8")).decode("ascii")


class FlagOne(fields.String):
    """`1` or `0` (absent: not set)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.OneOf(("0", "1")), **kwargs)


class V1Request(Schema):
    """Fields every V1 call carries besides authToken and timeStamp; unknown fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    activity = fields.String(required=True, validate=validate.OneOf(ACTIVITIES))
    testFlag = fields.String(load_default="0", validate=validate.OneOf(("0", "1")))


class Purchase(V1Request):
    """What a new purchase names (newInstance and getLicense)."""

    customerId = text(100)
    customerName = text(64, required=False)
    userId = text(64, required=False)
    userName = text(64, required=False)
    mobilePhone = text(256, required=False)
    email = text(256, required=False)
    businessId = ident()
    orderId = ident()
    skuCode = ident()
    productId = ident()
    trialFlag = FlagOne()
    expireTime = ExpireTime()
    chargingMode = fields.String(validate=validate.OneOf(CHARGING_MODES))
    periodType = fields.String(validate=validate.OneOf(("year", "month", "day", "hour")))
    periodNumber = whole()
    orderAmount = decimal()
    amount = whole()
    diskSize = whole()
    bandWidth = whole()
    provisionType = text(32, required=False)
    saasExtendParams = ExtendParams()


class RefreshInstance(V1Request):
    orderId = ident()
    instanceId = instance_ref()
    productId = ident(required=False)
    expireTime = ExpireTime(required=True)
    trialToFormal = FlagOne()
    periodType = fields.String(validate=validate.OneOf(("year", "month", "day", "hour")))
    periodNumber = whole()
    orderAmount = decimal()


class InstanceOrder(V1Request):
    """expireInstance, releaseInstance and the License changes: an instance and the order asking."""

    instanceId = instance_ref()
    orderId = ident()
    orderAmount = decimal()


class RefreshLicense(InstanceOrder):
    expireTime = ExpireTime(required=True)


class Upgrade(V1Request):
    instanceId = instance_ref()
    orderId = ident()
    skuCode = ident()
    productId = ident()
    amount = whole()
    diskSize = whole()
    bandWidth = whole()
    saasExtendParams = ExtendParams()


class QueryInstance(V1Request):
    instanceId = fields.String(required=True)

    @validates("instanceId")
    def _ids(self, value: str, data_key: str) -> None:
        check_query_ids(value)


REQUESTS: dict[str, Schema] = {
    "newInstance": Purchase(),
    "refreshInstance": RefreshInstance(),
    "expireInstance": InstanceOrder(),
    "releaseInstance": InstanceOrder(),
    "upgrade": Upgrade(),
    "queryInstance": QueryInstance(),
    "getLicense": Purchase(),
    "refreshLicense": RefreshLicense(),
    "expireLicense": InstanceOrder(),
    "releaseLicense": InstanceOrder(),
}
