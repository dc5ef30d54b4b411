-- Access keys kept in the database: added and retired by `isvserver keys` while the server runs.
-- A row with key_sealed NULL only retires a key that comes from the environment (by its fingerprint).
CREATE TABLE access_key (
    id {pk},
    interface VARCHAR(16) NOT NULL,
    fingerprint VARCHAR(16) NOT NULL UNIQUE,
    key_sealed TEXT,
    created_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP,
    note VARCHAR(100),
    CONSTRAINT access_key_interface CHECK (interface IN ('basic', 'notify'))
);
