"""Schema migrations (SQLite and PostgreSQL), the template provisioner and secret sealing."""

from __future__ import annotations

import re
import shutil
import string
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from peewee import Database, IntegrityError

from isvserver import db, migrations
from isvserver.keystore import AccessKey
from isvserver.marketplaces.koogallery.models import OrderNotification
from isvserver.migrations import available, migrate, pending
from isvserver.models import Instance, InstanceEvent, utcnow
from isvserver.provisioning import InstanceView, LifecycleEvent, ProvisioningError
from isvserver.provisioning.template import (
    PASSWORD_SYMBOLS,
    TemplateProvisioner,
    generate_password,
    generate_user_name,
    render_url,
)
from isvserver.sealing import UnsealError, seal, unseal

from support.tables import ALL_MODELS, LABELS, SHIPPED, SHIPPED_ADAPTERS

TABLES = {
    "instance",
    "instance_event",
    "nonce",
    "callback_log",
    "rejected_call_count",
    "rejected_call_minute",
    "order_notification",
    "access_key",
    "delivery",
    "order_line",
    "parked_change",
    "periodic_job",
    "external_id",
    "usage_upload",
    "usage_record",
}
V1_TABLES = {"koogallery_v1_buyer", "koogallery_license"}
KIT_TABLES = {"kit_tenant", "kit_application", "kit_user", "kit_org", "kit_sso_state", "kit_sso_login"}
VCLOUD_TABLES = {"vcloud_order", "vcloud_cursor"}
BROKER_TABLES = {"broker_client", "broker_token", "broker_token_failure", "broker_instance"}


# --- migrations ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database that has never been migrated."""
    if request.param == "sqlite":
        database = db.make_database(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
        yield database
        db.close_all(database)
        return
    server = request.getfixturevalue("postgres_server")
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    database = db.make_database(server.create_database(name))
    yield database
    db.close_all(database)
    server.drop_database(name)


def versions(database: Database) -> list[tuple[int, str]]:
    with db.connected(database):
        cursor = database.execute_sql("SELECT version, name, applied_at FROM schema_version ORDER BY version")
        rows = cursor.fetchall()
    assert all(applied_at is not None for _, _, applied_at in rows)
    return [(version, name) for version, name, _ in rows]


def adapter_versions(database: Database) -> list[tuple[str, int, str]]:
    with db.connected(database):
        cursor = database.execute_sql(
            "SELECT adapter, version, name, applied_at FROM adapter_schema_version ORDER BY adapter, version"
        )
        rows = cursor.fetchall()
    assert all(applied_at is not None for *_, applied_at in rows)
    return [(adapter, version, name) for adapter, version, name, _ in rows]


def tables(database: Database) -> set[str]:
    with db.connected(database):
        return {name for name in database.get_tables() if not name.startswith("sqlite_")}


def test_fresh_database_gets_every_table_and_version_rows(fresh_db: Database) -> None:
    assert tables(fresh_db) == set()
    assert [m.label for m in pending(fresh_db)] == [m.label for m in available()] == LABELS

    applied = migrate(fresh_db)

    assert [(m.version, m.name) for m in applied] == [
        *SHIPPED,
        (1, "broker/broker"),
        (1, "koogallery/v1"),
        (1, "koogallery_kit/sync"),
        (2, "koogallery_kit/sso"),
        (1, "product_api/product_tokens"),
        (1, "vcloud/orders"),
    ]
    assert [f"{m.version:04d}_{m.name}" for m in applied][-4:] == [
        "0001_koogallery_kit/sync",
        "0002_koogallery_kit/sso",
        "0001_product_api/product_tokens",
        "0001_vcloud/orders",
    ]
    assert tables(fresh_db) == {
        *TABLES,
        *KIT_TABLES,
        *V1_TABLES,
        *VCLOUD_TABLES,
        *BROKER_TABLES,
        "product_token",
        "schema_version",
        "adapter_schema_version",
    }
    assert versions(fresh_db) == SHIPPED
    assert adapter_versions(fresh_db) == SHIPPED_ADAPTERS
    assert pending(fresh_db) == []


def test_second_migrate_applies_nothing(fresh_db: Database) -> None:
    migrate(fresh_db)

    again = migrate(fresh_db)

    assert again == []
    assert versions(fresh_db) == SHIPPED
    assert adapter_versions(fresh_db) == SHIPPED_ADAPTERS
    assert pending(fresh_db) == []


def test_migrated_tables_match_the_models(fresh_db: Database) -> None:
    migrate(fresh_db)

    with db.connected(fresh_db):
        for model in (*ALL_MODELS, AccessKey):
            table = model._meta.table_name
            columns = {c.name for c in fresh_db.get_columns(table)}
            assert columns == {f.column_name for f in model._meta.sorted_fields}, table


def test_unique_constraints_carry_idempotency(fresh_db: Database) -> None:
    migrate(fresh_db)
    now = utcnow()
    line = {"marketplace": "koogallery", "order_id": "CS1", "order_line_id": "CS1-1"}
    created = {**line, "creation_key": "order:3:CS1:CS1-1"}

    with db.connected(fresh_db), fresh_db.bind_ctx([Instance, InstanceEvent, OrderNotification]):
        instance = Instance.create(
            instance_id="u-1", business_id="b", state="active", created_at=now, updated_at=now, **created
        )
        with pytest.raises(IntegrityError), fresh_db.atomic():
            Instance.create(
                instance_id="u-2", business_id="b", state="active", created_at=now, updated_at=now, **created
            )
        with pytest.raises(IntegrityError), fresh_db.atomic():
            Instance.create(
                instance_id="u-1",
                business_id="b",
                state="active",
                created_at=now,
                updated_at=now,
                **{**created, "order_line_id": "CS1-2", "creation_key": "order:3:CS1:CS1-2"},
            )
        InstanceEvent.create(instance=instance, kind="renewed", idempotency_key="order:CS9:CS9-1")
        with pytest.raises(IntegrityError), fresh_db.atomic():
            InstanceEvent.create(instance=instance, kind="renewed", idempotency_key="order:CS9:CS9-1")
        OrderNotification.create(times_received=1, **line)
        with pytest.raises(IntegrityError), fresh_db.atomic():
            OrderNotification.create(times_received=1, **line)
        assert Instance.select().count() == 1


@pytest.fixture
def migrations_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped migrations that the test may add scripts to."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for script in available():
        if script.adapter:
            continue
        shutil.copy(script.path, folder / script.path.name)
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", folder)
    return folder


def test_pending_lists_only_what_is_missing(fresh_db: Database, migrations_dir: Path) -> None:
    migrate(fresh_db)
    (migrations_dir / "0098_instance_note.sql").write_text(
        "-- a later release adds a column\nALTER TABLE instance ADD COLUMN note VARCHAR(20);\n",
        encoding="utf-8",
    )
    (migrations_dir / "0099_tag.sql").write_text(
        "CREATE TABLE tag (id {pk}, instance_ref {fk} NOT NULL REFERENCES instance (id));\n"
        "CREATE INDEX tag_instance ON tag (instance_ref);\n",
        encoding="utf-8",
    )
    (migrations_dir / "notes.txt").write_text("not a migration", encoding="utf-8")

    assert [(m.version, m.name) for m in pending(fresh_db)] == [(98, "instance_note"), (99, "tag")]

    applied = migrate(fresh_db)

    assert [m.version for m in applied] == [98, 99]
    assert versions(fresh_db) == [*SHIPPED, (98, "instance_note"), (99, "tag")]
    assert "tag" in tables(fresh_db)
    with db.connected(fresh_db):
        assert "note" in {c.name for c in fresh_db.get_columns("instance")}
    assert pending(fresh_db) == []
    assert migrate(fresh_db) == []


def test_a_failing_migration_is_rolled_back_and_stays_pending(
    fresh_db: Database, migrations_dir: Path
) -> None:
    migrate(fresh_db)
    (migrations_dir / "0098_broken.sql").write_text(
        "CREATE TABLE half_done (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n", encoding="utf-8"
    )

    with pytest.raises(Exception, match="no_such_table"):
        migrate(fresh_db)

    assert "half_done" not in tables(fresh_db)
    assert versions(fresh_db) == SHIPPED
    assert [m.version for m in pending(fresh_db)] == [98]


@pytest.fixture
def adapters_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An extra folder on the adapters' path with an adapter `zz_probe` that must not be imported."""
    import isvserver.marketplaces

    folder = tmp_path / "adapters"
    package = folder / "zz_probe"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('adapters must not be imported')\n")
    (package / "migrations" / "0001_probe.sql").write_text(
        "CREATE TABLE zz_probe (id {pk}, note VARCHAR(20));\n", encoding="utf-8"
    )
    (folder / "zz_plain.py").write_text("raise RuntimeError('not a package')\n")
    monkeypatch.setattr(isvserver.marketplaces, "__path__", [*isvserver.marketplaces.__path__, str(folder)])
    return package / "migrations"


def test_adapter_migrations_are_found_without_importing_the_adapter(
    fresh_db: Database, adapters_dir: Path
) -> None:
    assert migrations.adapter_dirs()["zz_probe"] == adapters_dir
    assert "koogallery_kit" in migrations.adapter_dirs()
    assert [m.label for m in pending(fresh_db)] == [*LABELS, "zz_probe/0001_probe"]

    applied = migrate(fresh_db)

    assert applied[-1].adapter == "zz_probe" and f"{applied[-1].version:04d}_{applied[-1].name}" == (
        "0001_zz_probe/probe"
    )
    assert adapter_versions(fresh_db) == [*SHIPPED_ADAPTERS, ("zz_probe", 1, "probe")]
    assert versions(fresh_db) == SHIPPED
    assert "zz_probe" in tables(fresh_db)


def test_adapter_versions_are_counted_per_adapter(fresh_db: Database, adapters_dir: Path) -> None:
    migrate(fresh_db)
    (adapters_dir / "0002_more.sql").write_text("ALTER TABLE zz_probe ADD COLUMN more INTEGER;\n")
    (adapters_dir / "0004_broken.sql").write_text(
        "CREATE TABLE zz_half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )

    assert [m.label for m in pending(fresh_db)] == ["zz_probe/0002_more", "zz_probe/0004_broken"]
    with pytest.raises(Exception, match="no_such_table"):
        migrate(fresh_db)

    assert adapter_versions(fresh_db) == [
        *SHIPPED_ADAPTERS,
        ("zz_probe", 1, "probe"),
        ("zz_probe", 2, "more"),
    ]
    assert "zz_half" not in tables(fresh_db)
    assert [m.label for m in pending(fresh_db)] == ["zz_probe/0004_broken"]


# --- template provisioner --------------------------------------------------------------------------


def instance(
    instance_id: str = "inst-1", order_id: str = "CS1", order_line_id: str = "CS1-000001"
) -> InstanceView:
    return InstanceView(instance_id, "koogallery", order_id, order_line_id, None, None, False)


def created(view: InstanceView) -> LifecycleEvent:
    """The instance.created event of `view`."""
    return LifecycleEvent("evt_1", "instance.created", datetime(2026, 1, 1), view)


def test_render_url_fills_and_quotes_placeholders() -> None:
    template = "https://app.example.com/{instance_id}/o/{order_id}?line={order_line_id}"

    url = render_url(template, instance("a b/c?d&e#f%", "订单:1", "L+1=2"))

    assert url == ("https://app.example.com/a%20b%2Fc%3Fd%26e%23f%25/o/%E8%AE%A2%E5%8D%95%3A1?line=L%2B1%3D2")


def test_render_url_limit_is_512_characters_after_quoting() -> None:
    prefix = "https://app.example.com/"
    template = prefix + "x" * (512 - len(prefix) - 6) + "{instance_id}"

    assert len(render_url(template, instance("abcdef"))) == 512
    with pytest.raises(ProvisioningError, match="512"):
        render_url(template, instance("abcdefg"))
    with pytest.raises(ProvisioningError):
        render_url(template, instance("a b c"))  # 5 characters, 9 once quoted


def test_template_provisioner_answers_urls_and_an_admin_account() -> None:
    provisioner = TemplateProvisioner(
        "https://app.example.com/t/{instance_id}", "https://admin.example.com/{order_id}"
    )

    info = provisioner.provision(created(instance("inst 1", "CS/9")))

    assert info.front_end_url == "https://app.example.com/t/inst%201"
    assert info.admin_url == "https://admin.example.com/CS%2F9"
    assert re.fullmatch(r"admin_[a-z0-9]{8}", info.user_name or "")
    assert info.password is not None
    assert info.password not in repr(info)
    assert provisioner.check_change(instance(), {"skuCode": "any"}) is None


def test_template_provisioner_without_admin_template() -> None:
    info = TemplateProvisioner("https://app.example.com/{instance_id}").provision(created(instance()))

    assert info.front_end_url == "https://app.example.com/inst-1"
    assert info.admin_url is None


def test_template_provisioner_fails_on_an_over_long_url() -> None:
    provisioner = TemplateProvisioner("https://app.example.com/" + "x" * 500 + "/{instance_id}")

    with pytest.raises(ProvisioningError):
        provisioner.provision(created(instance("i" * 64)))


def test_generated_passwords_are_strong_and_fresh() -> None:
    passwords = [generate_password() for _ in range(200)]

    allowed = set(string.ascii_letters + string.digits + PASSWORD_SYMBOLS)
    for password in passwords:
        assert len(password) == 20
        assert set(password) <= allowed
        assert any(c.isupper() for c in password)
        assert any(c.islower() for c in password)
        assert any(c.isdigit() for c in password)
        assert any(c in PASSWORD_SYMBOLS for c in password)
    assert len(set(passwords)) == len(passwords)


def test_generated_user_names_look_like_admin_accounts() -> None:
    names = [generate_user_name() for _ in range(100)]

    assert all(re.fullmatch(r"admin_[a-z0-9]{8}", name) for name in names)
    assert len(set(names)) > 90


# --- sealing ---------------------------------------------------------------------------------------

KEY = Fernet.generate_key()
OTHER_KEY = Fernet.generate_key()


@pytest.mark.parametrize("plaintext", ["Xy7!pass-word_20chars", "口令 ünïcødé ✓", "a"])
def test_seal_round_trip(plaintext: str) -> None:
    token = seal(KEY, plaintext)

    assert len(plaintext) < 4 or plaintext not in token
    assert token != seal(KEY, plaintext)  # a fresh IV every time
    assert unseal(KEY, token) == plaintext


def sealing_failure(key: bytes, token: str) -> UnsealError:
    with pytest.raises(UnsealError) as caught:
        unseal(key, token)
    return caught.value


def assert_discreet(error: UnsealError, plaintext: str) -> None:
    for text in (str(error), repr(error), str(error.__cause__ or "")):
        for secret in (KEY.decode(), OTHER_KEY.decode(), plaintext):
            assert secret not in text


def test_unseal_with_the_wrong_key_fails_discreetly() -> None:
    plaintext = "Secret-Pw-42!"
    token = seal(KEY, plaintext)

    error = sealing_failure(OTHER_KEY, token)

    assert_discreet(error, plaintext)


def flip(token: str, index: int) -> str:
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize(
    "alter",
    [
        lambda t: flip(t, len(t) // 2),
        lambda t: flip(t, len(t) - 5),
        lambda t: t[:-8],
        lambda t: "not a token at all",
        lambda t: "",
        lambda t: t[:10] + "é" + t[11:],
    ],
    ids=["flipped-middle", "flipped-mac", "truncated", "garbage", "empty", "non-ascii"],
)
def test_unseal_of_an_altered_token_fails_discreetly(alter: object) -> None:
    plaintext = "Secret-Pw-42!"
    token = seal(KEY, plaintext)

    error = sealing_failure(KEY, alter(token))  # type: ignore[operator]

    assert_discreet(error, plaintext)


def test_access_keys_of_any_declared_interface_survive_migration(
    fresh_db: Database, migrations_dir: Path
) -> None:
    """0004 drops the CHECK naming basic/notify: a key of another interface is stored, old rows kept."""
    script = migrations_dir / "0004_key_interfaces.sql"
    held = script.read_text(encoding="utf-8")
    script.unlink()
    migrate(fresh_db)
    now = utcnow()
    with db.connected(fresh_db), fresh_db.bind_ctx([AccessKey]):
        with pytest.raises(IntegrityError), fresh_db.atomic():
            AccessKey.create(interface="kit", fingerprint="f" * 16, created_at=now)
        AccessKey.create(interface="basic", fingerprint="a" * 16, created_at=now)
    script.write_text(held, encoding="utf-8")
    assert [m.version for m in migrate(fresh_db)] == [4]
    with db.connected(fresh_db), fresh_db.bind_ctx([AccessKey]):
        AccessKey.create(interface="kit", fingerprint="b" * 16, created_at=now)
        assert sorted(k.interface for k in AccessKey.select()) == ["basic", "kit"]
        with pytest.raises(IntegrityError), fresh_db.atomic():
            AccessKey.create(interface="kit", fingerprint="b" * 16, created_at=now)


def test_instances_keep_their_ids_and_history_through_the_creation_key_migration(
    fresh_db: Database, migrations_dir: Path
) -> None:
    """0006 rebuilds the instance table on SQLite: rows, ids and the rows referring to them survive, and
    each existing instance gets its order line's key (what KooGallery's newInstance resends look up)."""
    script = migrations_dir / "0006_instance_creation_key.sql"
    held = script.read_text(encoding="utf-8")
    script.unlink()
    # The scripts after 0006 wait too: a database meets 0006 with only what came before it.
    later = {
        path: path.read_text(encoding="utf-8")
        for path in migrations_dir.glob("*.sql")
        if path.name > script.name
    }
    for path in later:
        path.unlink()
    migrate(fresh_db)
    now = utcnow()
    with db.connected(fresh_db):
        fresh_db.execute_sql(
            "INSERT INTO instance (instance_id, marketplace, order_id, order_line_id, business_id, state, "
            "is_trial, created_at, updated_at) VALUES ('old-1', 'koogallery', 'CS:1', 'CS:1-1', 'b', "
            "'active', FALSE, ?, ?)".replace("?", fresh_db.param),
            (now, now),
        )
        ref = fresh_db.execute_sql("SELECT id FROM instance").fetchone()[0]
        with fresh_db.bind_ctx([InstanceEvent]):
            InstanceEvent.insert(instance=ref, kind="created", created_at=now).execute()
    script.write_text(held, encoding="utf-8")
    assert [m.version for m in migrate(fresh_db)] == [6]
    for path, text in later.items():  # the model holds their columns
        path.write_text(text, encoding="utf-8")
    assert [m.version for m in migrate(fresh_db)] == sorted(int(path.name[:4]) for path in later)
    with db.connected(fresh_db), fresh_db.bind_ctx([Instance, InstanceEvent]):
        instance = Instance.get(Instance.instance_id == "old-1")
        assert (instance.id, instance.creation_key) == (ref, "order:4:CS:1:CS:1-1")
        assert [e.kind for e in instance.events] == ["created"]
        with pytest.raises(IntegrityError), fresh_db.atomic():
            InstanceEvent.create(instance=9999, kind="created")  # foreign keys are on again
