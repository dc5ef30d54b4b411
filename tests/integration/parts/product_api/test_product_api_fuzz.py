"""schemathesis against POST /v1/usage as /openapi.json documents it, with a valid product token: no 5xx,
every answer of a documented status, content type and schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from isvserver.parts.product_api import tokens
from isvserver.settings import load_settings
from isvserver.web import openapi

from support.harness import base_env

RUN = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def load() -> schemathesis.BaseSchema:
    """The document of the test settings, POST /v1/usage only (loaded at import: see test_openapi_fuzz)."""
    document = openapi.build_spec(load_settings(base_env(Path("instance"), "sqlite:///unused.sqlite3")))
    config: dict[str, Any] = {
        "generation": {"mode": "all"},
        "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
    }
    schema = schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict(config))
    return schema.include(operation_id="postUsage")


schema = load()


@pytest.fixture
def token(app: Flask) -> str:
    return tokens.add("fuzz")


@schema.parametrize()
@RUN
def test_post_usage_answers_as_documented(case: Case, app: Flask, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call_and_validate(app=app, checks=CHECKS)
    if case.method.upper() != "POST":  # schemathesis tries the other methods too
        assert response.status_code == 405, response.text
    else:
        assert response.status_code in (200, 400, 413), response.text
