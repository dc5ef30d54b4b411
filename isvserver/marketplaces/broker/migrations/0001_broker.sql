-- The service broker: platform clients (secret as a slow hash), opaque tokens (SHA-256 digests with
-- expiry), failed token requests per source and minute, and each broker instance's plan and parameters
-- (`password` parameters sealed). Nothing is deleted: a removed client is marked revoked.
CREATE TABLE broker_client (
    id {pk},
    client_id VARCHAR(64) NOT NULL,
    name VARCHAR(64) NOT NULL,
    secret_hash VARCHAR(255) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    CONSTRAINT broker_client_id_key UNIQUE (client_id)
);

CREATE TABLE broker_token (
    id {pk},
    digest VARCHAR(64) NOT NULL,
    client_ref {fk} NOT NULL REFERENCES broker_client (id),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    CONSTRAINT broker_token_digest_key UNIQUE (digest)
);
CREATE INDEX broker_token_expires ON broker_token (expires_at);

CREATE TABLE broker_token_failure (
    id {pk},
    source_address VARCHAR(64) NOT NULL,
    minute BIGINT NOT NULL,
    failures INTEGER NOT NULL,
    CONSTRAINT broker_token_failure_source_minute UNIQUE (source_address, minute)
);

CREATE TABLE broker_instance (
    id {pk},
    instance_ref {fk} NOT NULL REFERENCES instance (id),
    service_id VARCHAR(255) NOT NULL,
    plan_id VARCHAR(255) NOT NULL,
    parameters TEXT NOT NULL,
    secrets_sealed TEXT,
    context TEXT,
    maintenance_version VARCHAR(64),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    CONSTRAINT broker_instance_instance_key UNIQUE (instance_ref)
)
