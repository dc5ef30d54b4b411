"""marshmallow schemas of the five Kit sync requests (spec §8): fields, lengths, flags; unknown ignored.

Loaded data uses snake_case names (`instance_id`, `user_list`, …); `enable` loads as the bool `enabled`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from isvserver import calls
from isvserver.calls import load_json

MAX_USERS = 500
TENANT_FLAGS = (0, 1, 2)  # delete, add, modify
USER_FLAGS = (0, 1, 2, 3)  # delete, add, modify, revoke
TEST_FLAGS = (0, 1)
ROLES = ("user", "admin")


class Text(fields.String):
    """A string of at most `max_length` characters that both databases can store (no NUL, no lone
    surrogate); a mandatory one may not be empty or only whitespace."""

    def __init__(self, max_length: int, required: bool = True, **kwargs: Any) -> None:
        if not required:
            kwargs.setdefault("load_default", None)
            kwargs.setdefault("allow_none", True)
        super().__init__(required=required, validate=validate.Length(max=max_length), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not calls.storable(text):
            raise ValidationError("is not valid text")
        if self.required and not text.strip():
            raise ValidationError("may not be empty")
        return text


# The range of an INTEGER column in both databases (PostgreSQL's is 32 bits).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class JsonInt(fields.Integer):
    """A JSON integer an INTEGER column holds: booleans, strings and fractional numbers are refused."""

    def __init__(self, choices: tuple[int, ...] | None = None, **kwargs: Any) -> None:
        checks = [validate.OneOf(choices) if choices else validate.Range(INT_MIN, INT_MAX)]
        super().__init__(strict=True, validate=checks, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("must be a JSON integer")
        return super()._deserialize(value, attr, data, **kwargs)


class TrueFalse(fields.Field):
    """The strings "true" / "false" (as the marketplace sends `enable`), loaded as a bool."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value not in ("true", "false"):
            raise ValidationError('must be "true" or "false"')
        return value == "true"


class TimeStamp(fields.String):
    """`yyyyMMddHHmmssSSS` (17 digits, e.g. 20220420114117642) that names a real moment; kept as text."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) != 17 or not text.isascii() or not text.isdigit():
            raise ValidationError("must be yyyyMMddHHmmssSSS (17 digits)")
        try:
            datetime.strptime(text[:14], "%Y%m%d%H%M%S")
        except ValueError:
            raise ValidationError("is not a real date and time") from None
        return text


class JsonList(fields.List):
    """A JSON array, or a string holding one (allOrgSync's `orgInfoList` is seen both ways)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, str):
            try:
                value = load_json(value)
            except ValueError:
                raise ValidationError("must be a JSON array or a string holding one") from None
            if not isinstance(value, list):
                raise ValidationError("must be a JSON array or a string holding one")
            if not calls.storable(value):
                raise ValidationError("holds characters that are not valid text")
        return super()._deserialize(value, attr, data, **kwargs)


class SyncIn(Schema):
    """Fields every Kit sync carries."""

    class Meta:
        unknown = EXCLUDE

    instance_id = Text(64, data_key="instanceId")
    tenant_id = Text(64, data_key="tenantId")
    test_flag = JsonInt(TEST_FLAGS, required=True, data_key="testFlag")
    time_stamp = TimeStamp(required=True, data_key="timeStamp")


class TenantSyncIn(SyncIn):
    order_id = Text(64, data_key="orderId")
    tenant_code = Text(64, data_key="tenantCode")
    name = Text(255)
    domain_name = Text(255, data_key="domainName")
    flag = JsonInt(TENANT_FLAGS, required=True)


class ApplicationSyncIn(SyncIn):
    app_id = Text(64, data_key="appId")
    client_id = Text(64, data_key="clientId")
    client_secret = Text(2048, data_key="clientSecret")  # Base64 RSA ciphertext: 512 chars at 3072 bits
    flag = JsonInt(TENANT_FLAGS, required=True)


class UserIn(Schema):
    """One entry of authSync's `userList`."""

    class Meta:
        unknown = EXCLUDE

    user_name = Text(64, data_key="userName")
    name = Text(64)
    org_code = Text(64, data_key="orgCode")
    position = Text(64, required=False)
    employee_code = Text(64, required=False, data_key="employeeCode")
    employee_type = JsonInt(load_default=None, allow_none=True, data_key="employeeType")
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    enabled = TrueFalse(required=True, data_key="enable")
    mobile = Text(32, required=False)
    email = Text(128, required=False)
    work_place = Text(128, required=False, data_key="workPlace")


class AuthSyncIn(SyncIn):
    app_id = Text(64, data_key="appId")
    user_list = fields.List(
        fields.Nested(UserIn),
        required=True,
        validate=validate.Length(min=1, max=MAX_USERS),
        data_key="userList",
    )
    current_sync_time = Text(32, required=False, data_key="currentSyncTime")
    flag = JsonInt(USER_FLAGS, required=True)


class OrgIn(Schema):
    """One department: singleOrgSync's body fields, allOrgSync's list entries."""

    class Meta:
        unknown = EXCLUDE

    org_code = Text(64, data_key="orgCode")
    org_name = Text(128, data_key="orgName")
    parent_code = Text(64, required=False, data_key="parentCode")


class SingleOrgSyncIn(SyncIn, OrgIn):
    flag = JsonInt(TENANT_FLAGS, required=True)


class AllOrgSyncIn(SyncIn):
    org_info_list = JsonList(fields.Nested(OrgIn), required=True, data_key="orgInfoList")


REQUESTS: dict[str, Schema] = {
    "tenantSync": TenantSyncIn(),
    "applicationSync": ApplicationSyncIn(),
    "authSync": AuthSyncIn(),
    "singleOrgSync": SingleOrgSyncIn(),
    "allOrgSync": AllOrgSyncIn(),
}


def describe(messages: Any) -> str:
    """`field: problem; …` from a ValidationError's messages (names and rules, never values), ≤ 255 chars."""
    return calls.describe(messages, 255)
