-- Periodic jobs (Jobs.every): one row per job, its schedule and the lease of the runner holding it now,
-- so that one run at a time happens across consumers and hosts; a dead holder's lease expires.
CREATE TABLE periodic_job (
    name VARCHAR(64) PRIMARY KEY,
    interval_s DOUBLE PRECISION NOT NULL,
    next_run_at TIMESTAMP NOT NULL,
    lease_owner VARCHAR(64),
    lease_until TIMESTAMP,
    last_started_at TIMESTAMP,
    last_finished_at TIMESTAMP,
    last_success_at TIMESTAMP,
    last_error VARCHAR(255),
    runs INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL
)
