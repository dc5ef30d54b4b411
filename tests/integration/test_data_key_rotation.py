"""Data-key rotation on SQLite and PostgreSQL: several ISV_DATA_KEY keys read, the first seals, and
`isvserver reseal` moves every stored secret to the first key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner, Result

from isvserver import create_app, db, keystore, rotation
from isvserver.cli import reseal
from isvserver.models import Instance
from isvserver.sealing import UnsealError, seal, sealed_with_first, unseal
from isvserver.settings import Settings, load_settings

from support.cli import invoke_cli
from support.harness import ACCESS_KEY, DATA_KEY, Marketplace, instance_row

KEY_A = DATA_KEY  # the key everything starts sealed with (the env fixture's)
KEY_B = "0dkqMcI6nHuWJ6nEvS3h8GZ4a4nJm1C9tLz0Q2pX7yE="
KEY_UNKNOWN = "u5aC0bS2L0mDkX9fR4o1HqWn3ZyT7eVgJ8iP6sQ2w0k="
STORED_KEY = "stored-basic-key-42"
OK, AUTH_FAILED, NOT_FOUND, INTERNAL_ERROR = "000000", "000001", "000003", "000005"
SECRETS = (KEY_A, KEY_B, KEY_UNKNOWN, STORED_KEY)


def env_with(env: dict[str, str], data_key: str) -> dict[str, str]:
    """The test environment with another ISV_DATA_KEY."""
    return {**env, "ISV_DATA_KEY": data_key}


@contextmanager
def serving(env: dict[str, str]) -> Iterator[Marketplace]:
    """A marketplace talking to a fresh app built from `env` (as a restarted worker would be)."""
    db.close_all()
    settings = load_settings(env)
    app = create_app(settings)
    app.config["TESTING"] = True
    try:
        yield Marketplace(app.test_client(), settings.of("koogallery").produce_path)
    finally:
        db.close_all()


# The Kit adapter's tables exist in every migrated database: resealed whether it is enabled or not.
KIT_COLUMNS = "".join(
    f"{column}: 0 resealed, 0 already current, 0 unreadable\n"
    for column in (
        "kit_tenant.name_sealed",
        "kit_application.client_secret_sealed",
        *(f"kit_user.{name}_sealed" for name in ("name", "position", "employee_code", "mobile", "email")),
        "kit_user.work_place_sealed",
        "kit_sso_state.code_verifier_sealed",
    )
)


def run_reseal(env: dict[str, str], *args: str) -> Result:
    """`isvserver reseal ARGS` in-process with exactly `env` as its ISV_* settings."""
    return invoke_cli(env, reseal.rotate_data_key, *args)


def shown(result: Result, passwords: dict[str, str]) -> str:
    """Everything the command printed (stdout and stderr), checked to hold no key and no password."""
    for secret in (*SECRETS, *passwords.values()):
        assert secret not in result.output
    return result.output


def create(marketplace: Marketplace, *order_ids: str) -> dict[str, str]:
    """Instances for these orders, and their passwords as queryInstance answers them."""
    ids = [
        marketplace.new_instance(order_id, business_id=f"inst-{order_id}").json["instanceId"]
        for order_id in order_ids
    ]
    return passwords_of(marketplace, *ids)


def passwords_of(marketplace: Marketplace, *instance_ids: str) -> dict[str, str]:
    """queryInstance's passwords of these instances (the call must succeed)."""
    answer = marketplace.query(*instance_ids)
    assert answer.code == OK, answer.json
    return {item["instanceId"]: item["appInfo"]["password"] for item in answer.json["info"]}


def store_key(settings: Settings, key: str = STORED_KEY) -> None:
    """An access key added at run time (sealed with the settings' first data key)."""
    with db.connected():
        keystore.add_key(settings, "basic", key)


def sealed_values() -> dict[tuple[str, int], str]:
    """Every sealed column value in the database, by (table, row id)."""
    with db.connected():
        instances = Instance.select(Instance.id, Instance.password_encrypted).tuples()
        stored = keystore.AccessKey.select(keystore.AccessKey.id, keystore.AccessKey.key_sealed).tuples()
        return {
            **{("instance", i): v for i, v in instances if v},
            **{("access_key", i): v for i, v in stored if v},
        }


def stored_key_code(marketplace: Marketplace, refused: bool = False) -> str:
    """queryInstance of an unknown id signed with the stored key: 000003 if it verified, else 000001."""
    body = {"activity": "queryInstance", "instanceId": "no-such-instance"}
    return marketplace.send(body, STORED_KEY, reply_key=ACCESS_KEY if refused else None).code


@pytest.fixture
def before(marketplace: Marketplace, settings: Settings) -> dict[str, str]:
    """Two instances and a stored access key, all sealed with key A; the instances' passwords."""
    passwords = create(marketplace, "CSA1", "CSA2")
    store_key(settings)
    assert stored_key_code(marketplace) == NOT_FOUND
    return passwords


def test_new_key_first_reads_old_secrets_and_seals_new_ones_with_it(
    before: dict[str, str], env: dict[str, str]
) -> None:
    """Needs views.py to pass rt.settings.data_keys to lifecycle.app_info."""
    with serving(env_with(env, f"{KEY_B},{KEY_A}")) as marketplace:
        assert passwords_of(marketplace, *before) == before
        new = create(marketplace, "CSB1")
        assert stored_key_code(marketplace) == NOT_FOUND

    (new_id,) = new
    token = instance_row(new_id).password_encrypted
    assert unseal(KEY_B.encode(), token) == new[new_id]
    with pytest.raises(UnsealError):
        unseal(KEY_A.encode(), token)
    for instance_id in before:
        assert sealed_with_first(KEY_A.encode(), instance_row(instance_id).password_encrypted)


def test_without_reseal_the_new_key_alone_cannot_read_old_secrets(
    before: dict[str, str], env: dict[str, str]
) -> None:
    with serving(env_with(env, KEY_B)) as marketplace:
        assert marketplace.query(*before).code == INTERNAL_ERROR
        assert stored_key_code(marketplace, refused=True) == AUTH_FAILED


def test_reseal_moves_every_secret_to_the_first_key(before: dict[str, str], env: dict[str, str]) -> None:
    with serving(env_with(env, f"{KEY_B},{KEY_A}")) as marketplace:
        made_with_b = create(marketplace, "CSB1")

    result = run_reseal(env_with(env, f"{KEY_B},{KEY_A}"))

    assert result.exit_code == 0, result.output
    assert shown(result, before | made_with_b) == (
        "instance.password_encrypted: 2 resealed, 1 already current, 0 unreadable\n"
        "access_key.key_sealed: 1 resealed, 0 already current, 0 unreadable\n"
        "broker_instance.secrets_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "order_line.details_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.customer_name_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.user_name_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.mobile_phone_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.email_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_license.license_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        + KIT_COLUMNS
        + "done: every stored secret is sealed with the first ISV_DATA_KEY key (2 configured)\n"
    )
    for (table, row_id), token in sealed_values().items():
        assert sealed_with_first(KEY_B.encode(), token), (table, row_id)
    with serving(env_with(env, KEY_B)) as marketplace:
        assert passwords_of(marketplace, *before, *made_with_b) == before | made_with_b
        assert stored_key_code(marketplace) == NOT_FOUND
    with serving(env_with(env, KEY_A)) as marketplace:
        assert marketplace.query(*before).code == INTERNAL_ERROR


def test_reseal_twice_changes_nothing_the_second_time(before: dict[str, str], env: dict[str, str]) -> None:
    rotated = env_with(env, f"{KEY_B},{KEY_A}")
    assert run_reseal(rotated).exit_code == 0
    after_first = sealed_values()

    again = run_reseal(rotated)

    assert again.exit_code == 0, again.output
    assert shown(again, before).splitlines()[:2] == [
        "instance.password_encrypted: 0 resealed, 2 already current, 0 unreadable",
        "access_key.key_sealed: 0 resealed, 1 already current, 0 unreadable",
    ]
    assert sealed_values() == after_first


def test_reseal_with_a_single_key_finds_everything_current(
    before: dict[str, str], env: dict[str, str]
) -> None:
    unchanged = sealed_values()

    result = run_reseal(env)

    assert result.exit_code == 0
    assert "instance.password_encrypted: 0 resealed, 2 already current, 0 unreadable" in shown(result, before)
    assert sealed_values() == unchanged


def test_a_secret_sealed_with_an_unknown_key_is_reported_and_the_rest_resealed(
    before: dict[str, str], env: dict[str, str]
) -> None:
    lost_id, kept_id = before
    lost = instance_row(lost_id)
    with db.connected():
        Instance.update(password_encrypted=seal(KEY_UNKNOWN.encode(), "lost-password")).where(
            Instance.id == lost.id
        ).execute()
    store_key(load_settings(env_with(env, KEY_UNKNOWN)), "sealed-elsewhere-key")
    with db.connected():
        elsewhere = keystore.AccessKey.get(
            keystore.AccessKey.fingerprint == keystore.fingerprint("sealed-elsewhere-key")
        )
    untouched = sealed_values()

    result = run_reseal(env_with(env, f"{KEY_B},{KEY_A}"))

    assert result.exit_code == 1
    output = shown(result, before)
    assert "lost-password" not in output and "sealed-elsewhere-key" not in output
    assert output == (
        "instance.password_encrypted: 1 resealed, 0 already current, 1 unreadable\n"
        "access_key.key_sealed: 1 resealed, 0 already current, 1 unreadable\n"
        "broker_instance.secrets_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "order_line.details_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.customer_name_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.user_name_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.mobile_phone_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_v1_buyer.email_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        "koogallery_license.license_sealed: 0 resealed, 0 already current, 0 unreadable\n"
        + KIT_COLUMNS
        + f"unreadable: instance row {lost.id} (instance_id {lost_id}): no ISV_DATA_KEY key opens it; "
        "left as it is\n"
        f"unreadable: access_key row {elsewhere.id} (fingerprint {elsewhere.fingerprint}): "
        "no ISV_DATA_KEY key opens it; left as it is\n"
        "Error: 2 stored secret(s) cannot be decrypted with any ISV_DATA_KEY key: add the key that sealed "
        "them to ISV_DATA_KEY (after the first) and run `isvserver reseal` again\n"
    )
    after = sealed_values()
    assert after[("instance", lost.id)] == untouched[("instance", lost.id)]
    assert after[("access_key", elsewhere.id)] == untouched[("access_key", elsewhere.id)]
    with serving(env_with(env, KEY_B)) as marketplace:
        assert passwords_of(marketplace, kept_id) == {kept_id: before[kept_id]}
        assert marketplace.query(lost_id).code == INTERNAL_ERROR


def test_reseal_works_in_batches(marketplace: Marketplace, env: dict[str, str]) -> None:
    passwords = create(marketplace, *(f"CSN{n}" for n in range(5)))

    result = run_reseal(env_with(env, f"{KEY_B},{KEY_A}"), "--batch-size", "2")

    assert result.exit_code == 0, result.output
    assert shown(result, passwords).startswith("instance.password_encrypted: 5 resealed, 0 already current")
    with serving(env_with(env, KEY_B)) as marketplace_b:
        assert passwords_of(marketplace_b, *passwords) == passwords


def test_a_secret_changed_while_resealing_is_left_to_its_writer(
    before: dict[str, str], settings: Settings, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update is conditional on the value read: a concurrent write is never overwritten."""
    first_id, _ = before
    row_id = instance_row(first_id).id
    concurrent = seal(KEY_B.encode(), "written-meanwhile")
    real_reseal = rotation.reseal

    def reseal_racing(keys: tuple[bytes, ...], token: str) -> str:
        if token == instance_row(first_id).password_encrypted:
            Instance.update(password_encrypted=concurrent).where(Instance.id == row_id).execute()
        return real_reseal(keys, token)

    monkeypatch.setattr(rotation, "reseal", reseal_racing)
    rotated = load_settings(env_with(env, f"{KEY_B},{KEY_A}"))
    with db.connected():
        report = rotation.reseal_all(rotated)

    assert (report.resealed, report.changed_meanwhile, report.unreadable) == (2, 1, [])
    assert instance_row(first_id).password_encrypted == concurrent


def test_reseal_refuses_invalid_settings_without_showing_keys(env: dict[str, str]) -> None:
    result = run_reseal(env_with(env, f"{KEY_A},{KEY_B},{KEY_A}"))

    assert result.exit_code == 1
    assert result.output == "Error: invalid settings: ISV_DATA_KEY: a key is listed twice\n"


def test_reseal_help_says_what_it_does() -> None:
    result = CliRunner().invoke(reseal.rotate_data_key, ["--help"])

    assert "Re-encrypt every stored secret with the first ISV_DATA_KEY" in result.output
    assert "--batch-size" in result.output


def test_reseal_reseals_the_tables_of_an_adapter_that_is_not_enabled(env: dict[str, str]) -> None:
    """The Kit adapter was enabled once (its rows sealed with key A), then ISV_MARKETPLACES was left
    out of the shell `reseal` runs from: its secrets are resealed all the same (before: skipped, yet
    'done' was printed, and dropping key A made them unreadable)."""
    from isvserver.marketplaces.koogallery_kit.models import KitApplication, KitTenant

    with serving(env), db.connected():  # serving binds the database
        tenant = KitTenant.create(
            instance_id="kit-1", tenant_id="t", order_id="o", tenant_code="c",
            name_sealed=seal(KEY_A.encode(), "Buyer Ltd."), domain_name="d",
        )  # fmt: skip
        app = KitApplication.create(
            instance_id="kit-1", tenant_id="t", app_id="a", client_id="c",
            client_secret_sealed=seal(KEY_A.encode(), "client-secret-1"),
        )  # fmt: skip
    assert "ISV_MARKETPLACES" not in env

    result = run_reseal(env_with(env, f"{KEY_B},{KEY_A}"))

    assert result.exit_code == 0, result.output
    assert "kit_tenant.name_sealed: 1 resealed, 0 already current, 0 unreadable" in result.output
    assert "kit_application.client_secret_sealed: 1 resealed" in result.output
    assert "client-secret-1" not in result.output and "Buyer Ltd." not in result.output
    with db.connected():
        assert unseal(KEY_B.encode(), KitTenant.get_by_id(tenant.id).name_sealed) == "Buyer Ltd."
        secret = KitApplication.get_by_id(app.id).client_secret_sealed
        assert unseal(KEY_B.encode(), secret) == "client-secret-1"


def test_reseal_does_not_say_done_when_an_adapter_of_the_database_is_not_installed(
    env: dict[str, str],
) -> None:
    """Tables of an adapter this installation lacks (recorded by its migrations) cannot be resealed."""
    with serving(env), db.connected():
        db.database.execute_sql(
            "INSERT INTO adapter_schema_version (adapter, version, name, applied_at) "
            "VALUES ('retired_market', 1, 'sync', CURRENT_TIMESTAMP)"
        )

    try:
        result = run_reseal(env_with(env, f"{KEY_B},{KEY_A}"))
    finally:  # the shared PostgreSQL test database is emptied of the models' tables only
        with serving(env), db.connected():
            db.database.execute_sql("DELETE FROM adapter_schema_version WHERE adapter = 'retired_market'")

    assert result.exit_code == 1
    assert "done:" not in result.output
    assert result.output.splitlines()[-1] == (
        "Error: the database holds tables of adapter(s) retired_market, which this installation lacks: "
        "their secrets were not resealed; keep every ISV_DATA_KEY key and run `isvserver reseal` from an "
        "installation that has them"
    )
