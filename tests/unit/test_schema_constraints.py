"""The migrated schema's primary keys and UNIQUE constraints, which carry idempotency, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import Database

from isvserver import db
from isvserver.keystore import AccessKey
from isvserver.migrations import migrate

from support.tables import ALL_MODELS

LINE = ("marketplace", "order_id", "order_line_id")
# Every UNIQUE constraint besides the primary key, by table: what makes a repeated call change nothing.
UNIQUE = {
    "access_key": {("fingerprint",)},
    "callback_log": set(),
    "rejected_call_count": {("source_address", "minute")},  # one count per source and minute
    "rejected_call_minute": {("minute",)},  # one count across sources per minute
    "delivery": {("event_ref",)},  # one delivery per event
    "instance": {("instance_id",), ("marketplace", "creation_key")},  # one per adapter's creation key
    "instance_event": {("instance_ref", "idempotency_key")},  # one event per change of an instance
    "nonce": set(),
    "order_line": {LINE},
    "order_notification": {LINE},
    "koogallery_v1_buyer": {("instance_id",)},  # one V1 buyer per instance
    "koogallery_license": {("instance_id",), ("license_id",)},  # one license per instance, ids unique
    "kit_tenant": {("instance_id",)},  # one tenant per instance
    "kit_application": {("instance_id", "app_id")},
    "kit_user": {("instance_id", "app_id", "user_name")},  # one authorisation per user and app
    "kit_org": {("instance_id", "org_code")},
    "kit_sso_state": {("state_hash",)},  # a state is used once
    "kit_sso_login": {("jti",)},  # one login per assertion id
    "parked_change": {("instance_id", "idempotency_key")},  # one parked change per key of an instance id
    "usage_upload": set(),
    "usage_record": {("metering_sn",)},  # one record per metering_sn: a resend is a duplicate
    "product_token": {("name",), ("digest",)},
    "broker_client": {("client_id",)},
    "broker_token": {("digest",)},  # a token is stored once, as its digest
    "broker_token_failure": {("source_address", "minute")},  # one count per source and minute
    "broker_instance": {("instance_ref",)},  # one broker record per instance
    "periodic_job": set(),  # one row per job name (its primary key)
    "external_id": {("instance_ref",)},  # one external id per instance
    "vcloud_order": {("order_id",)},  # one row per platform order
    "vcloud_cursor": set(),  # one cursor per wallet (its primary key)
}
PRIMARY_KEYS = (
    {table: ("id",) for table in UNIQUE}
    | {"nonce": ("digest",)}  # a nonce is used once
    | {"periodic_job": ("name",)}  # one schedule and lease per job
    | {"vcloud_cursor": ("name",)}
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A freshly migrated database."""
    if request.param == "sqlite":
        database = db.make_database(f"sqlite:///{tmp_path / 'schema.sqlite3'}")
        migrate(database)
        yield database
        db.close_all(database)
        return
    server = request.getfixturevalue("postgres_server")
    name = f"schema_{uuid.uuid4().hex[:12]}"
    database = db.make_database(server.create_database(name))
    migrate(database)
    yield database
    db.close_all(database)
    server.drop_database(name)


def test_every_table_of_the_models_is_listed() -> None:
    assert {model._meta.table_name for model in (*ALL_MODELS, AccessKey)} == set(UNIQUE)


@pytest.mark.parametrize("table", sorted(UNIQUE))
def test_migrated_unique_constraints_and_primary_keys(migrated_db: Database, table: str) -> None:
    with db.connected(migrated_db):
        primary_key = tuple(migrated_db.get_primary_keys(table))
        unique = {tuple(index.columns) for index in migrated_db.get_indexes(table) if index.unique}
    assert primary_key == PRIMARY_KEYS[table]
    assert unique - {primary_key} == UNIQUE[table]
