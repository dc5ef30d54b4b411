"""The adapter registry, ISV_MARKETPLACES and the after-commit collector (no HTTP, no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from isvserver import deferred
from isvserver.adapters import Adapter, AdapterError, load
from isvserver.settings import SettingsError, load_settings

from support.harness import base_env


def test_adapters_are_found_by_name() -> None:
    adapter = load("koogallery")
    assert isinstance(adapter, Adapter)
    assert adapter.name == "koogallery"
    assert [i.env_var for i in adapter.key_interfaces] == ["ISV_ACCESS_KEYS", "ISV_NOTIFY_KEYS"]


@pytest.mark.parametrize("name", ["no_such_adapter", "../etc", "koogallery.views", ""])
def test_an_unknown_adapter_is_refused_by_name(name: str) -> None:
    with pytest.raises(AdapterError, match="ISV_MARKETPLACES"):
        load(name)


def test_isv_marketplaces_defaults_to_koogallery(tmp_path: Path) -> None:
    settings = load_settings(base_env(tmp_path, "sqlite:///x.sqlite3"))
    assert settings.marketplaces == ("koogallery",)
    assert settings.of("koogallery").produce_path == "/saasproduce"


def test_an_unknown_marketplace_stops_start_up(tmp_path: Path) -> None:
    env = {**base_env(tmp_path, "sqlite:///x.sqlite3"), "ISV_MARKETPLACES": "koogallery,nowhere"}
    with pytest.raises(SettingsError, match="there is no adapter 'nowhere'"):
        load_settings(env)


def test_keys_of_two_interfaces_must_differ(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite:///x.sqlite3")
    env["ISV_NOTIFY_KEYS"] = env["ISV_ACCESS_KEYS"].split(",")[0]
    with pytest.raises(SettingsError, match="ISV_NOTIFY_KEYS must differ from ISV_ACCESS_KEYS"):
        load_settings(env)


def test_after_commit_runs_at_once_outside_a_call() -> None:
    ran: list[str] = []
    deferred.after_commit(lambda: ran.append("now"))
    assert ran == ["now"]


def test_after_commit_steps_wait_for_the_collector() -> None:
    ran: list[str] = []
    with deferred.collecting() as steps:
        deferred.after_commit(lambda: ran.append("later"))
        assert ran == []
    assert len(steps) == 1
    steps[0]()
    assert ran == ["later"]
    deferred.after_commit(lambda: ran.append("again"))
    assert ran == ["later", "again"]


def test_a_deployment_without_koogallery_needs_none_of_its_keys(tmp_path: Path) -> None:
    """Only the Kit adapter: production starts with its key and private key alone, and serves only it."""
    from isvserver import create_app
    from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair

    env = base_env(tmp_path, f"sqlite:///{tmp_path / 'kit.sqlite3'}")
    for name in ("ISV_ACCESS_KEYS", "ISV_NOTIFY_KEYS"):
        env.pop(name)
    env.update(
        ISV_MARKETPLACES="koogallery_kit",
        ISV_KIT_KEYS="kit-key-1234567890",
        ISV_KIT_PRIVATE_KEY=generate_key_pair()[0].decode("ascii"),
    )
    settings = load_settings(env)
    assert settings.marketplaces == ("koogallery_kit",)
    assert settings.keys("basic") == ()
    client = create_app(settings).test_client()
    basic = client.post("/saasproduce", data=b"{}")
    assert (basic.status_code, basic.get_json()) == (
        404,
        {
            "error": "not found",
            "status": 404,
            "hint": "the marketplace calls POST /saasproduce/produceAPI (its path is ISV_PRODUCE_PATH)",
        },
    )
    assert "Body-Sign" not in basic.headers
    assert client.post("/saasproduce/produceAPI/v2/nope").headers["Body-Sign"].startswith('sign_type="HMAC')


def test_production_names_the_kit_private_key(tmp_path: Path) -> None:
    env = {
        **base_env(tmp_path, "sqlite:///x.sqlite3"),
        "ISV_MARKETPLACES": "koogallery,koogallery_kit",
        "ISV_KIT_KEYS": "kit-key-1234567890",
    }
    with pytest.raises(SettingsError, match="ISV_KIT_PRIVATE_KEY"):
        load_settings(env)


def test_an_adapter_may_have_no_inbound_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isvserver import create_app
    from isvserver.adapters import ExpiryPolicy

    reader = Adapter(name="reader", expiry_policy=ExpiryPolicy.FREEZE)
    kept = load("koogallery")
    monkeypatch.setattr("isvserver.adapters.load_all", lambda names: (kept, reader))
    # No application part either (ISV_PARTS=none): only the adapters' blueprints are counted below.
    settings = load_settings(base_env(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite3'}", ISV_PARTS="none"))

    app = create_app(settings)

    assert reader.mounts == ()
    assert app.test_client().get("/healthz").status_code == 200
    assert sorted(bp for bp in app.blueprints if bp not in ("health", "metrics", "openapi")) == [
        "koogallery",
        "koogallery_v1",  # KooGallery V1's GET on the same production URL
    ]
