-- Pay-per-use: the usage ledger. One row per metered record (never deleted, its identity the product's
-- metering_sn), pushed to its instance's marketplace in uploads: an upload is a fixed batch, sent again
-- byte for byte until the marketplace takes it. An instance is on-demand when its order line says so.
ALTER TABLE instance ADD COLUMN on_demand BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE usage_upload (
    id {pk},
    marketplace VARCHAR(32) NOT NULL,
    state VARCHAR(16) NOT NULL,
    records INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_owner VARCHAR(64),
    lease_until TIMESTAMP,
    http_status INTEGER,
    result_code VARCHAR(32),
    result_msg VARCHAR(255),
    body_sha256 CHAR(64),
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP,
    finished_at TIMESTAMP
);
CREATE INDEX usage_upload_due ON usage_upload (marketplace, state, next_attempt_at);

CREATE TABLE usage_record (
    id {pk},
    instance_ref {fk} NOT NULL REFERENCES instance (id),
    marketplace VARCHAR(32) NOT NULL,
    metering_sn VARCHAR(64) NOT NULL,
    begin_at TIMESTAMP NOT NULL,
    end_at TIMESTAMP NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    usage_value VARCHAR(20) NOT NULL,
    related_instance_id VARCHAR(64),
    source VARCHAR(16) NOT NULL,
    source_name VARCHAR(64),
    state VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    upload_ref {fk} REFERENCES usage_upload (id),
    result_code VARCHAR(32),
    result_msg VARCHAR(255),
    pushed_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT usage_record_metering_sn_key UNIQUE (metering_sn)
);
CREATE INDEX usage_record_push ON usage_record (marketplace, state, end_at);
CREATE INDEX usage_record_instance ON usage_record (instance_ref, end_at);
CREATE INDEX usage_record_upload ON usage_record (upload_ref);
