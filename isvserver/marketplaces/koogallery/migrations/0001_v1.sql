-- KooGallery V1: the buyer a V1 newInstance names (PII sealed, TEXT) and the licenses of License products.
-- Keyed by the instance's id text; nothing is ever deleted (license state marks a release).
CREATE TABLE koogallery_v1_buyer (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    customer_id VARCHAR(100) NOT NULL,
    user_id VARCHAR(64),
    customer_name_sealed TEXT,
    user_name_sealed TEXT,
    mobile_phone_sealed TEXT,
    email_sealed TEXT,
    created_at TIMESTAMP NOT NULL,
    CONSTRAINT koogallery_v1_buyer_instance_key UNIQUE (instance_id)
);

CREATE TABLE koogallery_license (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    license_id VARCHAR(64) NOT NULL,
    sku_code VARCHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL,
    expire_at TIMESTAMP,
    version INTEGER NOT NULL,
    license_sealed TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT koogallery_license_instance_key UNIQUE (instance_id),
    CONSTRAINT koogallery_license_id_key UNIQUE (license_id)
);
