-- Key interfaces are names the enabled adapters declare: the CHECK naming 'basic' and 'notify' goes.
-- SQLite cannot drop a constraint, so its table is rebuilt (no other table refers to access_key).
@postgres ALTER TABLE access_key DROP CONSTRAINT access_key_interface;
@sqlite CREATE TABLE access_key_new (
    id {pk},
    interface VARCHAR(16) NOT NULL,
    fingerprint VARCHAR(16) NOT NULL UNIQUE,
    key_sealed TEXT,
    created_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP,
    note VARCHAR(100)
);
@sqlite INSERT INTO access_key_new (id, interface, fingerprint, key_sealed, created_at, retired_at, note)
    SELECT id, interface, fingerprint, key_sealed, created_at, retired_at, note FROM access_key;
@sqlite DROP TABLE access_key;
@sqlite ALTER TABLE access_key_new RENAME TO access_key
