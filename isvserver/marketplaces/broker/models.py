"""The broker's tables (SQL in migrations/0001_broker.sql): clients, tokens, token failures, instances."""

from __future__ import annotations

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, TextField

from isvserver.models import BaseModel, Instance, utcnow


class BrokerClient(BaseModel):
    """A platform allowed to call the broker; its secret kept only as an argon2 hash; never deleted."""

    client_id = CharField(max_length=64, unique=True)
    name = CharField(max_length=64)
    secret_hash = CharField(max_length=255)
    created_at = DateTimeField(default=utcnow)
    revoked_at = DateTimeField(null=True)

    class Meta:
        table_name = "broker_client"


class BrokerToken(BaseModel):
    """An access token issued to a client: only its SHA-256 digest, valid until `expires_at`."""

    digest = CharField(max_length=64, unique=True)
    client = ForeignKeyField(BrokerClient, column_name="client_ref", backref="tokens")
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()

    class Meta:
        table_name = "broker_token"


class BrokerTokenFailure(BaseModel):
    """How many token requests from one source failed in one minute (UNIX minute)."""

    source_address = CharField(max_length=64)
    minute = BigIntegerField()
    failures = IntegerField()

    class Meta:
        table_name = "broker_token_failure"
        indexes = ((("source_address", "minute"), True),)


class BrokerInstance(BaseModel):
    """A broker instance's plan, its parameters (secrets masked) and its `password` parameters sealed."""

    instance = ForeignKeyField(Instance, column_name="instance_ref", unique=True, backref="broker")
    service_id = CharField(max_length=255)
    plan_id = CharField(max_length=255)
    parameters = TextField()  # JSON: every parameter, each `password` one as "******"
    secrets_sealed = TextField(null=True)  # JSON of the `password` parameters, sealed with ISV_DATA_KEY
    context = TextField(null=True)
    maintenance_version = CharField(max_length=64, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "broker_instance"


MODELS = (BrokerClient, BrokerToken, BrokerTokenFailure, BrokerInstance)
