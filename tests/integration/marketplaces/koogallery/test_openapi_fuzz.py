"""The OpenAPI document, and schemathesis fuzzing against it: no 5xx, every reply signed and as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from isvserver.marketplaces.koogallery.marketplace import encode_body, signed_query
from isvserver.marketplaces.koogallery.schemas import ACTIVITIES
from isvserver.marketplaces.koogallery.signing import body_sign_valid
from isvserver.settings import Settings, load_settings
from isvserver.web import openapi

from support.harness import ACCESS_KEY, NOTIFY_KEY, base_env

AUTH_FAILED, INVALID, INTERNAL_ERROR = "000001", "000002", "000005"
RUN = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def load(coverage: bool) -> schemathesis.BaseSchema:
    """The document of the settings the `app` fixture runs with: fuzzing with valid and invalid inputs and,
    when `coverage`, schemathesis's boundary values of every field (valid ones only, to stay fast).

    Loaded at import because the test functions are parametrized with its operations
    (schemathesis.pytest.from_fixture fails on pytest 9: it sets Node._nodeid, which pytest 9 removed).
    Loading settings touches nothing on disk.
    """
    document = openapi.build_spec(load_settings(base_env(Path("instance"), "sqlite:///unused.sqlite3")))
    config: dict[str, Any] = {
        "generation": {"mode": "all"},
        "phases": {
            "examples": {"enabled": False},
            "coverage": {"enabled": coverage, "generation": {"mode": "positive"}},
            "stateful": {"enabled": False},
        },
    }
    return schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict(config))


signed_schema = load(coverage=True)
unsigned_schema = load(coverage=False).include(operation_id="produce")


@pytest.fixture
def served_app(app: Flask) -> Flask:
    """The app, which serves /openapi.json itself."""
    assert openapi.bp.name in app.blueprints
    return app


def wire_bytes(case: Case) -> bytes:
    """The body as the marketplace sends it; lone surrogates, which UTF-8 cannot carry, as escapes."""
    if isinstance(case.body, NotSet):
        return b""
    if isinstance(case.body, bytes):
        return case.body
    try:
        return encode_body(case.body)
    except UnicodeEncodeError:
        return json.dumps(case.body, sort_keys=True, separators=(",", ":")).encode("ascii")


def interface_key(case: Case, response: Response | None = None) -> str:
    """The key of the interface the call addresses, read from the body as sent: orderNotify has its own."""
    if response is not None and response.status_code in (405, 413):  # the body was not read
        return ACCESS_KEY
    body = case.body
    if isinstance(body, bytes):
        try:
            body = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return ACCESS_KEY
    return NOTIFY_KEY if isinstance(body, dict) and body.get("activity") == "orderNotify" else ACCESS_KEY


def sign(case: Case) -> None:
    """The signing hook: the body as bytes, and a valid signature, timestamp and nonce for exactly them."""
    case.body = wire_bytes(case)
    case.query = dict(parse_qsl(signed_query(interface_key(case), case.body)))


def is_produce(case: Case) -> bool:
    """Whether the case calls the produce endpoint (not /healthz, not an application part's path)."""
    return case.operation.method.upper() == "POST" and case.operation.path == "/saasproduce"


def result_code(response: Response) -> str:
    """The reply's resultCode."""
    return response.json()["resultCode"]


def reply_signed(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every produce reply carries a Body-Sign over its exact bytes, made with the interface's key."""
    if is_produce(case):
        header = response.headers.get("body-sign", [None])[0]
        assert body_sign_valid(interface_key(case, response), response.content, header), (
            f"Body-Sign {header!r} is not the interface key's signature of the reply"
        )


def authenticated_without_internal_error(ctx: CheckContext, response: Response, case: Case) -> None:
    """A correctly signed call is never refused authentication, nor answered with an internal error."""
    if is_produce(case):
        assert result_code(response) not in (AUTH_FAILED, INTERNAL_ERROR), response.text


def refused(ctx: CheckContext, response: Response, case: Case) -> None:
    """A call without a valid signature is refused: authentication failed or invalid request."""
    assert result_code(response) in (AUTH_FAILED, INVALID), response.text


CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    reply_signed,
]


def test_document_lists_every_activity_and_is_valid(settings: Settings) -> None:
    document = openapi.build_spec(settings)
    schemathesis.openapi.from_dict(document).validate()
    body = document["paths"][settings.of("koogallery").produce_path]["post"]["requestBody"]["content"][
        "application/json"
    ]
    assert set(body["schema"]["discriminator"]["mapping"]) == set(ACTIVITIES)
    assert len(body["schema"]["oneOf"]) == len(ACTIVITIES)


def test_openapi_json_is_served_without_a_signature(served_app: Flask, settings: Settings) -> None:
    response = served_app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.json == openapi.build_spec(settings)


@pytest.mark.parametrize(
    ("method", "oversized", "status"), [("DELETE", False, 405), ("PUT", False, 405), ("POST", True, 413)]
)
def test_wrong_method_and_oversized_body_get_signed_documented_replies(
    served_app: Flask, settings: Settings, method: str, oversized: bool, status: int
) -> None:
    body = b" " * (settings.max_body_bytes + 1) if oversized else b"{}"
    case = signed_schema[settings.of("koogallery").produce_path]["POST"].Case(method=method, body=body)
    sign(case)
    response = case.call_and_validate(app=served_app, checks=CONFORMANCE)
    assert response.status_code == status
    assert result_code(response) == INVALID


@signed_schema.parametrize()
@RUN
def test_signed_calls_get_signed_documented_replies(case: Case, served_app: Flask) -> None:
    if is_produce(case):
        sign(case)
        case.call_and_validate(app=served_app, checks=[*CONFORMANCE, authenticated_without_internal_error])
    else:
        case.call_and_validate(app=served_app, checks=CONFORMANCE)


@unsigned_schema.parametrize()
@RUN
def test_unsigned_calls_are_refused(case: Case, served_app: Flask) -> None:
    case.call_and_validate(app=served_app, checks=[*CONFORMANCE, refused])
