-- The product API's bearer tokens: only their SHA-256 digests are stored; revoking marks, never deletes.
CREATE TABLE product_token (
    id {pk},
    name VARCHAR(64) NOT NULL,
    digest CHAR(64) NOT NULL,
    hint VARCHAR(16) NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    last_used_at TIMESTAMP,
    CONSTRAINT product_token_name_key UNIQUE (name),
    CONSTRAINT product_token_digest_key UNIQUE (digest)
);
