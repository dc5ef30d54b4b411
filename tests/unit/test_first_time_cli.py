"""The command line for first-time users: --version, data-key, sign and simulate as the README says."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from isvserver.adapters import load
from isvserver.cli import main
from isvserver.marketplaces.koogallery import simulator
from isvserver.marketplaces.koogallery.signing import request_signature

# Imported first by the tests' harness (through the adapter), isvserver.cli met a half-imported adapter:
# its commands are added here as the installed command adds them.
for _command in load("koogallery").cli_commands:
    main.add_command(_command)

BODY = '{"activity":"newInstance","orderId":"CS1","orderLineId":"CS1-1","businessId":"b"}'
NOTIFY_BODY = '{"activity":"orderNotify","orderId":"CS1","orderLineId":"CS1-1"}'
TS, NONCE = "1680508066618", "N" * 32


def run(tmp_path: Path, *args: str, input: str | None = None, **env: str) -> Result:
    """`isvserver ARGS` in-process, run from an empty folder with only `env` as its ISV_* settings."""
    isolated: dict[str, str | None] = {name: None for name in os.environ if name.startswith("ISV_")}
    isolated.update(env)
    folder = tmp_path / "cwd"
    folder.mkdir(exist_ok=True)
    before = Path.cwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(
            main, list(args), env=isolated, input=input, catch_exceptions=False, prog_name="isvserver"
        )
    finally:
        os.chdir(before)
    assert not (folder / "instance").exists(), "a command created the instance folder (keys)"
    return result


def signature_in(result: Result) -> str:
    return re.search(r"^signature:\s+(\S+)$", result.output, re.M).group(1)


def test_version(tmp_path: Path) -> None:
    result = run(tmp_path, "--version")
    assert result.exit_code == 0 and re.fullmatch(r"isvserver \d+\.\d+\.\d+\S*\n", result.output)


def test_data_key_prints_a_fresh_44_character_key(tmp_path: Path) -> None:
    first, second = run(tmp_path, "data-key").output.strip(), run(tmp_path, "data-key").output.strip()
    assert len(first) == 44 and first != second
    assert len(base64.urlsafe_b64decode(first)) == 32


@pytest.mark.parametrize("how", ["option", "env"])
def test_sign_takes_the_key_from_the_option_or_isv_sign_key(tmp_path: Path, how: str) -> None:
    args = ["sign", "--body", BODY, "--timestamp", TS, "--nonce", NONCE]
    result = (
        run(tmp_path, *args, "--key", "k-given-123")
        if how == "option"
        else run(tmp_path, *args, ISV_SIGN_KEY="k-given-123")
    )
    assert result.exit_code == 0, result.output
    assert signature_in(result) == request_signature("k-given-123", BODY.encode(), NONCE, TS)


@pytest.mark.parametrize(("body", "variable"), [(BODY, "ISV_ACCESS_KEYS"), (NOTIFY_BODY, "ISV_NOTIFY_KEYS")])
def test_sign_falls_back_to_the_configured_key_of_the_interface(
    tmp_path: Path, body: str, variable: str
) -> None:
    result = run(
        tmp_path, "sign", "--body", body, "--timestamp", TS, "--nonce", NONCE,
        ISV_ACCESS_KEYS="basic-key-1234", ISV_NOTIFY_KEYS="notify-key-1234",
    )  # fmt: skip
    key = {"ISV_ACCESS_KEYS": "basic-key-1234", "ISV_NOTIFY_KEYS": "notify-key-1234"}[variable]
    assert signature_in(result) == request_signature(key, body.encode(), NONCE, TS)


def test_sign_without_a_key_or_terminal_fails_clearly(tmp_path: Path) -> None:
    result = run(tmp_path, "sign", "--body", BODY)
    assert result.exit_code == 1
    assert "no key: pass --key, set ISV_SIGN_KEY" in result.output
    assert "Traceback" not in result.output


def test_sign_asks_for_the_key_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulator, "_interactive", lambda: True)
    result = run(tmp_path, "sign", "--body", BODY, "--timestamp", TS, "--nonce", NONCE, input="typed-key-1\n")
    assert result.exit_code == 0, result.output
    assert signature_in(result) == request_signature("typed-key-1", BODY.encode(), NONCE, TS)


def test_sign_and_simulate_read_development_keys_without_creating_any(tmp_path: Path) -> None:
    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "development-keys.json").write_text(json.dumps({"ISV_ACCESS_KEYS": "dev-key-from-file"}))
    result = run(
        tmp_path, "sign", "--body", BODY, "--timestamp", TS, "--nonce", NONCE, ISV_INSTANCE_DIR=str(folder)
    )
    assert signature_in(result) == request_signature("dev-key-from-file", BODY.encode(), NONCE, TS)
    assert sorted(p.name for p in folder.iterdir()) == ["development-keys.json"]


def test_simulate_from_another_folder_says_where_the_key_is(tmp_path: Path) -> None:
    result = run(tmp_path, "simulate", "newInstance", "http://127.0.0.1:9/saasproduce")
    assert result.exit_code == 1
    assert "no key: pass --key, set ISV_SIGN_KEY or ISV_ACCESS_KEYS" in result.output


@pytest.mark.parametrize("activity", ["newInstance", "flow"])
def test_simulate_against_no_server_prints_one_line(tmp_path: Path, activity: str) -> None:
    from support.server import free_port

    url = f"http://127.0.0.1:{free_port()}/saasproduce"
    result = run(tmp_path, "simulate", activity, url, "--key", "some-key-12345678")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"Error: cannot reach {url}: [Errno 111] Connection refused (is the server running?)"]


def test_simulate_lists_the_activities_on_a_wrong_one(tmp_path: Path) -> None:
    result = run(tmp_path, "simulate", "newinstance", "http://127.0.0.1:9/", "--key", "k-12345678")
    assert result.exit_code == 2
    assert "'newinstance' is not an activity; use one of: flow, newInstance, queryInstance" in result.output


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize(
    ("path", "command"), commands(main), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_help_writes_defaults_one_way(tmp_path: Path, path: tuple[str, ...], command: click.Command) -> None:
    """Defaults and variables as click shows them ([default: …], [env var: …]), never in the help text."""
    for param in command.params:
        text = getattr(param, "help", None) or ""
        assert "default" not in text.lower() and not re.search(r"\[ISV_", text), (path, param.name, text)
    result = run(tmp_path, *path, "--help")
    assert result.exit_code == 0, result.output
