"""One settings file for every command and the app: the environment first, then ISV_SETTINGS_FILE (else
./isvserver.env), read by python-dotenv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from isvserver import settings_file
from isvserver.cli import main
from isvserver.settings import SettingsError, load_settings

from support.harness import DATA_KEY

pytestmark = pytest.mark.usefixtures("bare_environ")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args: str, **env: str) -> Result:
    """`isvserver ARGS` in-process, as from a new shell: what it added to os.environ is dropped after."""
    saved = dict(os.environ)
    try:
        return CliRunner().invoke(main, list(args), env=env, prog_name="isvserver")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_the_environment_wins_over_the_file_and_name_file_counts_as_the_name(tmp_path: Path) -> None:
    file = write(
        tmp_path / "isv.env",
        "# comment\nISV_LOG_LEVEL=DEBUG\nexport ISV_BIND=0.0.0.0:9000\nISV_DATA_KEY=from-file\n"
        'ISV_FRONTEND_URL_TEMPLATE="https://x.example/{instance_id} #not a comment"\nISV_EMPTY=\n',
    )
    merged = settings_file.merged(
        {"ISV_SETTINGS_FILE": str(file), "ISV_LOG_LEVEL": "ERROR", "ISV_DATA_KEY_FILE": "/run/key"}
    )

    assert merged["ISV_LOG_LEVEL"] == "ERROR"
    assert merged["ISV_BIND"] == "0.0.0.0:9000"
    assert "ISV_DATA_KEY" not in merged, "the environment's NAME_FILE is the same setting"
    assert merged["ISV_FRONTEND_URL_TEMPLATE"] == "https://x.example/{instance_id} #not a comment"
    assert "ISV_EMPTY" not in merged


def test_values_are_taken_as_written(tmp_path: Path) -> None:
    file = write(tmp_path / "isv.env", "ISV_ACCESS_KEYS=abc${HOME}def$x\n")
    assert settings_file.merged({"ISV_SETTINGS_FILE": str(file)})["ISV_ACCESS_KEYS"] == "abc${HOME}def$x"


def test_the_default_file_is_isvserver_env_in_the_working_directory(tmp_path: Path) -> None:
    assert settings_file.path({}) is None
    write(tmp_path / "isvserver.env", "ISV_LOG_LEVEL=WARNING\n")
    assert settings_file.merged({})["ISV_LOG_LEVEL"] == "WARNING"
    assert settings_file.merged({"ISV_SETTINGS_FILE": ""}) == {"ISV_SETTINGS_FILE": ""}, "empty: no file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "ISV_SETTINGS_FILE: cannot read {file}: No such file or directory"),
        ("ISV_A=1\nthis is no setting\n", "ISV_SETTINGS_FILE: line 2 of {file} is not NAME=value"),
    ],
)
def test_a_file_that_cannot_be_read_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    file = tmp_path / "isv.env"
    if content is not None:
        write(file, content)
    with pytest.raises(SettingsError, match="^" + message.format(file=file).replace("(", r"\(")):
        load_settings_from(file)
    result = cli("migrate", ISV_SETTINGS_FILE=str(file))
    assert result.exit_code == 1
    assert result.output.startswith("Error: " + message.format(file=file)), result.output
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output


def load_settings_from(file: Path) -> None:
    os.environ["ISV_SETTINGS_FILE"] = str(file)
    load_settings()


def test_load_settings_reads_the_file(tmp_path: Path) -> None:
    write(
        tmp_path / "isvserver.env",
        f"ISV_ENV=production\nISV_ACCESS_KEYS=a-production-key-1\nISV_DATA_KEY={DATA_KEY}\n"
        "ISV_FRONTEND_URL_TEMPLATE=https://app.example/{instance_id}\nISV_MARKETPLACES=koogallery\n",
    )
    settings = load_settings()
    assert settings.env == "production" and settings.keys("basic") == ("a-production-key-1",)


def test_adapter_commands_exist_when_only_the_file_enables_the_adapter(tmp_path: Path) -> None:
    """Before: `tenants` and `kit` existed only when ISV_MARKETPLACES was exported in the shell."""
    file = write(tmp_path / "kit.env", "ISV_MARKETPLACES=koogallery,koogallery_kit\n")

    assert "tenants" in cli("--help", ISV_SETTINGS_FILE=str(file)).output
    listed = cli("simulate", "--help", ISV_SETTINGS_FILE=str(file))
    assert "kit" in listed.output.split("Commands:")[1]

    without = cli("tenants", "list")
    assert without.exit_code == 2
    assert "'tenants' is a command of the koogallery_kit adapter, which ISV_MARKETPLACES does not enable" in (
        without.output
    )
    not_enabled = cli("simulate", "kit", "--help")
    assert "'kit' simulates the koogallery_kit adapter" in not_enabled.output


def test_an_unknown_adapter_lists_the_valid_ones() -> None:
    result = cli("migrate", ISV_MARKETPLACES="koogallery,kooGallery_kit")
    assert result.exit_code == 1
    assert result.output == (
        "Error: invalid settings: ISV_MARKETPLACES: there is no adapter 'kooGallery_kit'; "
        "the adapters are broker, koogallery, koogallery_kit, vcloud\n"
    )
    with pytest.raises(
        SettingsError, match="'koo-gallery' is not an adapter name; the adapters are broker, koogallery"
    ):
        load_settings({"ISV_MARKETPLACES": "koo-gallery", "ISV_INSTANCE_DIR": "instance"})


def test_the_file_reaches_processes_the_command_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve execs gunicorn: the file's values are in the environment it inherits (its workers, the job
    consumer, the shipped gunicorn configuration's ISV_BIND/ISV_WORKERS)."""
    file = write(tmp_path / "isv.env", "ISV_LOG_LEVEL=WARNING\nISV_WORKERS=5\n")
    seen: dict[str, object] = {}

    def execv(path: str, argv: list[str]) -> None:
        seen.update(argv=argv, env=dict(os.environ))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", execv)
    result = cli("serve", "--no-migrate", "--bind", "127.0.0.1:0", ISV_SETTINGS_FILE=str(file))

    assert result.exit_code == 0, result.output
    assert seen["env"]["ISV_LOG_LEVEL"] == "WARNING"  # type: ignore[index]
    assert seen["argv"][-3:] == ["--workers", "5", "isvserver:create_app()"]  # type: ignore[index]
    assert "with 5 workers" in result.output


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "isv.env"
    file.write_bytes(b"ISV_LOG_LEVEL=\xff\n")
    with pytest.raises(
        settings_file.SettingsFileError, match=f"^ISV_SETTINGS_FILE: {file} is not UTF-8 text$"
    ):
        settings_file.merged({"ISV_SETTINGS_FILE": str(file)})
