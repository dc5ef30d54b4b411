-- Changes an adapter recorded for an instance id this server does not know yet (a Kit sync may come
-- before newInstance). create_instance adopts them, in id order, after the instance's created event;
-- an adopted row keeps its event (never deleted).
CREATE TABLE parked_change (
    id {pk},
    instance_id VARCHAR(64) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    idempotency_key VARCHAR(200),
    detail TEXT,
    created_at TIMESTAMP NOT NULL,
    adopted_at TIMESTAMP,
    event_ref {fk} REFERENCES instance_event (id),
    CONSTRAINT parked_change_idempotency_key UNIQUE (instance_id, idempotency_key)
);
CREATE INDEX parked_change_instance ON parked_change (instance_id, adopted_at, id)
