"""The README and config/settings.example.env say what the code does: each setting once in the README's
table and in the example file (which works as shipped), the skip table and `keys add` as the code has them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from isvserver.adapters import available, load
from isvserver.cli import main
from isvserver.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "config" / "settings.example.env"
NAME = re.compile(r"\bISV_[A-Z0-9_]*[A-Z0-9]\b")


def settings_in_code() -> set[str]:
    """Every ISV_ variable the package reads (a NAME_FILE is its NAME's; ISV_TEST_* are the tests')."""
    found = set()
    for path in (ROOT / "isvserver").rglob("*.py"):
        found |= set(NAME.findall(path.read_text(encoding="utf-8")))
    return {n for n in found if not n.endswith("_FILE") or n == "ISV_SETTINGS_FILE"} - {"ISV_TEST_REQUIRE"}


def readme_table_names() -> list[str]:
    """The variables the README's settings table lists, in its first column, as often as listed."""
    start = README.index("\n## Settings\n")
    table = README[start : README.index("\n## ", start + 1)]
    names = []
    for line in table.splitlines():
        if line.startswith("| `ISV_"):
            names += NAME.findall(line.split("|")[1])
    return names


def test_the_readme_table_lists_each_setting_once() -> None:
    listed = readme_table_names()
    assert sorted(n for n in set(listed) if listed.count(n) > 1) == [], "listed twice"
    assert sorted(settings_in_code() - set(listed)) == [], "read by the code, missing from the table"
    assert sorted(set(listed) - settings_in_code()) == [], "in the table, read by no code"


def test_the_example_file_lists_every_setting() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    shown = set(re.findall(r"^(?:# )?(ISV_[A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert sorted(settings_in_code() - shown - {"ISV_SETTINGS_FILE"}) == []
    assert "ISV_SETTINGS_FILE" in text  # explained in its header: it is read from the environment only


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith("ISV_")]:
        del os.environ[name]
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)


def test_the_example_file_works_as_shipped(elsewhere: Path) -> None:
    """Copied to ./isvserver.env as the README says: development, SQLite in ./instance, migrated."""
    (elsewhere / "isvserver.env").write_bytes(EXAMPLE.read_bytes())

    settings = load_settings()
    assert settings.env == "development" and settings.marketplaces == ("koogallery",)
    assert settings.database_url == f"sqlite:///{elsewhere / 'instance' / 'isvserver.sqlite3'}"
    result = CliRunner().invoke(main, ["migrate"], prog_name="isvserver")
    assert result.exit_code == 0, result.output
    assert "migrations applied: 0001_initial" in result.output


def test_the_readme_skip_table_names_the_tests_that_skip() -> None:
    """Each test file the skip table names exists; every test file that starts a Redis server is named."""
    start = README.index("| tests | skipped without | made mandatory by |")
    table = README[start : README.index("\n\n", start)]
    named = set(re.findall(r"`(tests/[\w/.]+)`", table))
    for path in named:
        assert (ROOT / path).exists(), path
    using_redis = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if "from support.redis import" in p.read_text(encoding="utf-8") and p.name != Path(__file__).name
    }
    assert using_redis and using_redis <= named, using_redis - named
    redis_row = next(line for line in table.splitlines() if "redis-server" in line)
    assert set(re.findall(r"`(tests/[\w/.]+)`", redis_row)) == using_redis


def test_the_readme_names_every_key_interface_of_keys_add() -> None:
    start = README.index("INTERFACE: ")
    text = " ".join(README[start : README.index("those of the enabled adapters", start)].split())
    listed = set(re.findall(r"(\w+)(?:,| \()", text.removeprefix("INTERFACE: ")))
    declared = {i.name for name in available() for i in load(name).key_interfaces}
    assert listed == declared, (listed, declared)
