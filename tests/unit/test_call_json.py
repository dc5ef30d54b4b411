"""What the call pipeline accepts as a body before any adapter sees it: JSON objects, nested at most
MAX_DEPTH levels, no NaN or Infinity, and text both databases can store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isvserver.calls import MAX_DEPTH, load_json, nested_deeper_than, parse_json_object, storable


def lists(depth: int) -> Any:
    """A value of exactly `depth` nested lists: [[…]]."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def objects(depth: int) -> Any:
    """A value of exactly `depth` nested objects, with a scalar beside each level."""
    value: Any = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": 0, "child": value}
    return value


@pytest.mark.parametrize("make", [lists, objects], ids=["lists", "objects"])
def test_nesting_up_to_the_limit_is_accepted_and_one_more_refused(make) -> None:
    assert MAX_DEPTH == 32
    assert nested_deeper_than(make(MAX_DEPTH)) is False
    assert nested_deeper_than(make(MAX_DEPTH + 1)) is True
    assert nested_deeper_than(make(3), limit=3) is False
    assert nested_deeper_than(make(4), limit=3) is True
    text = json.dumps(make(MAX_DEPTH))
    assert load_json(text) == make(MAX_DEPTH)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_json(json.dumps(make(MAX_DEPTH + 1)))


def test_depth_counts_the_deepest_branch_only() -> None:
    wide = {"a": lists(MAX_DEPTH - 1), "b": [1, 2, 3], "c": "text"}
    assert nested_deeper_than(wide) is False
    assert nested_deeper_than({"a": [1], "b": lists(MAX_DEPTH)}) is True
    assert nested_deeper_than([{"x": 1}, lists(MAX_DEPTH)]) is True
    assert nested_deeper_than("scalar", limit=0) is False
    assert nested_deeper_than([], limit=0) is True


def test_nesting_past_the_interpreters_limit_is_refused_not_raised() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        load_json("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_json(constant: str) -> None:
    with pytest.raises(ValueError, match=constant):
        load_json(f'{{"n": {constant}}}')
    assert parse_json_object(f'{{"n": {constant}}}'.encode()) is None


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b'{"activity": "queryInstance"}', {"activity": "queryInstance"}),
        ('{"name": "张三"}'.encode(), {"name": "张三"}),
        (b"[1, 2]", None),
        (b'"text"', None),
        (b"null", None),
        (b"", None),
        (b"{not json}", None),
        ('{"name": "张三"}'.encode("gbk"), None),
        (json.dumps(lists(MAX_DEPTH + 1)).encode(), None),
    ],
    ids=["object", "utf-8", "array", "string", "null", "empty", "not-json", "not-utf-8", "too-deep"],
)
def test_a_body_is_a_json_object_or_nothing(raw: bytes, parsed: dict | None) -> None:
    assert parse_json_object(raw) == parsed


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ({"name": "张三 😀", "n": 1, "list": ["a", None, 2.5]}, True),
        ({"path": "C:\\u0000\\x"}, True),  # a backslash and "u0000" as text: six characters, no NUL
        ({"path": "C:\\\\u0000"}, True),
        ({"name": "a\x00b"}, False),
        ({"name": "\\\x00"}, False),
        ({"a\x00": 1}, False),
        ({"deep": [{"name": "x\x00"}]}, False),
        ({"name": "\ud800"}, False),
        ({"deep": ["ok", {"k": "\udfff"}]}, False),
        ({"\udc00": 1}, False),
    ],
    ids=[
        "text",
        "escaped-looking-text",
        "escaped-backslash-text",
        "nul",
        "backslash-then-nul",
        "nul-in-key",
        "nested-nul",
        "lone-surrogate",
        "nested-surrogate",
        "surrogate-in-key",
    ],
)
def test_storable_text_has_no_nul_and_no_lone_surrogate(value: dict, ok: bool) -> None:
    assert storable(value) is ok


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ({"a": ["bad"], "b": ["worse", "worst"]}, "a: bad; b: worse"),
        (["oops"], "body: oops"),
        ({"_schema": ["Invalid input type."]}, "_schema: Invalid input type."),
        ({"userList": {3: {"email": ["Not a valid email."]}}}, "userList[3].email: Not a valid email."),
        ({"orgInfoList": [{"orgCode": ["Missing."]}]}, "orgInfoList.orgCode: Missing."),
        ({"a": {"b": {"c": ["deep"]}}}, "a.b.c: deep"),
        ({"a": []}, "a: invalid"),
        ({0: ["first"]}, "[0]: first"),
        ("oops", "body: invalid"),
    ],
    ids=["fields", "top-list", "schema", "nested-index", "list-of-dicts", "nested", "empty", "index", "text"],
)
def test_validation_messages_are_described_by_field_path(messages: Any, text: str) -> None:
    from isvserver.calls import describe

    assert describe(messages) == text


def test_a_description_is_cut_at_its_limit() -> None:
    from isvserver.calls import describe

    messages = {f"field{i}": ["x" * 30] for i in range(20)}
    assert len(describe(messages)) == 200
    assert describe(messages).startswith("field0: " + "x" * 30 + "; field1: ")
    assert describe(messages, limit=10) == "field0: xx"
