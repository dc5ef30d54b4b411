"""The settings of the web worker's limits, the rejected-call bounds and the access log, and how the
shipped gunicorn configuration reads them."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from isvserver.settings import SettingsError, load_settings

from support.harness import base_env

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "isvserver" / "web" / "gunicorn.conf.py"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path, f"sqlite:///{tmp_path / 'x.sqlite3'}")


def test_defaults(env: dict[str, str]) -> None:
    settings = load_settings(env)
    assert settings.first_byte_timeout_s == 5.0
    assert settings.pending_per_source == 1024
    assert settings.worker_connections == 4096
    assert settings.rejected_log_total_per_minute == 300
    assert settings.access_log is True


def test_values(env: dict[str, str]) -> None:
    settings = load_settings(
        {
            **env,
            "ISV_FIRST_BYTE_TIMEOUT_S": "1.5",
            "ISV_PENDING_PER_SOURCE": "16",
            "ISV_WORKER_CONNECTIONS": "4096",
            "ISV_REJECTED_LOG_TOTAL_PER_MINUTE": "0",
            "ISV_ACCESS_LOG": "0",
        }
    )
    assert settings.first_byte_timeout_s == 1.5
    assert settings.pending_per_source == 16
    assert settings.worker_connections == 4096
    assert settings.rejected_log_total_per_minute == 0
    assert settings.access_log is False
    assert load_settings({**env, "ISV_ACCESS_LOG": "1"}).access_log is True


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ISV_FIRST_BYTE_TIMEOUT_S", "0.05", "ISV_FIRST_BYTE_TIMEOUT_S must be between 0.1 and 60"),
        ("ISV_FIRST_BYTE_TIMEOUT_S", "61", "ISV_FIRST_BYTE_TIMEOUT_S must be between 0.1 and 60"),
        ("ISV_PENDING_PER_SOURCE", "0", "ISV_PENDING_PER_SOURCE must be between 1 and 100000"),
        ("ISV_WORKER_CONNECTIONS", "9", "ISV_WORKER_CONNECTIONS must be between 10 and 1000000"),
        ("ISV_REJECTED_LOG_TOTAL_PER_MINUTE", "-1", "must be between 0 and 10000000"),
        ("ISV_ACCESS_LOG", "off", "ISV_ACCESS_LOG must be 1 or 0"),
    ],
)
def test_out_of_range_is_refused_by_name(env: dict[str, str], name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({**env, name: value})
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("variables", "accesslog", "connections"),
    [
        ({}, "-", 4096),
        ({"ISV_ACCESS_LOG": "0", "ISV_WORKER_CONNECTIONS": "1000"}, None, 1000),
        ({"ISV_ACCESS_LOG": " False "}, None, 4096),
        ({"ISV_ACCESS_LOG": "no"}, None, 4096),
        ({"ISV_ACCESS_LOG": "1"}, "-", 4096),
    ],
)
def test_the_shipped_gunicorn_configuration_reads_them(
    monkeypatch, tmp_path: Path, variables: dict[str, str], accesslog: str | None, connections: int
) -> None:
    for name in ("ISV_ACCESS_LOG", "ISV_WORKER_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    conf = runpy.run_path(str(SHIPPED_CONF))
    assert conf["accesslog"] == accesslog
    assert conf["worker_connections"] == connections
    assert conf["worker_class"] == "isvserver.web.worker.BufferedThreadWorker"
