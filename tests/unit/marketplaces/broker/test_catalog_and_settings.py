"""The broker's catalog and settings: read at start-up, every problem named, the seed's example valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isvserver.marketplaces.broker.catalog import EXAMPLE, CatalogError, build, load
from isvserver.settings import SettingsError, load_settings

from support.harness import base_env


def test_the_shipped_example_is_the_seeds_catalog_with_its_secret_parameter() -> None:
    catalog = load(EXAMPLE)
    plan = catalog.plan("$CP_DS__AppCubeBrokerDemo_b", "003M000000ppqFT7kFRQ")
    assert plan is not None and plan.secrets == frozenset({"client_secret"})
    assert not plan.updateable
    assert plan.validate({"client_id": "a", "client_secret": "b"}) == []
    assert plan.validate({"client_id": "a"}) == ["parameters: required missing client_secret"]
    assert plan.validate({"client_id": 5, "client_secret": "b"}) == ["client_id: type not met"]
    assert catalog.plan("nope", "003M000000ppqFT7kFRQ") is None
    assert catalog.plan(None, None) is None
    assert json.loads(catalog.body) == catalog.document


def test_every_problem_of_a_catalog_is_named_at_once() -> None:
    plan = {"id": "p", "name": "p", "description": ""}
    service = {"id": "s", "name": "s", "description": "", "bindable": False, "plans": [plan, plan]}
    with pytest.raises(CatalogError) as raised:
        build({"services": [service, service]})
    message = str(raised.value)
    assert "services.1.id: 's' is used twice" in message
    assert "services.1.name: 's' is used twice" in message
    assert "plans.1.id: 'p' is used twice in the service" in message

    with pytest.raises(
        CatalogError,
        match=r"services.0.bindable: 'no' is not of type 'boolean'; .*services.0: 'plans' is a required",
    ):
        build({"services": [{"id": "s", "name": "s", "description": "", "bindable": "no"}]})
    bad_schema = {**plan, "schemas": {"service_instance": {"create": {"parameters": {"type": "nonsense"}}}}}
    with pytest.raises(CatalogError, match=r"create\.parameters: not a JSON schema"):
        build({"services": [{**service, "plans": [bad_schema]}]})
    with pytest.raises(CatalogError, match="document: 'services' is a required property"):
        build({})


def test_a_catalog_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot be read"):
        load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("services: [\n  - id: {", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML or JSON at line"):
        load(broken)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b"\xff\xfe")
    with pytest.raises(CatalogError, match="not UTF-8"):
        load(latin)
    not_json = tmp_path / "c.json"
    not_json.write_text("{", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML or JSON"):
        load(not_json)


def test_production_needs_a_catalog_and_distinct_paths(tmp_path: Path) -> None:
    env = {**base_env(tmp_path, "sqlite:///x.sqlite3"), "ISV_MARKETPLACES": "koogallery,broker"}
    with pytest.raises(SettingsError, match="ISV_BROKER_CATALOG is required in production"):
        load_settings(env)
    env["ISV_BROKER_CATALOG"] = str(EXAMPLE)
    settings = load_settings(env).of("broker")
    assert (settings.path, settings.token_path, settings.token_ttl_s) == (
        "/broker",
        "/baas/auth/v1.0/oauth2/token",
        3600,
    )
    with pytest.raises(SettingsError, match="ISV_BROKER_TOKEN_PATH must differ"):
        load_settings({**env, "ISV_BROKER_TOKEN_PATH": "/broker/"})
    with pytest.raises(SettingsError, match=r"ISV_BROKER_CATALOG: .*missing.yaml: cannot be read"):
        load_settings({**env, "ISV_BROKER_CATALOG": str(tmp_path / "missing.yaml")})
    development = {**env, "ISV_ENV": "development"}
    del development["ISV_BROKER_CATALOG"]
    assert load_settings(development).of("broker").catalog.plans
