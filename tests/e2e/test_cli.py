"""The `isvserver` command as an operator runs it: migrate, serve (development and production), sign,
simulate."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from isvserver.keystore import AccessKey

from support.harness import base_env
from support.server import (
    CliResult,
    Server,
    db_count,
    db_rows,
    free_port,
    is_listening,
    post_signed,
    run_cli,
    running_server,
    subprocess_env,
)
from support.tables import ALL_MODELS, LABELS, SHIPPED

pytestmark = pytest.mark.e2e

TABLES = {model._meta.table_name for model in (*ALL_MODELS, AccessKey)} | {"schema_version"}

# spec §2.1 (the newInstance example) and §4 (its known signature with key test-access-key)
EXAMPLE_BODY = (
    '{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8",'
    '"orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}'
)
EXAMPLE_TIMESTAMP = "1680508066618"
EXAMPLE_NONCE = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA"
EXAMPLE_SIGNATURE = "271544ACDAC82601D0A6615631C4DB54120D5EA32FC968493C8064281E125C7A"
SPEC_KEY = "test-access-key"  # the key of that known answer


def _tables(url: str) -> set[str]:
    if url.startswith("sqlite:"):
        return {r[0] for r in db_rows(url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {
        r[0]
        for r in db_rows(
            url, "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", ("public",)
        )
    }


def _answer(result: CliResult) -> dict[str, Any]:
    """The JSON that `isvserver simulate ACTIVITY` printed after `HTTP …, Body-Sign …, `."""
    line = next((ln for ln in result.stdout.splitlines() if ", Body-Sign " in ln), None)
    assert line is not None, result.describe()
    return json.loads(line[line.index("{") :])


# --- migrate -------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migrate_fresh_database_then_current(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The first run applies 0001_initial and says so; the second says the schema is current."""
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh' / 'isvserver.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"isv_fresh_{uuid.uuid4().hex[:10]}")
    env = subprocess_env(base_env(tmp_path, url))

    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.describe()
    assert "0001_initial" in first.output, first.describe()
    assert _tables(url) >= TABLES
    assert db_rows(url, "SELECT version, name FROM schema_version ORDER BY version") == SHIPPED

    second = run_cli("migrate", env=env)
    assert second.returncode == 0, second.describe()
    assert "schema is current" in second.output, second.describe()
    assert "0001_initial" not in second.output, second.describe()
    assert db_count(url, "schema_version") == len(SHIPPED)


def test_migrate_unreachable_database_fails_in_one_line_without_password(tmp_path: Path) -> None:
    """PostgreSQL on a closed port: non-zero exit, one line naming the problem, the password hidden."""
    password = "Pw-" + uuid.uuid4().hex
    port = free_port()
    url = f"postgresql://isv:{password}@127.0.0.1:{port}/isvserver"
    result = run_cli("migrate", env=subprocess_env(base_env(tmp_path, url)), timeout=30)
    assert result.returncode != 0, result.describe()
    assert password not in result.output, result.describe()
    assert "Traceback" not in result.output, result.describe()
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line message, got {len(lines)} lines:\n{result.output}"
    assert "migration failed" in lines[0] and f"127.0.0.1:{port}" in lines[0], result.describe()


# --- serve: development and production -----------------------------------------------------------


def test_development_mode_generates_keys_once_and_reuses_them(tmp_path: Path) -> None:
    """No ISV_* variable but ISV_INSTANCE_DIR: keys generated, printed once on stderr, kept in
    instance/development-keys.json, reused (not printed) on the next start; simulate uses them."""
    work = tmp_path / "work"
    work.mkdir()
    instance = work / "instance"
    keys_file = instance / "development-keys.json"
    env = subprocess_env({"ISV_INSTANCE_DIR": str(instance)})
    assert not [k for k in env if k.startswith("ISV_") and k != "ISV_INSTANCE_DIR"]

    first_out = tmp_path / "first.stdout"
    with running_server(env, tmp_path / "first.log", cwd=work, workers=1, stdout_path=first_out) as first:
        keys = json.loads(keys_file.read_text(encoding="utf-8"))
        assert set(keys) >= {"ISV_ACCESS_KEYS", "ISV_NOTIFY_KEYS", "ISV_DATA_KEY"}, keys.keys()
        log = first.read_log()
        assert log.count(keys["ISV_ACCESS_KEYS"]) == 1, log
        assert log.count(keys["ISV_NOTIFY_KEYS"]) == 1, log
        assert keys["ISV_DATA_KEY"] not in log
        assert str(keys_file) in log
        stdout = first_out.read_text(encoding="utf-8")
        assert keys["ISV_ACCESS_KEYS"] not in stdout, "keys printed on stdout, not stderr"
        assert stat.S_IMODE(keys_file.stat().st_mode) & 0o077 == 0, "the keys file is readable by others"

        flow = run_cli("simulate", "flow", first.url, env=env, cwd=work)
        assert flow.returncode == 0, flow.describe()
        assert "all answers right" in flow.output, flow.describe()
    assert sorted(os.listdir(work)) == ["instance"], "wrote outside the instance folder"
    saved = keys_file.read_bytes()

    with running_server(env, tmp_path / "second.log", cwd=work, workers=1) as second:
        log = second.read_log()
        assert keys["ISV_ACCESS_KEYS"] not in log and keys["ISV_NOTIFY_KEYS"] not in log, log
        assert "keys from" in log and str(keys_file) in log, log
        assert "generated" not in log, log
        again = run_cli("simulate", "newInstance", second.url, env=env, cwd=work)
        assert again.returncode == 0, again.describe()
    assert keys_file.read_bytes() == saved, "the keys changed on the second start"


def test_production_without_access_keys_refuses_to_start(tmp_path: Path) -> None:
    """ISV_ENV=production and no ISV_ACCESS_KEYS: a message naming it, non-zero exit, nothing listening."""
    isv = base_env(tmp_path, f"sqlite:///{tmp_path / 'isvserver.sqlite3'}")
    del isv["ISV_ACCESS_KEYS"]
    port = free_port()
    result = run_cli("serve", "--bind", f"127.0.0.1:{port}", "--workers", "1", env=subprocess_env(isv))
    assert result.returncode != 0, result.describe()
    assert "ISV_ACCESS_KEYS" in result.output, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert not is_listening(port)
    assert not (tmp_path / "instance" / "development-keys.json").exists(), "production generated keys"


# --- sign ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["text", "file", "stdin"])
def test_sign_prints_the_known_signature(source: str, tmp_path: Path) -> None:
    """spec §2.1/§4: the newInstance example with key test-access-key has the published signature."""
    body_file = tmp_path / "body.json"
    body_file.write_bytes(EXAMPLE_BODY.encode("utf-8"))
    body_arg = {"text": EXAMPLE_BODY, "file": f"@{body_file}", "stdin": "-"}[source]
    result = run_cli(
        "sign", "--key", SPEC_KEY, "--body", body_arg,
        "--timestamp", EXAMPLE_TIMESTAMP, "--nonce", EXAMPLE_NONCE,
        env=subprocess_env(), stdin=EXAMPLE_BODY if source == "stdin" else None,
    )  # fmt: skip
    assert result.returncode == 0, result.describe()
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert fields["signature"].strip() == EXAMPLE_SIGNATURE, result.describe()
    assert fields["timestamp"].strip() == EXAMPLE_TIMESTAMP
    assert fields["nonce"].strip() == EXAMPLE_NONCE
    query = f"?signature={EXAMPLE_SIGNATURE}&timestamp={EXAMPLE_TIMESTAMP}&nonce={EXAMPLE_NONCE}"
    assert query in result.stdout, result.describe()
    body_sign = base64.b64encode(
        hmac.new(SPEC_KEY.encode(), EXAMPLE_BODY.encode(), hashlib.sha256).digest()
    ).decode()
    assert f'signature="{body_sign}"' in result.stdout, result.describe()


# --- simulate ------------------------------------------------------------------------------------


def test_simulate_single_activities(server: Server) -> None:
    """newInstance then queryInstance (password masked unless --show-secrets); a failing call exits 1."""
    order_id = "X" + uuid.uuid4().hex[:10].upper()
    created = run_cli(
        "simulate",
        "newInstance",
        server.url,
        f"orderId={order_id}",
        f"orderLineId={order_id}-1",
        env=server.env,
    )
    assert created.returncode == 0, created.describe()
    assert "HTTP 200" in created.stdout and "Body-Sign valid" in created.stdout, created.describe()
    instance_id = _answer(created)["instanceId"]
    rows = db_rows(
        server.database_url, "SELECT order_line_id FROM instance WHERE instance_id = ?", (instance_id,)
    )
    assert rows == [(f"{order_id}-1",)]

    direct, _ = post_signed(server, {"activity": "queryInstance", "instanceId": instance_id})
    password = direct.json["info"][0]["appInfo"]["password"]
    assert password and password != "***"

    masked = run_cli("simulate", "queryInstance", server.url, f"instanceId={instance_id}", env=server.env)
    assert masked.returncode == 0, masked.describe()
    info = _answer(masked)["info"][0]
    assert info["instanceId"] == instance_id
    assert info["appInfo"]["password"] == "***", masked.describe()
    assert info["appInfo"]["frontEndUrl"].endswith(instance_id)
    assert password not in masked.output

    shown = run_cli(
        "simulate", "queryInstance", server.url, f"instanceId={instance_id}", "--show-secrets", env=server.env
    )
    assert shown.returncode == 0, shown.describe()
    assert _answer(shown)["info"][0]["appInfo"]["password"] == password

    unknown = run_cli("simulate", "queryInstance", server.url, "instanceId=no-such-instance", env=server.env)
    assert unknown.returncode != 0, unknown.describe()
    assert _answer(unknown)["resultCode"] == "000003", unknown.describe()


def test_migrate_names_adapter_migrations_by_their_adapter(tmp_path: Path) -> None:
    """`migrate` prints each script as an operator reads it: `0003_jobs`, `koogallery_kit/0001_sync`."""
    env = subprocess_env(base_env(tmp_path, f"sqlite:///{tmp_path / 'labels.sqlite3'}"))
    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.describe()
    assert f"migrations applied: {', '.join(LABELS)}" in first.output, first.describe()
