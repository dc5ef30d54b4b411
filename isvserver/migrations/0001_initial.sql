-- The first schema: instances, their lifecycle events, nonces, the callback log and order notifications.
CREATE TABLE instance (
    id {pk},
    instance_id VARCHAR(64) NOT NULL UNIQUE,
    marketplace VARCHAR(32) NOT NULL,
    order_id VARCHAR(64) NOT NULL,
    order_line_id VARCHAR(64) NOT NULL,
    business_id VARCHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL,
    is_trial BOOLEAN NOT NULL DEFAULT FALSE,
    product_id VARCHAR(64),
    expire_at TIMESTAMP,
    front_end_url VARCHAR(512),
    admin_url VARCHAR(512),
    user_name VARCHAR(128),
    password_encrypted TEXT,
    memo VARCHAR(1024),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    released_at TIMESTAMP,
    CONSTRAINT instance_order_line_key UNIQUE (marketplace, order_id, order_line_id)
);

CREATE TABLE instance_event (
    id {pk},
    instance_ref {fk} NOT NULL REFERENCES instance (id),
    kind VARCHAR(32) NOT NULL,
    from_state VARCHAR(16),
    to_state VARCHAR(16),
    order_id VARCHAR(64),
    order_line_id VARCHAR(64),
    idempotency_key VARCHAR(200),
    detail TEXT,
    created_at TIMESTAMP NOT NULL,
    CONSTRAINT instance_event_idempotency_key UNIQUE (instance_ref, idempotency_key)
);
CREATE INDEX instance_event_instance ON instance_event (instance_ref, id);

CREATE TABLE nonce (
    digest CHAR(64) PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
CREATE INDEX nonce_seen_at ON nonce (seen_at);

CREATE TABLE callback_log (
    id {pk},
    request_id VARCHAR(32) NOT NULL,
    received_at TIMESTAMP NOT NULL,
    interface VARCHAR(32) NOT NULL,
    activity VARCHAR(32),
    test_flag BOOLEAN NOT NULL DEFAULT FALSE,
    instance_id TEXT,
    order_id VARCHAR(64),
    order_line_id VARCHAR(64),
    business_id VARCHAR(64),
    verdict VARCHAR(32) NOT NULL,
    reason VARCHAR(255),
    result_code VARCHAR(6) NOT NULL,
    result_msg VARCHAR(255),
    latency_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX callback_log_received_at ON callback_log (received_at);
CREATE INDEX callback_log_order ON callback_log (order_id, order_line_id);
CREATE INDEX callback_log_result_code ON callback_log (result_code);

CREATE TABLE order_notification (
    id {pk},
    marketplace VARCHAR(32) NOT NULL,
    order_id VARCHAR(64) NOT NULL,
    order_line_id VARCHAR(64) NOT NULL,
    times_received INTEGER NOT NULL,
    first_received_at TIMESTAMP NOT NULL,
    last_received_at TIMESTAMP NOT NULL,
    CONSTRAINT order_notification_line_key UNIQUE (marketplace, order_id, order_line_id)
);
