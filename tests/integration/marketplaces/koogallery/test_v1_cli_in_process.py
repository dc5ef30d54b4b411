"""`isvserver simulate v1` and `isvserver license` as a seller runs them, against the app served in this
process (SQLite, PostgreSQL)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from isvserver import licenses
from isvserver.cli import main

from support.harness import ACCESS_KEY, base_env
from support.server import serving_in_process

SEED, PUBLIC = licenses.keygen()


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    env = base_env(tmp_path, database_url, ISV_LICENSE_SIGNING_KEY=SEED)
    with serving_in_process(env) as url:
        yield url, env


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_simulate_v1_one_call_decrypts_and_masks(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    code, output = run(env, "simulate", "v1", "newInstance", url, "orderId=SIMV1X")
    assert code == 0, output
    assert "v1 newInstance: HTTP 200, Body-Sign valid" in output
    assert '"userName": "admin_' in output and '"password": "***"' in output
    code, output = run(env, "simulate", "v1", "getLicense", url)
    assert code == 0 and '"license": "ISVL1.' in output and "…" in output
    code, output = run(env, "simulate", "v1", "queryInstance", url, "instanceId=x", "--key", "wrong-key-123")
    assert code == 1 and "000001" in output and "Body-Sign INVALID" in output
    assert ACCESS_KEY not in output


def test_simulate_v1_shows_secrets_when_asked_and_says_when_a_credential_does_not_decrypt(
    served: tuple[str, dict[str, str]],
) -> None:
    from isvserver.body_sign import Answer
    from isvserver.marketplaces.koogallery.v1.cli import _shown

    url, env = served
    code, output = run(env, "simulate", "v1", "newInstance", url, "--show-secrets")
    assert code == 0 and '"password": "***"' not in output
    answer = Answer(
        200, b"", True, {"info": [{"instanceId": "i", "appInfo": {"userName": "AbCdEfGh12345678xx=="}}]}
    )
    assert _shown(answer, ACCESS_KEY, 1, False)["info"][0]["appInfo"]["decrypted"].startswith("NO")
    assert _shown(Answer(200, b"x", True, None), ACCESS_KEY, 1, False) is None


def test_simulate_v1_flow_and_the_combined_flow(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    code, output = run(env, "simulate", "v1", "flow", url)
    assert code == 0 and "v1 flow: all answers right" in output, output
    code, output = run(env, "simulate", "v1", "flow", url, "--test")
    assert code == 0 and "v1 flow: all answers right" in output, output
    code, output = run(env, "simulate", "flow", url)
    assert code == 0 and "v1 flow: all answers right" in output and "\nflow: all answers right" in output


def test_simulate_v1_refusals(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = served
    code, output = run(env, "simulate", "v1", "newinstance", url)
    assert code == 2 and "not a V1 activity" in output
    code, output = run(env, "simulate", "v1", "newInstance", url, "novalue")
    assert code == 2 and "is not name=value" in output
    code, output = run(env, "simulate", "v1", "newInstance", "http://127.0.0.1:9/saasproduce")
    assert code == 1 and "cannot reach" in output
    bare = {"ISV_INSTANCE_DIR": str(tmp_path / "none")}
    code, output = run(bare, "simulate", "v1", "newInstance", url)
    assert code == 1 and "no key" in output


def test_license_keygen_and_verify(served: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    env = served[1]
    code, output = run(env, "license", "keygen")
    assert code == 0 and output.startswith("ISV_LICENSE_SIGNING_KEY=") and "public key" in output
    seed = base64.urlsafe_b64decode(SEED + "=")
    token = licenses.issue(
        seed, licenses.Grant("l1", "i1", "s1", None, 1, "koogallery", datetime(2024, 1, 1))
    )
    code, output = run(env, "license", "verify", token)
    assert code == 0 and json.loads(output.splitlines()[0])["lid"] == "l1" and "valid" in output
    code, output = run({}, "license", "verify", token, "--public-key", PUBLIC)
    assert code == 0
    old = licenses.issue(
        seed, licenses.Grant("l2", "i1", "s1", datetime(2001, 1, 1), 1, "k", datetime(2000, 1, 1))
    )
    code, output = run(env, "license", "verify", old)
    assert code == 1 and "expired" in output
    code, output = run(env, "license", "verify", token, "--public-key", licenses.keygen()[1])
    assert code == 1 and "invalid" in output
    code, output = run({"ISV_INSTANCE_DIR": str(tmp_path)}, "license", "verify", token)
    assert code == 1 and "no key" in output
    code, output = run({"ISV_LICENSE_SIGNING_KEY": "short"}, "license", "verify", token)
    assert code == 1 and "ISV_LICENSE_SIGNING_KEY must be" in output
