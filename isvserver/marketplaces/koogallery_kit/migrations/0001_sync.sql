-- Kit sync: tenants, applications, authorised users and org trees, keyed by the marketplace's instanceId.
-- Nothing is ever deleted (deleted_at marks it); buyer PII and the client secret are sealed (TEXT).
CREATE TABLE kit_tenant (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    tenant_id VARCHAR(64) NOT NULL,
    order_id VARCHAR(64) NOT NULL,
    tenant_code VARCHAR(64) NOT NULL,
    name_sealed TEXT NOT NULL,
    domain_name VARCHAR(255) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP,
    CONSTRAINT kit_tenant_instance_key UNIQUE (instance_id)
);

CREATE TABLE kit_application (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    tenant_id VARCHAR(64) NOT NULL,
    app_id VARCHAR(64) NOT NULL,
    client_id VARCHAR(64) NOT NULL,
    client_secret_sealed TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP,
    CONSTRAINT kit_application_app_key UNIQUE (instance_id, app_id)
);

CREATE TABLE kit_user (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    tenant_id VARCHAR(64) NOT NULL,
    app_id VARCHAR(64) NOT NULL,
    user_name VARCHAR(64) NOT NULL,
    name_sealed TEXT NOT NULL,
    org_code VARCHAR(64) NOT NULL,
    position_sealed TEXT,
    employee_code_sealed TEXT,
    employee_type INTEGER,
    role VARCHAR(16) NOT NULL,
    enabled BOOLEAN NOT NULL,
    mobile_sealed TEXT,
    email_sealed TEXT,
    work_place_sealed TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    deleted_at TIMESTAMP,
    CONSTRAINT kit_user_user_key UNIQUE (instance_id, app_id, user_name)
);

CREATE TABLE kit_org (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    tenant_id VARCHAR(64) NOT NULL,
    org_code VARCHAR(64) NOT NULL,
    org_name VARCHAR(128) NOT NULL,
    parent_code VARCHAR(64),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    deleted_at TIMESTAMP,
    CONSTRAINT kit_org_org_key UNIQUE (instance_id, org_code)
);
