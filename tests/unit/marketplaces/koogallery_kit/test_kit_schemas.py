"""Kit sync request schemas (spec §8): every field, length, flag and format rule."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from marshmallow import ValidationError

from isvserver.marketplaces.koogallery_kit.schemas import REQUESTS, describe

COMMON = {"instanceId": "inst-1", "tenantId": "tenant-1", "testFlag": 0, "timeStamp": "20220420114117642"}
USER = {
    "userName": "zhangsan",
    "name": "张三",
    "orgCode": "dept-1",
    "position": "engineer",
    "employeeCode": "E001",
    "employeeType": 1,
    "role": "user",
    "enable": "true",
    "mobile": "13800000000",
    "email": "zhangsan@example.com",
    "workPlace": "Shenzhen",
}
VALID = {
    "tenantSync": {
        **COMMON,
        "orderId": "CS1",
        "tenantCode": "hw",
        "name": "华为",
        "domainName": "hw.example.com",
        "flag": 1,
    },
    "applicationSync": {
        **COMMON,
        "appId": "app-1",
        "clientId": "client-1",
        "clientSecret": "QUJD",
        "flag": 1,
    },
    "authSync": {
        **COMMON,
        "appId": "app-1",
        "userList": [USER],
        "currentSyncTime": "20220420114117642",
        "flag": 1,
    },
    "singleOrgSync": {**COMMON, "orgCode": "dept-1", "orgName": "研发部", "parentCode": "root", "flag": 2},
    "allOrgSync": {**COMMON, "orgInfoList": [{"orgCode": "root", "orgName": "总部"}]},
}
MANDATORY = {
    "tenantSync": [
        "instanceId",
        "tenantId",
        "orderId",
        "tenantCode",
        "name",
        "domainName",
        "flag",
        "testFlag",
    ],
    "applicationSync": ["instanceId", "tenantId", "appId", "clientId", "clientSecret", "flag", "timeStamp"],
    "authSync": ["instanceId", "tenantId", "appId", "userList", "flag", "testFlag", "timeStamp"],
    "singleOrgSync": ["instanceId", "tenantId", "orgCode", "orgName", "flag", "testFlag", "timeStamp"],
    "allOrgSync": ["instanceId", "tenantId", "orgInfoList", "testFlag", "timeStamp"],
}
LENGTHS = {
    "tenantSync": {
        "instanceId": 64,
        "tenantId": 64,
        "orderId": 64,
        "tenantCode": 64,
        "name": 255,
        "domainName": 255,
    },
    "applicationSync": {"appId": 64, "clientId": 64, "clientSecret": 2048},
    "authSync": {"appId": 64},
    "singleOrgSync": {"orgCode": 64, "orgName": 128, "parentCode": 64},
}


def load(path: str, body: dict[str, Any]) -> dict[str, Any]:
    return REQUESTS[path].load(body)


def problems(path: str, body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        load(path, body)
    return caught.value.messages


def test_every_path_has_a_schema() -> None:
    assert set(REQUESTS) == {"tenantSync", "applicationSync", "authSync", "singleOrgSync", "allOrgSync"}


@pytest.mark.parametrize("path", list(VALID))
def test_valid_bodies_load_with_snake_case_names_and_unknown_fields_ignored(path: str) -> None:
    data = load(path, {**VALID[path], "futureField": "x"})
    assert data["instance_id"] == "inst-1" and data["tenant_id"] == "tenant-1"
    assert data["test_flag"] == 0 and data["time_stamp"] == "20220420114117642"
    assert "futureField" not in data and "future_field" not in data


def test_tenant_sync_fields() -> None:
    data = load("tenantSync", VALID["tenantSync"])
    assert (data["order_id"], data["tenant_code"], data["name"], data["domain_name"], data["flag"]) == (
        "CS1",
        "hw",
        "华为",
        "hw.example.com",
        1,
    )


@pytest.mark.parametrize(("path", "field"), [(p, f) for p, names in MANDATORY.items() for f in names])
def test_mandatory_fields_missing_or_null(path: str, field: str) -> None:
    body = {k: v for k, v in VALID[path].items() if k != field}
    assert field in problems(path, body)
    assert field in problems(path, {**VALID[path], field: None})


@pytest.mark.parametrize(
    ("path", "field"),
    [(p, f) for p, names in MANDATORY.items() for f in names if isinstance(VALID[p][f], str)],
)
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_mandatory_strings_may_not_be_blank(path: str, field: str, blank: str) -> None:
    assert field in problems(path, {**VALID[path], field: blank})


@pytest.mark.parametrize(
    ("path", "field", "limit"), [(p, f, n) for p, d in LENGTHS.items() for f, n in d.items()]
)
def test_max_lengths(path: str, field: str, limit: int) -> None:
    assert load(path, {**VALID[path], field: "x" * limit})
    assert field in problems(path, {**VALID[path], field: "x" * (limit + 1)})


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("tenantSync", (0, 1, 2)),
        ("applicationSync", (0, 1, 2)),
        ("singleOrgSync", (0, 1, 2)),
        ("authSync", (0, 1, 2, 3)),
    ],
)
def test_flag_values(path: str, allowed: tuple[int, ...]) -> None:
    for flag in allowed:
        assert load(path, {**VALID[path], "flag": flag})["flag"] == flag
    for flag in (-1, max(allowed) + 1, "1", True, False, 1.5, 1.0, None, [1]):
        assert "flag" in problems(path, {**VALID[path], "flag": flag}), flag


@pytest.mark.parametrize("path", list(VALID))
def test_test_flag_is_an_integer_zero_or_one(path: str) -> None:
    assert load(path, {**VALID[path], "testFlag": 1})["test_flag"] == 1
    for value in ("1", "0", True, 2, -1, 0.5):
        assert "testFlag" in problems(path, {**VALID[path], "testFlag": value}), value


@pytest.mark.parametrize(
    "value",
    [
        "2022042011411764",
        "202204201141176420",
        "20221320114117642",
        "20220230114117642",
        "2022042011411764x",
        1,
        "",
    ],
)
def test_time_stamp_must_be_17_digits_naming_a_real_moment(value: Any) -> None:
    assert "timeStamp" in problems("tenantSync", {**VALID["tenantSync"], "timeStamp": value})


def test_user_list_fields_and_defaults() -> None:
    minimal = {k: USER[k] for k in ("userName", "name", "orgCode", "role", "enable")}
    data = load("authSync", {**VALID["authSync"], "userList": [USER, {**minimal, "enable": "false"}]})
    first, second = data["user_list"]
    assert first == {
        "user_name": "zhangsan",
        "name": "张三",
        "org_code": "dept-1",
        "position": "engineer",
        "employee_code": "E001",
        "employee_type": 1,
        "role": "user",
        "enabled": True,
        "mobile": "13800000000",
        "email": "zhangsan@example.com",
        "work_place": "Shenzhen",
    }
    assert second["enabled"] is False and second["mobile"] is None and second["employee_type"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("userName", ""),
        ("userName", "u" * 65),
        ("name", " "),
        ("name", "n" * 65),
        ("orgCode", "o" * 65),
        ("role", "root"),
        ("role", "Admin"),
        ("enable", True),
        ("enable", "yes"),
        ("enable", "True"),
        ("employeeType", "1"),
        ("employeeType", True),
        ("mobile", "1" * 33),
        ("email", "e" * 129),
        ("position", "p" * 65),
        ("employeeCode", "c" * 65),
        ("workPlace", "w" * 129),
    ],
)
def test_user_entry_rules(field: str, value: Any) -> None:
    messages = problems("authSync", {**VALID["authSync"], "userList": [USER, {**USER, field: value}]})
    assert field in messages["userList"][1]
    assert 0 not in messages["userList"]


def test_user_entry_mandatory_fields() -> None:
    for field in ("userName", "name", "orgCode", "role", "enable"):
        entry = {k: v for k, v in USER.items() if k != field}
        assert field in problems("authSync", {**VALID["authSync"], "userList": [entry]})["userList"][0]


def test_user_list_holds_one_to_500_entries() -> None:
    users = [{**USER, "userName": f"u{i}"} for i in range(500)]
    assert len(load("authSync", {**VALID["authSync"], "userList": users})["user_list"]) == 500
    assert "userList" in problems("authSync", {**VALID["authSync"], "userList": [*users, USER]})
    assert "userList" in problems("authSync", {**VALID["authSync"], "userList": []})
    assert "userList" in problems("authSync", {**VALID["authSync"], "userList": "[]"})
    assert "userList" in problems("authSync", {**VALID["authSync"], "userList": ["x"]})


def test_org_info_list_as_list_or_json_string() -> None:
    orgs = [
        {"orgCode": "root", "orgName": "总部"},
        {"orgCode": "d1", "orgName": "研发", "parentCode": "root"},
    ]
    expected = [
        {"org_code": "root", "org_name": "总部", "parent_code": None},
        {"org_code": "d1", "org_name": "研发", "parent_code": "root"},
    ]
    assert load("allOrgSync", {**VALID["allOrgSync"], "orgInfoList": orgs})["org_info_list"] == expected
    as_text = json.dumps(orgs, ensure_ascii=False)
    assert load("allOrgSync", {**VALID["allOrgSync"], "orgInfoList": as_text})["org_info_list"] == expected
    assert load("allOrgSync", {**VALID["allOrgSync"], "orgInfoList": "[]"})["org_info_list"] == []


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"orgCode":"a"}',
        "null",
        '[{"orgCode":"a"}]',
        [{"orgName": "x"}],
        [{"orgCode": "a" * 65, "orgName": "x"}],
        [{"orgCode": "a", "orgName": "x" * 129}],
        [{"orgCode": "a", "orgName": "x", "parentCode": "p" * 65}],
        5,
    ],
)
def test_org_info_list_rules(value: Any) -> None:
    assert "orgInfoList" in problems("allOrgSync", {**VALID["allOrgSync"], "orgInfoList": value})


def test_optional_parent_code_may_be_absent_empty_or_null() -> None:
    body = copy.deepcopy(VALID["singleOrgSync"])
    del body["parentCode"]
    assert load("singleOrgSync", body)["parent_code"] is None
    assert load("singleOrgSync", {**body, "parentCode": ""})["parent_code"] == ""
    assert load("singleOrgSync", {**body, "parentCode": None})["parent_code"] is None


def test_describe_names_fields_and_rules_but_no_values() -> None:
    secret_mobile = "13912345678" * 4
    messages = problems(
        "authSync",
        {
            **VALID["authSync"],
            "instanceId": "",
            "userList": [{**USER, "mobile": secret_mobile, "role": "boss"}],
        },
    )
    text = describe(messages)
    assert "instanceId: may not be empty" in text
    assert "userList[0].mobile: Longer than maximum length 32." in text
    assert "userList[0].role:" in text
    assert secret_mobile not in text and "boss" not in text
    assert len(describe({f"f{i}": ["x" * 50] for i in range(20)})) == 255
    assert describe({"_schema": ["Invalid input type."]}) == "_schema: Invalid input type."
    assert describe("oops") == "body: invalid"
