-- Where each call came from, and how many rejected calls each source sent per minute: beyond
-- ISV_REJECTED_LOG_PER_MINUTE a source's rejected calls are only counted here, not each logged.
ALTER TABLE callback_log ADD COLUMN source_address VARCHAR(64);

CREATE TABLE rejected_call_count (
    id {pk},
    source_address VARCHAR(64) NOT NULL,
    minute BIGINT NOT NULL,
    calls INTEGER NOT NULL,
    CONSTRAINT rejected_call_count_source_minute UNIQUE (source_address, minute)
);
CREATE INDEX rejected_call_count_minute ON rejected_call_count (minute);
