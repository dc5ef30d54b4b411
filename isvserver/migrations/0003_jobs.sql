-- Asynchronous provisioning: the outbox of lifecycle changes to deliver to the seller's product, in order
-- per instance, and the order lines fetched from the marketplace's order-query API.
ALTER TABLE instance ADD COLUMN lease_owner VARCHAR(64);
ALTER TABLE instance ADD COLUMN lease_until TIMESTAMP;

CREATE TABLE delivery (
    id {pk},
    instance_ref {fk} NOT NULL REFERENCES instance (id),
    event_ref {fk} NOT NULL UNIQUE REFERENCES instance_event (id),
    event_type VARCHAR(32) NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error VARCHAR(255),
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    CONSTRAINT delivery_status CHECK (status IN ('pending', 'delivered', 'failed'))
);
CREATE INDEX delivery_instance ON delivery (instance_ref, status, id);
CREATE INDEX delivery_due ON delivery (status, next_attempt_at);

CREATE TABLE order_line (
    id {pk},
    marketplace VARCHAR(32) NOT NULL,
    order_id VARCHAR(64) NOT NULL,
    order_line_id VARCHAR(64) NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    last_error VARCHAR(255),
    order_type VARCHAR(32),
    product_id VARCHAR(64),
    sku_code VARCHAR(64),
    charging_mode VARCHAR(32),
    period_type VARCHAR(32),
    period_number INTEGER,
    expire_at TIMESTAMP,
    details_sealed TEXT,
    created_at TIMESTAMP NOT NULL,
    fetched_at TIMESTAMP,
    CONSTRAINT order_line_key UNIQUE (marketplace, order_id, order_line_id),
    CONSTRAINT order_line_status CHECK (status IN ('pending', 'fetched', 'failed', 'skipped'))
);
CREATE INDEX order_line_due ON order_line (status, next_attempt_at)
