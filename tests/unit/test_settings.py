"""load_settings: defaults, every ISV_* variable, *_FILE secrets, errors that never echo a secret."""

from __future__ import annotations

import json
import stat
import traceback
from pathlib import Path

import pytest

from isvserver.settings import DEV_KEYS_FILE, SettingsError, load_settings, redacted_url

from support.harness import ACCESS_KEY, DATA_KEY, NOTIFY_KEY, SECOND_ACCESS_KEY

DB_PASSWORD = "db-pw-Zq81x"
TEST_APP_PASSWORD = "demo-pw-Kx72"


def production(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A minimal complete production environment."""
    env = {
        "ISV_ENV": "production",
        "ISV_ACCESS_KEYS": f"{ACCESS_KEY},{SECOND_ACCESS_KEY}",
        "ISV_NOTIFY_KEYS": NOTIFY_KEY,
        "ISV_DATA_KEY": DATA_KEY,
        "ISV_INSTANCE_DIR": str(tmp_path / "instance"),
        "ISV_FRONTEND_URL_TEMPLATE": "https://app.example.com/t/{instance_id}",
    }
    env.update(overrides)
    return env


def refused(env: dict[str, str]) -> SettingsError:
    """The SettingsError load_settings raises for `env` (the test fails on no error or another error)."""
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    return info.value


def shown(exc: BaseException) -> str:
    """Everything an operator sees when startup fails: the message and the whole traceback."""
    return "".join(traceback.format_exception(exc))


# --- defaults -----------------------------------------------------------------------------------------


def test_development_defaults(tmp_path, monkeypatch):
    """Empty environment: development, 60 s window, /saasproduce, SQLite in ./instance, generated keys."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    instance_dir = (tmp_path / "instance").resolve()
    assert settings.env == "development"
    assert settings.signature_tolerance == 60
    assert settings.of("koogallery").produce_path == "/saasproduce"
    assert settings.instance_dir == instance_dir
    assert settings.database_url == f"sqlite:///{instance_dir / 'isvserver.sqlite3'}"
    assert settings.max_body_bytes == 65536
    assert settings.log_level == "INFO"
    assert settings.of("koogallery").test_app_info is None
    assert settings.frontend_url_template.startswith("http://localhost")
    assert "{instance_id}" in settings.frontend_url_template
    assert len(settings.keys("basic")) == 1
    assert len(settings.keys("notify")) == 1
    assert settings.keys("basic") != settings.keys("notify")
    assert len(settings.data_key) == 44
    assert (instance_dir / DEV_KEYS_FILE).is_file()


def test_production_defaults(tmp_path):
    """Production with only the required variables: the same defaults, no admin URL, no generated keys."""
    settings = load_settings(production(tmp_path))
    instance_dir = (tmp_path / "instance").resolve()
    assert settings.env == "production"
    assert settings.signature_tolerance == 60
    assert settings.of("koogallery").produce_path == "/saasproduce"
    assert settings.database_url == f"sqlite:///{instance_dir / 'isvserver.sqlite3'}"
    assert settings.admin_url_template == ""
    assert settings.keys("notify") == (NOTIFY_KEY,)
    assert not (instance_dir / DEV_KEYS_FILE).exists()


def test_every_variable_is_read(tmp_path):
    """Each ISV_* variable lands in its setting (lists trimmed, log level upper-cased)."""
    app_info = {
        "frontEndUrl": "https://demo.example",
        "userName": "demo",
        "password": TEST_APP_PASSWORD,
        "memo": "m",
    }
    env = {
        "ISV_ENV": "production",
        "ISV_ACCESS_KEYS": " key-one-11111111 , key-two-22222222 ,",
        "ISV_NOTIFY_KEYS": "notify-33333333333,notify-44444444444",
        "ISV_DATABASE_URL": f"postgresql://isv:{DB_PASSWORD}@db.example:5432/isv",
        "ISV_DATA_KEY": DATA_KEY,
        "ISV_INSTANCE_DIR": str(tmp_path / "inst"),
        "ISV_FRONTEND_URL_TEMPLATE": "https://t.example/{order_id}/{order_line_id}/{instance_id}",
        "ISV_ADMIN_URL_TEMPLATE": "https://admin.example/{instance_id}",
        "ISV_SIGNATURE_TOLERANCE": "120",
        "ISV_PRODUCE_PATH": "/kg/produce",
        "ISV_MAX_BODY_BYTES": "2048",
        "ISV_TEST_APP_INFO": json.dumps(app_info),
        "ISV_LOG_LEVEL": "debug",
    }
    settings = load_settings(env)
    assert settings.env == "production"
    assert settings.keys("basic") == ("key-one-11111111", "key-two-22222222")
    assert settings.keys("notify") == ("notify-33333333333", "notify-44444444444")
    assert settings.database_url == env["ISV_DATABASE_URL"]
    assert settings.data_key == DATA_KEY.encode()
    assert settings.instance_dir == (tmp_path / "inst").resolve()
    assert settings.frontend_url_template == env["ISV_FRONTEND_URL_TEMPLATE"]
    assert settings.admin_url_template == env["ISV_ADMIN_URL_TEMPLATE"]
    assert settings.signature_tolerance == 120
    assert settings.of("koogallery").produce_path == "/kg/produce"
    assert settings.max_body_bytes == 2048
    assert settings.of("koogallery").test_app_info == app_info
    assert settings.log_level == "DEBUG"


def test_process_environment_is_not_consulted_when_env_is_given(tmp_path, monkeypatch):
    """An explicit env dict is the whole environment: ISV_* variables of the process do not leak in."""
    monkeypatch.setenv("ISV_SIGNATURE_TOLERANCE", "999")
    monkeypatch.setenv("ISV_PRODUCE_PATH", "/from-process")
    settings = load_settings(production(tmp_path))
    assert settings.signature_tolerance == 60
    assert settings.of("koogallery").produce_path == "/saasproduce"


# --- *_FILE ---------------------------------------------------------------------------------------------

FILE_CASES = {
    "ISV_ACCESS_KEYS": (
        "file-key-12345678,file-key-56789012",
        "access_keys",
        ("file-key-12345678", "file-key-56789012"),
    ),
    "ISV_NOTIFY_KEYS": ("file-notify-1234", "notify_keys", ("file-notify-1234",)),
    "ISV_DATA_KEY": (DATA_KEY, "data_key", DATA_KEY.encode()),
    "ISV_DATABASE_URL": (f"postgresql://isv:{DB_PASSWORD}@db/isv", "database_url", None),
    "ISV_FRONTEND_URL_TEMPLATE": ("https://f.example/{instance_id}", "frontend_url_template", None),
    "ISV_SIGNATURE_TOLERANCE": ("30", "signature_tolerance", 30),
    "ISV_TEST_APP_INFO": (
        '{"frontEndUrl":"https://d.example"}',
        "test_app_info",
        {"frontEndUrl": "https://d.example"},
    ),
}


@pytest.mark.parametrize("name", FILE_CASES)
def test_file_variant_is_read_and_trimmed(tmp_path, name):
    """NAME_FILE points at a file holding the value (a trailing newline is ignored)."""
    value, attribute, expected = FILE_CASES[name]
    secret_file = tmp_path / f"{name.lower()}.txt"
    secret_file.write_text(value + "\n", encoding="utf-8")
    env = production(tmp_path)
    env.pop(name, None)
    env[f"{name}_FILE"] = str(secret_file)
    settings = load_settings(env)
    assert setting(settings, attribute) == (value if expected is None else expected)


def setting(settings, attribute: str):
    """A setting by name: the core's attributes, the keys by interface, KooGallery's own."""
    adapter_views = {
        "access_keys": lambda s: s.keys("basic"),
        "notify_keys": lambda s: s.keys("notify"),
        "test_app_info": lambda s: s.of("koogallery").test_app_info,
    }
    return adapter_views.get(attribute, lambda s: getattr(s, attribute))(settings)


@pytest.mark.parametrize("name", ["ISV_ACCESS_KEYS", "ISV_DATA_KEY", "ISV_NOTIFY_KEYS", "ISV_DATABASE_URL"])
def test_variable_and_its_file_both_set_is_refused(tmp_path, name):
    """Setting NAME and NAME_FILE together is an error naming both, without either value."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("file-secret-value-77\n", encoding="utf-8")
    env = production(tmp_path, ISV_DATABASE_URL=f"postgresql://isv:{DB_PASSWORD}@db/isv")
    env[f"{name}_FILE"] = str(secret_file)
    exc = refused(env)
    assert name in str(exc)
    assert f"{name}_FILE" in str(exc)
    assert "file-secret-value-77" not in shown(exc)
    assert env[name] not in shown(exc)


def test_unreadable_file_is_refused(tmp_path):
    """A NAME_FILE that cannot be read is an error naming NAME_FILE."""
    env = production(tmp_path)
    del env["ISV_DATA_KEY"]
    env["ISV_DATA_KEY_FILE"] = str(tmp_path / "missing.key")
    exc = refused(env)
    assert "ISV_DATA_KEY_FILE" in str(exc)


# --- production refuses to start without its secrets ----------------------------------------------------


@pytest.mark.parametrize("name", ["ISV_ACCESS_KEYS", "ISV_DATA_KEY", "ISV_FRONTEND_URL_TEMPLATE"])
@pytest.mark.parametrize("how", ["unset", "empty", "blank"])
def test_production_requires_variable(tmp_path, name, how):
    """Production never falls back to generated keys or a localhost URL: the error names the variable."""
    env = production(tmp_path)
    if how == "unset":
        del env[name]
    else:
        env[name] = "" if how == "empty" else "  "
    exc = refused(env)
    assert name in str(exc)
    assert not (tmp_path / "instance" / DEV_KEYS_FILE).exists()


# --- invalid values: SettingsError naming the variable, never showing the secret --------------------------

INVALID = [
    # (variable, value, substring that must not be shown or None)
    ("ISV_ENV", "staging", None),
    ("ISV_SIGNATURE_TOLERANCE", "0", None),
    ("ISV_SIGNATURE_TOLERANCE", "abc", None),
    ("ISV_SIGNATURE_TOLERANCE", "-5", None),
    ("ISV_SIGNATURE_TOLERANCE", "3601", None),
    ("ISV_SIGNATURE_TOLERANCE", "1.5", None),
    ("ISV_MAX_BODY_BYTES", "lots", None),
    ("ISV_MAX_BODY_BYTES", "10", None),
    ("ISV_ANSWER_DEADLINE_MS", "5000", None),  # past the marketplace's 5 s
    ("ISV_ANSWER_DEADLINE_MS", "499", None),
    ("ISV_ANSWER_DEADLINE_MS", "4s", None),
    ("ISV_DATA_KEY", "not-a-data-key-SECRET-0123456789", "not-a-data-key-SECRET"),
    ("ISV_DATA_KEY", "c2hvcnQta2V5LXNlY3JldC0xNg==", "c2hvcnQta2V5LXNlY3JldC0xNg"),  # 16 bytes
    ("ISV_DATA_KEY", DATA_KEY[:-2], DATA_KEY[:-2]),
    ("ISV_DATA_KEY", "ключ-ключ-ключ-ключ-ключ-ключ-ключ-ключ-abcd", "ключ-ключ"),
    ("ISV_ACCESS_KEYS", "tiny-k1", "tiny-k1"),
    ("ISV_ACCESS_KEYS", f"{ACCESS_KEY},bad\x01key-secret-9", "key-secret-9"),
    ("ISV_ACCESS_KEYS", "clé-secrète-123456", "secrète"),
    ("ISV_ACCESS_KEYS", "dup-secret-key-1,dup-secret-key-1", "dup-secret-key-1"),
    ("ISV_NOTIFY_KEYS", ACCESS_KEY, ACCESS_KEY),
    ("ISV_NOTIFY_KEYS", f"other-notify-key,{SECOND_ACCESS_KEY}", SECOND_ACCESS_KEY),
    ("ISV_FRONTEND_URL_TEMPLATE", "ftp://files.example/{instance_id}", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "/relative/{instance_id}", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "https://x.example/{tenant}", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "https://x.example/{0}", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "https://x.example/{instance_id", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "https://x.example/{instance_id.__class__}", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "https://x.example/{instance_id:d}", None),
    ("ISV_FRONTEND_URL_TEMPLATE", "https://[x.example/{instance_id}", None),
    ("ISV_ADMIN_URL_TEMPLATE", "javascript:alert(1)", None),
    ("ISV_ADMIN_URL_TEMPLATE", "https://x.example/{secret}", None),
    ("ISV_DATABASE_URL", f"mysql://isv:{DB_PASSWORD}@db/isv", DB_PASSWORD),
    ("ISV_DATABASE_URL", "sqlite://relative.db", None),
    ("ISV_DATABASE_URL", f"postgresql://isv:{DB_PASSWORD}@[db/isv", DB_PASSWORD),
    (
        "ISV_TEST_APP_INFO",
        f'{{"frontEndUrl":"https://d.example","password":"{TEST_APP_PASSWORD}"',
        TEST_APP_PASSWORD,
    ),
    ("ISV_TEST_APP_INFO", "[]", None),
    (
        "ISV_TEST_APP_INFO",
        f'{{"adminUrl":"https://d.example","password":"{TEST_APP_PASSWORD}"}}',
        TEST_APP_PASSWORD,
    ),
    ("ISV_TEST_APP_INFO", '{"frontEndUrl":"https://d.example","password":12345678}', None),
    (
        "ISV_TEST_APP_INFO",
        f'{{"frontEndUrl":"https://d.example","token":"{TEST_APP_PASSWORD}"}}',
        TEST_APP_PASSWORD,
    ),
    ("ISV_TEST_APP_INFO", json.dumps({"frontEndUrl": "https://d.example/" + "x" * 500}), None),
    ("ISV_PRODUCE_PATH", "saasproduce", None),
    ("ISV_PRODUCE_PATH", "/saasproduce?x=1", None),
    ("ISV_LOG_LEVEL", "verbose", None),
]


@pytest.mark.parametrize(("name", "value", "secret"), INVALID, ids=[f"{n}={v[:44]}" for n, v, _ in INVALID])
def test_invalid_value_is_refused_by_name_without_the_secret(tmp_path, name, value, secret):
    """A bad value raises SettingsError (no other exception) naming the variable; a secret is never shown."""
    exc = refused(production(tmp_path, **{name: value}))
    assert name in str(exc)
    if secret is not None:
        assert secret not in shown(exc)


@pytest.mark.parametrize("value", [ACCESS_KEY, f"short,{ACCESS_KEY}"])
def test_bad_key_in_file_is_not_shown(tmp_path, value):
    """A bad key read from ISV_NOTIFY_KEYS_FILE is refused without showing it."""
    secret_file = tmp_path / "notify.keys"
    secret_file.write_text(value, encoding="utf-8")
    env = production(tmp_path)
    del env["ISV_NOTIFY_KEYS"]
    env["ISV_NOTIFY_KEYS_FILE"] = str(secret_file)
    exc = refused(env)
    assert "ISV_NOTIFY_KEYS" in str(exc)
    assert ACCESS_KEY not in shown(exc)


# --- development keys ---------------------------------------------------------------------------------


def development(tmp_path: Path, folder: str = "instance") -> dict[str, str]:
    return {"ISV_ENV": "development", "ISV_INSTANCE_DIR": str(tmp_path / folder)}


def test_development_keys_are_generated_once_and_reused(tmp_path):
    """The first development start writes keys to ISV_INSTANCE_DIR; the next start reads the same keys."""
    first = load_settings(development(tmp_path))
    keys_file = tmp_path / "instance" / DEV_KEYS_FILE
    stored = json.loads(keys_file.read_text(encoding="utf-8"))
    second = load_settings(development(tmp_path))
    assert (second.keys("basic"), second.keys("notify"), second.data_key) == (
        first.keys("basic"),
        first.keys("notify"),
        first.data_key,
    )
    assert first.keys("basic") == (stored["ISV_ACCESS_KEYS"],)
    assert first.keys("notify") == (stored["ISV_NOTIFY_KEYS"],)
    assert first.data_key == stored["ISV_DATA_KEY"].encode()
    assert json.loads(keys_file.read_text(encoding="utf-8")) == stored
    assert list((tmp_path / "instance").glob(".keys-*")) == []  # no temporary file left behind


def test_development_keys_file_is_private(tmp_path):
    """The generated keys file is readable by its owner only."""
    load_settings(development(tmp_path))
    mode = (tmp_path / "instance" / DEV_KEYS_FILE).stat().st_mode
    assert mode & (stat.S_IRWXG | stat.S_IRWXO) == 0


def test_development_keys_differ_per_instance_dir(tmp_path):
    """Each instance folder gets its own random keys."""
    one = load_settings(development(tmp_path, "one"))
    two = load_settings(development(tmp_path, "two"))
    assert one.keys("basic") != two.keys("basic")
    assert one.data_key != two.data_key


LICENSE_KEY = "A" * 43  # an Ed25519 seed (32 bytes) as `isvserver license keygen` prints it


def test_development_with_explicit_keys_generates_nothing(tmp_path):
    """Development with its keys given uses them and writes no keys file."""
    given = {"ISV_ACCESS_KEYS": ACCESS_KEY, "ISV_DATA_KEY": DATA_KEY, "ISV_LICENSE_SIGNING_KEY": LICENSE_KEY}
    settings = load_settings(development(tmp_path) | given)
    assert settings.keys("basic") == (ACCESS_KEY,)
    assert settings.data_key == DATA_KEY.encode()
    assert not (tmp_path / "instance" / DEV_KEYS_FILE).exists()


def test_development_keeps_a_given_data_key(tmp_path):
    """Only the missing secrets are generated: a given ISV_DATA_KEY is kept."""
    settings = load_settings(development(tmp_path) | {"ISV_DATA_KEY": DATA_KEY})
    assert settings.data_key == DATA_KEY.encode()
    assert len(settings.keys("basic")) == 1


# --- nothing secret in repr or printed URLs -------------------------------------------------------------


def test_repr_shows_no_secret(tmp_path):
    """repr/str of the settings hold no key, data key or passwords."""
    env = production(
        tmp_path,
        ISV_DATABASE_URL=f"postgresql://isv:{DB_PASSWORD}@db/isv",
        ISV_TEST_APP_INFO=json.dumps({"frontEndUrl": "https://d.example", "password": TEST_APP_PASSWORD}),
    )
    settings = load_settings(env)
    for text in (repr(settings), str(settings), f"{settings!r}"):
        for secret in (ACCESS_KEY, SECOND_ACCESS_KEY, NOTIFY_KEY, DATA_KEY, DB_PASSWORD, TEST_APP_PASSWORD):
            assert secret not in text
    assert "production" in repr(settings)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql://isv:{DB_PASSWORD}@db:5432/isv", "postgresql://isv:***@db:5432/isv"),
        (f"postgres://isv:{DB_PASSWORD}@db/isv?sslmode=require", "postgres://isv:***@db/isv?sslmode=require"),
        ("postgresql://admin:admin@admin/admin", "postgresql://admin:***@admin/admin"),
        ("postgresql://isv:p%40ss%3Aw0rd@db/isv", "postgresql://isv:***@db/isv"),
        ("postgresql://isv:p@ss@db/isv", "postgresql://isv:***@db/isv"),
    ],
)
def test_redacted_url_hides_the_password(url, expected):
    """The password of a PostgreSQL URL is replaced; user, host, port, database and options stay."""
    assert redacted_url(url) == expected


@pytest.mark.parametrize("url", ["postgresql://isv@db/isv", "sqlite:////var/lib/isv/isv.sqlite3"])
def test_redacted_url_without_password_is_unchanged(url):
    assert redacted_url(url) == url


def test_redacted_url_hides_a_password_given_as_query_parameter():
    """libpq and peewee also take the password as ?password=…; it must not be printed either."""
    shown_url = redacted_url(f"postgresql://isv@db/isv?sslmode=require&password={DB_PASSWORD}")
    assert DB_PASSWORD not in shown_url
    assert "db/isv" in shown_url


def test_the_answer_deadline_defaults_comfortably_under_the_marketplaces_5_s(tmp_path: Path) -> None:
    assert load_settings(production(tmp_path)).answer_deadline_ms == 4000
    assert load_settings(production(tmp_path, ISV_ANSWER_DEADLINE_MS="4900")).answer_deadline_ms == 4900
