-- V Cloud orders followed by the poller: every order seen, its last status as the platform gave it and
-- what it became (the instance, its state), and the poll cursor. Nothing is deleted.
CREATE TABLE vcloud_order (
    id {pk},
    order_id VARCHAR(200) NOT NULL UNIQUE,
    status VARCHAR(64) NOT NULL,
    service_status VARCHAR(64),
    service_id VARCHAR(200),
    service_name VARCHAR(255),
    public_key TEXT,
    paid_ts BIGINT,
    end_at BIGINT,
    refund_ts BIGINT,
    platform_updated_at BIGINT,
    instance_id VARCHAR(64),
    outcome VARCHAR(32) NOT NULL,
    note VARCHAR(255),
    sweep INTEGER NOT NULL DEFAULT 0,
    first_seen_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    changed_at TIMESTAMP NOT NULL
);
CREATE INDEX vcloud_order_outcome ON vcloud_order (outcome, end_at);

CREATE TABLE vcloud_cursor (
    name VARCHAR(100) PRIMARY KEY,
    since BIGINT NOT NULL DEFAULT 0,
    sweep INTEGER NOT NULL DEFAULT 0,
    page INTEGER NOT NULL DEFAULT 1,
    sweep_started BIGINT,
    sweep_max_updated BIGINT,
    sweep_total INTEGER,
    sweep_clean BOOLEAN NOT NULL DEFAULT TRUE,
    sweeps INTEGER NOT NULL DEFAULT 0,
    orders_read INTEGER NOT NULL DEFAULT 0,
    last_success_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
)
