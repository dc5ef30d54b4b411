-- An external id (a platform's order id, say) that does not fit the instance id's charset is kept here,
-- whole, beside the instance whose id was derived from it (no row when the instance id is the external
-- id itself). A table of its own: SQLite's table rebuilds of `instance` keep only the columns they know.
CREATE TABLE external_id (
    id {pk},
    instance_ref {fk} NOT NULL UNIQUE REFERENCES instance (id),
    marketplace VARCHAR(32) NOT NULL,
    external_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
)
