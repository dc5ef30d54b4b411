"""`isvserver simulate` as a seller runs it, against the app served in this process (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from isvserver.cli import main
from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair

from support.harness import ACCESS_KEY, base_env
from support.server import serving_in_process

KIT_KEY = "kit-key-for-the-simulator"


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Both KooGallery adapters on a loopback port in a thread; the environment the seller's shell has."""
    env = base_env(
        tmp_path,
        database_url,
        ISV_MARKETPLACES="koogallery,koogallery_kit",
        ISV_KIT_KEYS=KIT_KEY,
        ISV_KIT_PRIVATE_KEY=generate_key_pair()[0].decode("ascii"),
    )
    with serving_in_process(env) as url:
        yield url, env


def test_simulate_flow_runs_the_basic_and_the_kit_sequence(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    result = CliRunner().invoke(main, ["simulate", "flow", url], env=env)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "flow: all answers right" in result.output
    assert any(line.startswith("newInstance: HTTP 200, Body-Sign valid") for line in lines)
    kit = [line for line in lines if line.startswith("kit ") and not line.startswith("kit flow:")]
    assert len(kit) == 7 and all("Body-Sign valid" in line for line in kit)
    assert "kit flow: all answers right" in lines
    assert ACCESS_KEY not in result.output and KIT_KEY not in result.output


def test_simulate_kit_sends_one_signed_call(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    result = CliRunner().invoke(main, ["simulate", "kit", "tenantSync", url, "instanceId=sim-1"], env=env)

    assert result.exit_code == 0, result.output
    assert "Body-Sign valid" in result.output and '"resultCode": "000000"' in result.output


def test_simulate_kit_with_the_wrong_key_is_refused(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    result = CliRunner().invoke(
        main, ["simulate", "kit", "tenantSync", url, "--key", "not-the-kit-key-1"], env=env
    )

    assert result.exit_code == 1
    assert "000001" in result.output


WRONG_KEY_HINT = "signature does not match: check --key (the server knows another key)"


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "newInstance", "{url}", "--key", "not-the-basic-key-1"),
        ("simulate", "kit", "tenantSync", "{url}", "--key", "not-the-kit-key-1"),
        ("simulate", "flow", "{url}", "--key", "not-the-basic-key-1"),
    ],
)
def test_a_wrong_key_is_named_as_the_likely_cause(
    served: tuple[str, dict[str, str]], args: tuple[str, ...]
) -> None:
    url, env = served
    result = CliRunner().invoke(main, [a.format(url=url) for a in args], env=env)

    assert result.exit_code == 1
    assert '"resultCode": "000001"' in result.output
    assert result.output.count(WRONG_KEY_HINT) == 1, result.output


def test_a_wrong_path_hints_at_the_produce_path(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    wrong = url.replace("/saasproduce", "/saas")
    result = CliRunner().invoke(main, ["simulate", "queryInstance", wrong, "instanceId=x"], env=env)

    assert result.exit_code == 1
    assert "queryInstance: HTTP 404, Body-Sign INVALID" in result.output
    assert '"hint": "the marketplace calls POST /saasproduce (its path is ISV_PRODUCE_PATH)"' in result.output
    assert (
        "nothing answers at this URL's path: use the server's produce URL (its path is ISV_PRODUCE_PATH, "
        "/saasproduce by default)"
    ) in result.output


def test_the_readme_tells_the_flow_in_its_order(served: tuple[str, dict[str, str]]) -> None:
    """README's `simulate flow` line names the V2 steps in the order the flow runs them."""
    readme = " ".join((Path(__file__).resolve().parents[4] / "README.md").read_text(encoding="utf-8").split())
    start = readme.index("isvserver simulate flow URL [--test] [--key K]")
    told = readme[start : readme.index(", then with koogallery_kit", start)].split("[--key K]", 1)[1]
    told_steps = [step.strip() for step in told.split("→")]
    url, env = served

    result = CliRunner().invoke(main, ["simulate", "flow", url], env=env)

    labels = [line.split(": HTTP ")[0] for line in result.output.splitlines() if ": HTTP " in line]
    basic = [label for label in labels if not label.startswith(("kit ", "v1 "))]  # V2's steps
    ran = [label.split("(")[1].rstrip(")") if "(" in label else label.split()[-1] for label in basic]
    assert ran == told_steps


def test_simulate_kit_application_sync_works_out_of_the_box_in_development(
    tmp_path: Path, database_url: str
) -> None:
    """Development makes the Kit private key like the other keys: `simulate kit applicationSync` run from
    the server's folder encrypts clientSecret with its public half, and the flow skips nothing."""
    env = {
        "ISV_INSTANCE_DIR": str(tmp_path / "instance"),
        "ISV_DATABASE_URL": database_url,
        "ISV_MARKETPLACES": "koogallery,koogallery_kit",
    }
    shell = {name: None for name in os.environ if name.startswith("ISV_")} | env
    with serving_in_process(env) as url:
        one = CliRunner().invoke(main, ["simulate", "kit", "applicationSync", url], env=shell)
        flow = CliRunner().invoke(main, ["simulate", "flow", url], env=shell)

    assert one.exit_code == 0, one.output
    assert "applicationSync: HTTP 200, Body-Sign valid" in one.output
    assert flow.exit_code == 0, flow.output
    assert "kit applicationSync: HTTP 200, Body-Sign valid" in flow.output and "skipped" not in flow.output
