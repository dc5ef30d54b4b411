"""V1's own tables (schema in ../migrations/0001_v1.sql): the buyer of a V1 instance, and licenses."""

from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, TextField

from isvserver.models import BaseModel, utcnow


class V1Buyer(BaseModel):
    """The buyer a V1 newInstance names: ids in clear, names, mobile and e-mail sealed; one per instance."""

    instance_id = CharField(max_length=64, unique=True)
    customer_id = CharField(max_length=100)
    user_id = CharField(max_length=64, null=True)
    customer_name_sealed = TextField(null=True)
    user_name_sealed = TextField(null=True)
    mobile_phone_sealed = TextField(null=True)
    email_sealed = TextField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "koogallery_v1_buyer"


class License(BaseModel):
    """The license of a License product's instance: its current token (sealed) and state."""

    instance_id = CharField(max_length=64, unique=True)
    license_id = CharField(max_length=64, unique=True)
    sku_code = CharField(max_length=64)
    state = CharField(max_length=16)  # active, expired, released
    expire_at = DateTimeField(null=True)
    version = IntegerField()  # 1 when issued, +1 on every reissue (renewal)
    license_sealed = TextField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "koogallery_license"


V1_MODELS = (V1Buyer, License)
# Columns sealed with ISV_DATA_KEY, each with the column naming its row (re-sealed by `isvserver reseal`).
V1_SEALED_COLUMNS = (
    (V1Buyer.customer_name_sealed, V1Buyer.instance_id),
    (V1Buyer.user_name_sealed, V1Buyer.instance_id),
    (V1Buyer.mobile_phone_sealed, V1Buyer.instance_id),
    (V1Buyer.email_sealed, V1Buyer.instance_id),
    (License.license_sealed, License.license_id),
)
