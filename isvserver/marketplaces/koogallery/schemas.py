"""marshmallow schemas of every V2 basic request and reply (spec §5): fields, lengths, rules."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_dump, validate, validates

from isvserver.calls import load_json

MAX_QUERY_IDS = 100
SCENES = ("TRIAL_TO_FORMAL", "RENEWAL", "UNSUBSCRIBE_RENEWAL_PERIOD", "RENEWAL_CHANGE")
STATUSES = ("FREEZE", "UNFREEZE")
ACTIVITIES = (
    "newInstance",
    "queryInstance",
    "refreshInstance",
    "updateInstanceStatus",
    "releaseInstance",
    "upgradeInstance",
    "changeInstanceCheck",
    "orderNotify",
)


# What an instance id may be: a safe URL path segment (unreserved characters, not `.` or `..`).
INSTANCE_ID = re.compile(r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,64}")


def not_blank(value: str) -> None:
    """A mandatory text may not be empty or only whitespace."""
    if not value.strip():
        raise ValidationError("may not be empty or only whitespace")


def not_dot_segment(value: str) -> None:
    """An id may not be `.` or `..` (a URL path would resolve it away)."""
    if value.strip() in (".", ".."):
        raise ValidationError("may not be . or ..")


def text(max_length: int, required: bool = True, **kwargs: Any) -> fields.String:
    """A string field of at most `max_length` characters; a mandatory one may not be empty or blank."""
    checks = [validate.Length(min=1 if required else 0, max=max_length)]
    return fields.String(required=required, validate=[*checks, not_blank] if required else checks, **kwargs)


def ident(max_length: int = 64, required: bool = True) -> fields.String:
    """An id (order, order line, business, product): text that is not a `.`/`..` path segment."""
    field = text(max_length, required)
    field.validators.append(not_dot_segment)
    return field


def instance_id(value: str) -> None:
    """An instanceId is a safe URL path segment: every id this server hands out is one."""
    if not INSTANCE_ID.fullmatch(value):
        raise ValidationError("must be 1 to 64 letters, digits, '.', '_' or '-', and not . or ..")


def instance_ref() -> fields.String:
    """A mandatory instanceId field."""
    field = text(64)
    field.validators.append(instance_id)
    return field


class ExpireTime(fields.Field):
    """`yyyyMMddHHmmss` (documented) or `yyyyMMddHHmmssSSS` (what the example sends), UTC."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if (
            not isinstance(value, str)
            or not value.isascii()
            or not value.isdigit()
            or len(value) not in (14, 17)
        ):
            raise ValidationError("must be yyyyMMddHHmmss or yyyyMMddHHmmssSSS")
        try:
            moment = datetime.strptime(value[:14], "%Y%m%d%H%M%S")
        except ValueError:
            raise ValidationError("is not a real date and time") from None
        return moment.replace(microsecond=int(value[14:] or 0) * 1000)


class ProductInfo(fields.Field):
    """A JSON object, or a string holding one (both forms are seen from marketplaces)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, str):
            try:
                value = load_json(value)
            except ValueError:
                raise ValidationError("must be a JSON object") from None
        if not isinstance(value, dict):
            raise ValidationError("must be a JSON object")
        return value


class TestFlag(fields.Field):
    """`"0"` or `"1"`, or the JSON number 0 or 1 (the Kit interfaces send a number); loaded as the string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if value in ("0", "1") or (type(value) is int and value in (0, 1)):  # not True/False, not 1.0
            return str(value)
        raise ValidationError('must be "0" or "1" (or the number 0 or 1)')


def is_test_flag(value: Any) -> bool:
    """Whether a body's `testFlag` as sent marks a debug call: `"1"` or the number 1."""
    return value == "1" or (type(value) is int and value == 1)


class RequestIn(Schema):
    """Fields every activity carries; unknown fields are ignored (the marketplace adds fields over time)."""

    class Meta:
        unknown = EXCLUDE

    activity = fields.String(required=True, validate=validate.OneOf(ACTIVITIES))
    testFlag = TestFlag(load_default="0")


class NewInstanceIn(RequestIn):
    orderId = ident()
    orderLineId = ident()
    businessId = ident()
    productId = ident(required=False)  # on-demand orders: one instance per product of the order line


class QueryInstanceIn(RequestIn):
    instanceId = fields.String(
        required=True,
        metadata={
            "description": "comma-separated instance ids: 1 to 100, each at most 64 characters "
            "(blanks and duplicates are dropped)",
            "pattern": r"[^\s,]",
        },
    )

    @validates("instanceId")
    def _ids(self, value: str, data_key: str) -> None:
        check_query_ids(value)


def check_query_ids(value: str) -> None:
    """queryInstance's instanceId (V1 and V2): 1 to MAX_QUERY_IDS ids, each an instance id."""
    ids = split_ids(value)
    if not ids:
        raise ValidationError("lists no instance id")
    if len(ids) > MAX_QUERY_IDS:
        raise ValidationError(f"lists more than {MAX_QUERY_IDS} instance ids")
    if any(len(i) > 64 for i in ids):
        raise ValidationError("holds an id longer than 64 characters")
    if not all(INSTANCE_ID.fullmatch(i) for i in ids):
        raise ValidationError("holds an id that is not letters, digits, '.', '_' or '-' (or is . or ..)")


def split_ids(value: str) -> list[str]:
    """The distinct ids of a comma-separated list, in order, blanks dropped."""
    return list(dict.fromkeys(i.strip() for i in value.split(",") if i.strip()))


class RefreshInstanceIn(RequestIn):
    instanceId = instance_ref()
    orderId = ident()
    orderLineId = ident()
    scene = fields.String(required=True, validate=validate.OneOf(SCENES))
    expireTime = ExpireTime(required=True)
    productId = ident(required=False)


class UpdateInstanceStatusIn(RequestIn):
    instanceId = instance_ref()
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))


class ReleaseInstanceIn(RequestIn):
    instanceId = instance_ref()
    orderId = ident(required=False)
    orderLineId = ident(required=False)


class UpgradeInstanceIn(RequestIn):
    instanceId = instance_ref()
    orderId = ident()
    orderLineId = ident()


class ChangeInstanceCheckIn(RequestIn):
    instanceId = instance_ref()
    productInfo = ProductInfo(required=True)


class OrderNotifyIn(RequestIn):
    orderId = ident()
    orderLineId = ident()


REQUESTS: dict[str, Schema] = {
    "newInstance": NewInstanceIn(),
    "queryInstance": QueryInstanceIn(),
    "refreshInstance": RefreshInstanceIn(),
    "updateInstanceStatus": UpdateInstanceStatusIn(),
    "releaseInstance": ReleaseInstanceIn(),
    "upgradeInstance": UpgradeInstanceIn(),
    "changeInstanceCheck": ChangeInstanceCheckIn(),
    "orderNotify": OrderNotifyIn(),
}


class OutSchema(Schema):
    """Replies leave out optional fields that have no value."""

    @post_dump
    def _drop_empty(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None}


class ResultOut(OutSchema):
    resultCode = fields.String(required=True, validate=validate.Length(equal=6))
    resultMsg = fields.String(required=True, validate=validate.Length(max=255))


class NewInstanceOut(ResultOut):
    instanceId = text(64)


class AppInfoOut(OutSchema):
    frontEndUrl = text(512)
    adminUrl = text(512, required=False)
    userName = text(128, required=False)
    password = text(128, required=False)
    memo = text(1024, required=False)


class UsageInfoOut(OutSchema):
    relatedInstanceId = text(64, required=False)
    usageValue = fields.Decimal(required=True, places=4)
    statisticalTime = text(17)
    dashboardUrl = text(512, required=False)


class InstanceInfoOut(OutSchema):
    instanceId = text(64)
    appInfo = fields.Nested(AppInfoOut)
    usageInfo = fields.List(fields.Nested(UsageInfoOut))


class QueryInstanceOut(ResultOut):
    info = fields.List(fields.Nested(InstanceInfoOut), required=True)


RESULT_OUT = ResultOut()
REPLIES: dict[str, Schema] = {"newInstance": NewInstanceOut(), "queryInstance": QueryInstanceOut()}
