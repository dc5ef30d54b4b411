-- rebuilds tables (SQLite): an instance is created once per (marketplace, creation key), the idempotency
-- key its adapter chose (KooGallery: its order line's); the order line and business id become optional,
-- so instances without one (a broker's, a V Cloud order's) fit. Existing rows get their order line's key.
@postgres ALTER TABLE instance ADD COLUMN creation_key VARCHAR(200);
@postgres UPDATE instance SET creation_key = 'order:' || length(order_id) || ':' || order_id || ':' || order_line_id;
@postgres ALTER TABLE instance ALTER COLUMN creation_key SET NOT NULL;
@postgres ALTER TABLE instance DROP CONSTRAINT instance_order_line_key;
@postgres ALTER TABLE instance ADD CONSTRAINT instance_creation_key UNIQUE (marketplace, creation_key);
@postgres ALTER TABLE instance ALTER COLUMN order_id DROP NOT NULL;
@postgres ALTER TABLE instance ALTER COLUMN order_line_id DROP NOT NULL;
@postgres ALTER TABLE instance ALTER COLUMN business_id DROP NOT NULL;
@postgres CREATE INDEX instance_order_line ON instance (marketplace, order_id, order_line_id);
@sqlite CREATE TABLE instance_new (
    id {pk},
    instance_id VARCHAR(64) NOT NULL UNIQUE,
    marketplace VARCHAR(32) NOT NULL,
    creation_key VARCHAR(200) NOT NULL,
    order_id VARCHAR(64),
    order_line_id VARCHAR(64),
    business_id VARCHAR(64),
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
    lease_owner VARCHAR(64),
    lease_until TIMESTAMP,
    CONSTRAINT instance_creation_key UNIQUE (marketplace, creation_key)
);
@sqlite INSERT INTO instance_new (id, instance_id, marketplace, creation_key, order_id, order_line_id,
    business_id, state, is_trial, product_id, expire_at, front_end_url, admin_url, user_name,
    password_encrypted, memo, created_at, updated_at, released_at, lease_owner, lease_until)
    SELECT id, instance_id, marketplace, 'order:' || length(order_id) || ':' || order_id || ':' || order_line_id,
    order_id, order_line_id, business_id, state, is_trial, product_id, expire_at, front_end_url, admin_url,
    user_name, password_encrypted, memo, created_at, updated_at, released_at, lease_owner, lease_until
    FROM instance;
@sqlite DROP TABLE instance;
@sqlite ALTER TABLE instance_new RENAME TO instance;
@sqlite CREATE INDEX instance_order_line ON instance (marketplace, order_id, order_line_id)
