"""KooGallery's own tables: order notifications and the order lines read from the order-query API."""

from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, TextField

from isvserver.marketplaces.koogallery.v1.models import V1_MODELS
from isvserver.models import BaseModel, utcnow


class OrderNotification(BaseModel):
    """An order line the marketplace told us about (orderNotify); one row per line."""

    marketplace = CharField(max_length=32)
    order_id = CharField(max_length=64)
    order_line_id = CharField(max_length=64)
    times_received = IntegerField()
    first_received_at = DateTimeField(default=utcnow)
    last_received_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "order_notification"


class OrderLineRecord(BaseModel):
    """An order line as the marketplace's order-query API describes it (buyer data sealed)."""

    marketplace = CharField(max_length=32)
    order_id = CharField(max_length=64)
    order_line_id = CharField(max_length=64)
    status = CharField(max_length=16)  # pending, fetched, failed, skipped
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow)
    last_error = CharField(max_length=255, null=True)
    order_type = CharField(max_length=32, null=True)
    product_id = CharField(max_length=64, null=True)
    sku_code = CharField(max_length=64, null=True)
    charging_mode = CharField(max_length=32, null=True)
    period_type = CharField(max_length=32, null=True)
    period_number = IntegerField(null=True)
    expire_at = DateTimeField(null=True)
    details_sealed = TextField(null=True)  # the whole order document as JSON, sealed with the data key
    created_at = DateTimeField(default=utcnow)
    fetched_at = DateTimeField(null=True)

    class Meta:
        table_name = "order_line"


MODELS = (OrderNotification, OrderLineRecord, *V1_MODELS)
