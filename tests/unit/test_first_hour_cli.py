"""What a new user meets in the first hour: one clear line instead of a traceback, help that says what each
simulation sends, development keys that make `simulate kit applicationSync` work, serve's options."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from isvserver.cli import main
from isvserver.marketplaces.koogallery_kit.client_secret import generate_key_pair, load_private_key
from isvserver.marketplaces.koogallery_kit.config import public_key_of
from isvserver.settings import SettingsError, load_settings

from support.harness import DATA_KEY

pytestmark = pytest.mark.usefixtures("bare_environ")


def cli(*args: str, **env: str) -> Result:
    saved = dict(os.environ)
    try:
        return CliRunner().invoke(main, list(args), env=env, prog_name="isvserver")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def commands_listed(result: Result) -> list[str]:
    """The command names of a group's --help, in order."""
    section = result.output.split("Commands:")[1]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line[2] != " "]


def words(result: Result) -> str:
    """The output with its line wrapping undone."""
    return " ".join(result.output.split())


def one_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    return lines[0]


# --- tracebacks a new user hit -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "newInstance", "localhost:8000/saasproduce"),
        ("simulate", "flow", "localhost:8000/saasproduce"),
        ("simulate", "kit", "tenantSync", "localhost:8000/saasproduce"),
    ],
)
def test_a_url_without_scheme_is_one_line(args: tuple[str, ...]) -> None:
    result = cli(*args, "--key", "some-key-12345678", ISV_MARKETPLACES="koogallery,koogallery_kit")
    assert result.exit_code == 2
    assert (
        "Error: Invalid value for 'URL': 'localhost:8000/saasproduce' is not an http:// or https:// URL"
        in (result.output)
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_a_database_url_with_a_bad_port_is_one_line(port: str) -> None:
    url = f"postgresql://isv:secret-pw@db.example:{port}/isv"
    with pytest.raises(SettingsError) as raised:
        load_settings({"ISV_DATABASE_URL": url, "ISV_DATA_KEY": DATA_KEY, "ISV_ACCESS_KEYS": "k-12345678"})
    assert str(raised.value) == (
        "ISV_DATABASE_URL: the port must be a number from 0 to 65535 (postgresql://user:password@host:5432/dbname)"
    )
    line = one_line(cli("migrate", ISV_DATABASE_URL=url, ISV_DATA_KEY=DATA_KEY, ISV_ACCESS_KEYS="k-12345678"))
    assert line.startswith("Error: invalid settings: ISV_DATABASE_URL: the port must be a number")
    assert "secret-pw" not in line


# --- simulate's help and commands ------------------------------------------------------------------


def test_simulate_help_lists_the_activities() -> None:
    result = cli("simulate", "--help", ISV_MARKETPLACES="koogallery,koogallery_kit")
    assert result.exit_code == 0
    assert commands_listed(result) == [
        "flow", "newInstance", "queryInstance", "refreshInstance", "updateInstanceStatus", "releaseInstance",
        "upgradeInstance", "changeInstanceCheck", "orderNotify", "v1", "kit",
    ]  # fmt: skip
    assert "ISV_SIGN_KEY" not in result.output, "the group has no --key of its own"


def test_simulate_kit_help_is_its_own_and_names_the_kit_key() -> None:
    result = cli("simulate", "kit", "--help", ISV_MARKETPLACES="koogallery,koogallery_kit")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: isvserver simulate kit [OPTIONS] {tenantSync|applicationSync|")
    assert "--public-key" in result.output
    assert "[default: (the first ISV_KIT_KEYS key, or the development keys)]" in words(result)
    assert "env var: ISV_SIGN_KEY" not in words(result)


def test_each_activity_has_its_help_and_names_its_key() -> None:
    basic = cli("simulate", "newInstance", "--help")
    notify = cli("simulate", "orderNotify", "--help")
    assert basic.output.startswith("Usage: isvserver simulate newInstance [OPTIONS] URL [FIELDS]...")
    assert "else ISV_ACCESS_KEYS" in words(basic) and "env var: ISV_SIGN_KEY" in words(basic)
    assert "else ISV_NOTIFY_KEYS" in words(notify)


def test_simulate_exists_in_a_kit_only_deployment() -> None:
    listed = cli("--help", ISV_MARKETPLACES="koogallery_kit")
    assert "simulate" in commands_listed(listed)
    result = cli("simulate", "--help", ISV_MARKETPLACES="koogallery_kit")
    assert result.exit_code == 0
    assert commands_listed(result) == ["flow", "kit"]
    wrong = cli("simulate", "newInstance", "http://127.0.0.1:9/", ISV_MARKETPLACES="koogallery_kit")
    assert wrong.exit_code == 2
    assert (
        "'newInstance' simulates the koogallery adapter, which ISV_MARKETPLACES does not enable"
        in wrong.output
    )


# --- development keys --------------------------------------------------------------------------------


def test_development_generates_the_kit_private_key_and_prints_every_key_it_makes(tmp_path: Path) -> None:
    first = cli("migrate")
    assert first.exit_code == 0, first.output
    keys_file = tmp_path / "instance" / "development-keys.json"
    keys = json.loads(keys_file.read_text(encoding="utf-8"))
    assert "ISV_KIT_PRIVATE_KEY" not in keys, "generated for an adapter that is not enabled"
    assert keys["ISV_ACCESS_KEYS"] in first.output

    later = cli("migrate", ISV_MARKETPLACES="koogallery,koogallery_kit")
    assert later.exit_code == 0, later.output
    keys = json.loads(keys_file.read_text(encoding="utf-8"))
    assert load_private_key(keys["ISV_KIT_PRIVATE_KEY"]).key_size == 3072
    lines = later.output.splitlines()
    assert f"  kit interface key (ISV_KIT_KEYS): {keys['ISV_KIT_KEYS']}" in lines
    public = public_key_of(keys["ISV_KIT_PRIVATE_KEY"])
    assert (
        "  public key of the Kit private key (upload it in the seller console) (ISV_KIT_PRIVATE_KEY): "
        + public
    ) in lines
    assert keys["ISV_ACCESS_KEYS"] not in later.output, "a key made earlier is not printed again"
    assert keys["ISV_DATA_KEY"] not in first.output + later.output
    assert "BEGIN" not in later.output, "the private key itself is never printed"

    settings = load_settings({"ISV_MARKETPLACES": "koogallery,koogallery_kit"})
    assert settings.of("koogallery_kit").private_key is not None


def test_a_configured_kit_private_key_is_not_generated(tmp_path: Path) -> None:
    pem = generate_key_pair()[0].decode("ascii")
    result = cli("migrate", ISV_MARKETPLACES="koogallery_kit", ISV_KIT_PRIVATE_KEY=pem)
    assert result.exit_code == 0, result.output
    keys = json.loads((tmp_path / "instance" / "development-keys.json").read_text(encoding="utf-8"))
    assert "ISV_KIT_PRIVATE_KEY" not in keys


def test_production_names_a_short_key_once_with_the_production_minimum() -> None:
    env = {
        "ISV_ENV": "production",
        "ISV_ACCESS_KEYS": "abc,abd",
        "ISV_DATA_KEY": DATA_KEY,
        "ISV_FRONTEND_URL_TEMPLATE": "https://x/{instance_id}",
    }
    line = one_line(cli("migrate", **env))
    assert line == (
        "Error: invalid settings: ISV_ACCESS_KEYS: every key must be at least 16 characters in production"
    )


# --- serve -------------------------------------------------------------------------------------------


@pytest.fixture
def execv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What serve would exec (gunicorn's argv), instead of exec'ing it."""
    calls: list[list[str]] = []

    def fake(path: str, argv: list[str]) -> None:
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake)
    return calls


def test_serve_with_a_config_file_keeps_its_workers_and_bind(tmp_path: Path, execv: list[list[str]]) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("workers = 7\n", encoding="utf-8")

    result = cli("serve", "--no-migrate", "--config", str(config))

    assert result.exit_code == 0, result.output
    assert "--workers" not in execv[0] and "--bind" not in execv[0], execv[0]
    assert f"with the workers of {config}" in result.output
    given = cli("serve", "--no-migrate", "--config", str(config), "--workers", "2", "--bind", "127.0.0.1:0")
    assert given.exit_code == 0, given.output
    assert execv[1][-5:] == ["--bind", "127.0.0.1:0", "--workers", "2", "isvserver:create_app()"]


def test_serve_on_a_port_in_use_says_so_before_the_banner(execv: list[list[str]]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = f"127.0.0.1:{taken.getsockname()[1]}"
        result = cli("serve", "--bind", bind, "--workers", "1")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if not line.startswith(("development mode", "  "))]
    assert lines == [
        f"Error: {bind} is already in use (another isvserver?): stop it, or choose another address with "
        "--bind or ISV_BIND"
    ]
    assert execv == []
    assert not (Path("instance") / "isvserver.sqlite3").exists(), "migrated before saying so"


def test_simulations_help_writes_defaults_one_way() -> None:
    """As test_first_time_cli checks for the static commands: defaults and variables only as click shows
    them, for each simulation the enabled adapters add."""
    import re

    import click

    from isvserver.cli.simulate import simulate, simulations

    os.environ["ISV_MARKETPLACES"] = "koogallery,koogallery_kit"
    context = click.Context(simulate)
    names = simulate.list_commands(context)
    assert len(names) == 1 + len(simulations()) - 1  # flow, and each simulation but the V2 flow alone
    for name in names:
        command = simulate.get_command(context, name)
        for param in command.params:
            text = getattr(param, "help", None) or ""
            assert "default" not in text.lower() and not re.search(r"\[ISV_", text), (name, param.name, text)
        assert cli("simulate", name, "--help").exit_code == 0


def test_serve_names_an_address_it_cannot_listen_on() -> None:
    from isvserver.cli.server import check_free

    with pytest.raises(click.ClickException) as raised:
        check_free("192.0.2.1:8000")  # TEST-NET-1: no interface here has it
    assert raised.value.message == "cannot listen on 192.0.2.1:8000: Cannot assign requested address"
    assert check_free("unix:/run/isvserver.sock") is None  # gunicorn checks a socket path itself


def test_a_generated_key_the_environment_overrides_is_not_printed(tmp_path: Path) -> None:
    """The example file sets ISV_ACCESS_KEYS: the basic key generated beside it is unused, so unprinted."""
    result = cli("migrate", ISV_ACCESS_KEYS="the-configured-basic-key")
    assert result.exit_code == 0, result.output
    keys = json.loads((tmp_path / "instance" / "development-keys.json").read_text(encoding="utf-8"))
    assert keys["ISV_ACCESS_KEYS"] not in result.output and "ISV_ACCESS_KEYS" not in result.output
    notify = keys["ISV_NOTIFY_KEYS"]
    assert f"  notify interface key (ISV_NOTIFY_KEYS): {notify}" in result.output.splitlines()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISV_KIT_PRIVATE_KEY": "not a key"}, "Error: invalid settings: ISV_KIT_PRIVATE_KEY: "),
        (
            {"ISV_KIT_PRIVATE_KEY_FILE": "/no/such/kit.pem"},
            "Error: invalid settings: ISV_KIT_PRIVATE_KEY_FILE: cannot read /no/such/kit.pem: No such file",
        ),
    ],
)
def test_simulate_kit_names_an_unusable_private_key(env: dict[str, str], message: str) -> None:
    result = cli(
        "simulate", "kit", "applicationSync", "http://127.0.0.1:9/saasproduce", "--key", "kit-key-12345678",
        ISV_MARKETPLACES="koogallery_kit", **env,
    )  # fmt: skip
    assert result.exit_code == 1
    assert one_line(result).startswith(message), result.output
