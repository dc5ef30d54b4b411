"""What a Kit sync stores (schema in migrations/0001_sync.sql): never hard-deleted, buyer PII sealed.

Rows are keyed by the marketplace's `instanceId` text, with no foreign key to the instance table: a sync may
arrive for an instance this server does not know (yet). The UNIQUE constraints carry idempotency.
"""

from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, IntegerField, TextField

from isvserver.models import BaseModel, utcnow


class KitTenant(BaseModel):
    """The enterprise (tenant) bound to an instance: one per instance."""

    instance_id = CharField(max_length=64, unique=True)
    tenant_id = CharField(max_length=64)
    order_id = CharField(max_length=64)
    tenant_code = CharField(max_length=64)
    name_sealed = TextField()
    domain_name = CharField(max_length=255)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "kit_tenant"


class KitApplication(BaseModel):
    """An application of the tenant with its OAuth client credentials (the secret sealed)."""

    instance_id = CharField(max_length=64)
    tenant_id = CharField(max_length=64)
    app_id = CharField(max_length=64)
    client_id = CharField(max_length=64)
    client_secret_sealed = TextField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "kit_application"
        indexes = ((("instance_id", "app_id"), True),)


class KitUser(BaseModel):
    """A user authorised for an application; revoked or deleted only by marking."""

    instance_id = CharField(max_length=64)
    tenant_id = CharField(max_length=64)
    app_id = CharField(max_length=64)
    user_name = CharField(max_length=64)
    name_sealed = TextField()
    org_code = CharField(max_length=64)
    position_sealed = TextField(null=True)
    employee_code_sealed = TextField(null=True)
    employee_type = IntegerField(null=True)
    role = CharField(max_length=16)
    enabled = BooleanField()
    mobile_sealed = TextField(null=True)
    email_sealed = TextField(null=True)
    work_place_sealed = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    revoked_at = DateTimeField(null=True)
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "kit_user"
        indexes = ((("instance_id", "app_id", "user_name"), True),)


class KitOrg(BaseModel):
    """One department of the tenant's organisation tree."""

    instance_id = CharField(max_length=64)
    tenant_id = CharField(max_length=64)
    org_code = CharField(max_length=64)
    org_name = CharField(max_length=128)
    parent_code = CharField(max_length=64, null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "kit_org"
        indexes = ((("instance_id", "org_code"), True),)


class KitSsoState(BaseModel):
    """A login under way: the hash of its `state` (never the value), used once before it expires."""

    state_hash = CharField(max_length=64, unique=True)
    browser_hash = CharField(max_length=64)  # the hash of the cookie that binds it to one browser
    instance_id = CharField(max_length=64)
    app_id = CharField(max_length=64)
    code_verifier_sealed = TextField(null=True)  # PKCE, sealed with ISV_DATA_KEY
    redirect_uri = TextField()
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)

    class Meta:
        table_name = "kit_sso_state"


class KitSsoLogin(BaseModel):
    """The outcome of one login callback: who, why refused, or the assertion's jti when handed over."""

    instance_id = CharField(max_length=64, null=True)
    app_id = CharField(max_length=64, null=True)
    user_name = CharField(max_length=64, null=True)
    outcome = CharField(max_length=32)
    reason = CharField(max_length=255)
    jti = CharField(max_length=64, null=True, unique=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(null=True)  # the assertion's expiry

    class Meta:
        table_name = "kit_sso_login"


MODELS = (KitTenant, KitApplication, KitUser, KitOrg, KitSsoState, KitSsoLogin)

# (model, column) of every sealed column, for the data-key re-seal command.
SEALED_COLUMNS = (
    (KitTenant, KitTenant.name_sealed),
    (KitApplication, KitApplication.client_secret_sealed),
    (KitUser, KitUser.name_sealed),
    (KitUser, KitUser.position_sealed),
    (KitUser, KitUser.employee_code_sealed),
    (KitUser, KitUser.mobile_sealed),
    (KitUser, KitUser.email_sealed),
    (KitUser, KitUser.work_place_sealed),
    (KitSsoState, KitSsoState.code_verifier_sealed),
)
