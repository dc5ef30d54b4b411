"""What the V Cloud poller stores (schema in migrations/0001_orders.sql): every order seen and the cursor.

Orders are keyed by the platform's order id, with no foreign key to the instance table (an order waiting
for payment has no instance yet). The buyer's wallet address is not stored; the order's public key is
(it is public: what the buyer's access details are encrypted to).
"""

from __future__ import annotations

from peewee import BigIntegerField, BooleanField, CharField, DateTimeField, IntegerField, TextField

from isvserver.models import BaseModel, utcnow


class VCloudOrder(BaseModel):
    """One order of the provider's wallet: its last status and what it became."""

    order_id = CharField(max_length=200, unique=True)
    status = CharField(max_length=64)  # as the platform gave it, known or not
    service_status = CharField(max_length=64, null=True)
    service_id = CharField(max_length=200, null=True)
    service_name = CharField(max_length=255, null=True)
    public_key = TextField(null=True)
    paid_ts = BigIntegerField(null=True)
    end_at = BigIntegerField(null=True)
    refund_ts = BigIntegerField(null=True)
    platform_updated_at = BigIntegerField(null=True)
    instance_id = CharField(max_length=64, null=True)  # the instance it became
    outcome = CharField(max_length=32)  # waiting, active, frozen, released, unknown_status, unreadable…
    note = CharField(max_length=255, null=True)
    sweep = IntegerField(default=0)  # the last sweep of the order listing that read it
    first_seen_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(default=utcnow)
    changed_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "vcloud_order"


class VCloudCursor(BaseModel):
    """Where the poll of one wallet's orders stands: the sweep under way and its page, the watermark."""

    name = CharField(max_length=100, primary_key=True)
    since = BigIntegerField(default=0)  # startFrom of the sweeps (the platform's updatedAt, UNIX s)
    sweep = IntegerField(default=0)  # the number of the sweep under way (or the last one)
    page = IntegerField(default=1)  # the next page of the sweep under way
    sweep_started = BigIntegerField(null=True)  # UNIX s; None when no sweep is under way
    sweep_max_updated = BigIntegerField(null=True)
    sweep_total = IntegerField(null=True)  # the listing's total on the sweep's first page
    sweep_clean = BooleanField(default=True)  # no order read twice, the total never fell
    sweeps = IntegerField(default=0)  # sweeps completed
    orders_read = IntegerField(default=0)
    last_success_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "vcloud_cursor"


MODELS = (VCloudOrder, VCloudCursor)
