"""Tables, with the UNIQUE constraints that carry idempotency (schema in isvserver/migrations)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from isvserver.db import database


def utcnow() -> datetime:
    """Naive UTC now, the form every timestamp column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Instance(BaseModel):
    """A tenant sold through a marketplace; never deleted, release only marks it."""

    instance_id = CharField(max_length=64, unique=True)
    marketplace = CharField(max_length=32)
    creation_key = CharField(max_length=200)  # the adapter's idempotency key of the creation
    order_id = CharField(max_length=64, null=True)  # the order line that created it, if any
    order_line_id = CharField(max_length=64, null=True)
    business_id = CharField(max_length=64, null=True)
    state = CharField(max_length=16)
    is_trial = BooleanField(default=False)
    product_id = CharField(max_length=64, null=True)
    expire_at = DateTimeField(null=True)
    front_end_url = CharField(max_length=512, null=True)
    admin_url = CharField(max_length=512, null=True)
    user_name = CharField(max_length=128, null=True)
    password_encrypted = TextField(null=True)
    memo = CharField(max_length=1024, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    released_at = DateTimeField(null=True)
    lease_owner = CharField(max_length=64, null=True)  # the job runner delivering its changes now
    lease_until = DateTimeField(null=True)
    on_demand = BooleanField(default=False)  # pay-per-use: the product reports usage (isvserver.usage)

    class Meta:
        indexes = (
            (("marketplace", "creation_key"), True),
            (("marketplace", "order_id", "order_line_id"), False),
        )


class InstanceEvent(BaseModel):
    """One accepted lifecycle change; (instance, idempotency_key) is unique."""

    instance = ForeignKeyField(Instance, column_name="instance_ref", backref="events")
    kind = CharField(max_length=32)
    from_state = CharField(max_length=16, null=True)
    to_state = CharField(max_length=16, null=True)
    order_id = CharField(max_length=64, null=True)
    order_line_id = CharField(max_length=64, null=True)
    idempotency_key = CharField(max_length=200, null=True)
    detail = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "instance_event"


class Nonce(BaseModel):
    """A nonce already accepted (stored as a SHA-256 digest), kept for its interface's replay window."""

    digest = CharField(max_length=64, primary_key=True)
    seen_at = BigIntegerField()  # UNIX ms until which it is kept (seen + its interface's keeping time)


class CallLog(BaseModel):
    """Every call the marketplace made, with its verdict and answer; secrets and PII never stored."""

    request_id = CharField(max_length=32)
    received_at = DateTimeField(default=utcnow)
    interface = CharField(max_length=32)
    activity = CharField(max_length=32, null=True)
    test_flag = BooleanField(default=False)
    instance_id = TextField(null=True)
    order_id = CharField(max_length=64, null=True)
    order_line_id = CharField(max_length=64, null=True)
    business_id = CharField(max_length=64, null=True)
    verdict = CharField(max_length=32)
    reason = CharField(max_length=255, null=True)
    result_code = CharField(max_length=6)
    result_msg = CharField(max_length=255, null=True)
    latency_ms = FloatField()
    source_address = CharField(max_length=64, null=True)
    delivery = CharField(max_length=16, default="sent")  # sent, not_sent or client_gone

    class Meta:
        table_name = "callback_log"


class RejectedCallCount(BaseModel):
    """How many rejected calls one source address sent in one minute (UNIX minute), logged or not."""

    source_address = CharField(max_length=64)
    minute = BigIntegerField()
    calls = IntegerField()
    stored = IntegerField(default=0)  # of which logged (a line and a callback_log row)
    summarized = BooleanField(default=False)  # the summary line of the rest was logged

    class Meta:
        table_name = "rejected_call_count"
        indexes = ((("source_address", "minute"), True),)


class RejectedCallMinute(BaseModel):
    """How many rejected calls every source together sent in one minute (UNIX minute)."""

    minute = BigIntegerField(unique=True)
    calls = IntegerField()

    class Meta:
        table_name = "rejected_call_minute"


class Delivery(BaseModel):
    """A lifecycle change (one instance_event) to hand to the seller's product, in id order per instance."""

    instance = ForeignKeyField(Instance, column_name="instance_ref", backref="deliveries")
    event = ForeignKeyField(InstanceEvent, column_name="event_ref", object_id_name="event_id", unique=True)
    event_type = CharField(max_length=32)
    status = CharField(max_length=16)  # pending, delivered, failed
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow)
    last_error = CharField(max_length=255, null=True)
    created_at = DateTimeField(default=utcnow)
    delivered_at = DateTimeField(null=True)


class ParkedChange(BaseModel):
    """An adapter's change for an instance id not known yet; adopted (marked, never deleted) at creation."""

    instance_id = CharField(max_length=64)  # the marketplace's id: no foreign key, the instance may not exist
    kind = CharField(max_length=32)
    idempotency_key = CharField(max_length=200, null=True)
    detail = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    adopted_at = DateTimeField(null=True)
    event = ForeignKeyField(InstanceEvent, column_name="event_ref", object_id_name="event_id", null=True)

    class Meta:
        table_name = "parked_change"
        indexes = ((("instance_id", "idempotency_key"), True),)


class DecimalText(CharField):
    """A decimal kept exactly as its canonical text (both databases), read back as a Decimal."""

    def db_value(self, value: Any) -> Any:
        return None if value is None else format(Decimal(value).normalize(), "f")

    def python_value(self, value: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class UsageUpload(BaseModel):
    """One batch of usage records pushed to a marketplace; sent again byte for byte until it is taken."""

    marketplace = CharField(max_length=32)
    state = CharField(max_length=16)  # sending, taken, abandoned
    records = IntegerField()
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow)
    lease_owner = CharField(max_length=64, null=True)  # the pusher sending it now
    lease_until = DateTimeField(null=True)
    http_status = IntegerField(null=True)
    result_code = CharField(max_length=32, null=True)
    result_msg = CharField(max_length=255, null=True)
    body_sha256 = CharField(max_length=64, null=True)  # the body sent: every attempt sends the same
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "usage_upload"


class UsageRecord(BaseModel):
    """One metered record of an on-demand instance (the usage ledger); its metering_sn never changes."""

    instance = ForeignKeyField(Instance, column_name="instance_ref", backref="usage")
    marketplace = CharField(max_length=32)  # the instance's: where it is pushed
    metering_sn = CharField(max_length=64, unique=True)
    begin_at = DateTimeField()
    end_at = DateTimeField()
    recorded_at = DateTimeField(default=utcnow)  # the body's record_time: fixed once stored
    usage_value = DecimalText(max_length=20)
    related_instance_id = CharField(max_length=64, null=True)  # relate_pkg_instance of package products
    source = CharField(max_length=16)  # http, python, cli, csv
    source_name = CharField(max_length=64, null=True)  # the product token's name, the CSV file's
    state = CharField(max_length=16)  # pending, pushed, refused, expired
    attempts = IntegerField(default=0)
    upload = ForeignKeyField(
        UsageUpload, column_name="upload_ref", object_id_name="upload_id", null=True, backref="usage"
    )
    result_code = CharField(max_length=32, null=True)
    result_msg = CharField(max_length=255, null=True)
    pushed_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "usage_record"


class ExternalId(BaseModel):
    """The id a platform gave an instance, kept whole when it does not fit instance_id's charset."""

    instance = ForeignKeyField(Instance, column_name="instance_ref", unique=True, backref="external_ids")
    marketplace = CharField(max_length=32)
    external_id = TextField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "external_id"


class PeriodicJob(BaseModel):
    """A periodic job's schedule and the lease of the runner holding it (one run at a time, any host)."""

    name = CharField(max_length=64, primary_key=True)
    interval_s = FloatField()
    next_run_at = DateTimeField()
    lease_owner = CharField(max_length=64, null=True)
    lease_until = DateTimeField(null=True)
    last_started_at = DateTimeField(null=True)
    last_finished_at = DateTimeField(null=True)
    last_success_at = DateTimeField(null=True)
    last_error = CharField(max_length=255, null=True)
    runs = IntegerField(default=0)
    failures = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "periodic_job"


ALL_MODELS = (
    Instance,
    InstanceEvent,
    Nonce,
    CallLog,
    RejectedCallCount,
    RejectedCallMinute,
    Delivery,
    ParkedChange,
    UsageUpload,
    UsageRecord,
    ExternalId,
    PeriodicJob,
)
