-- Rejected calls are bounded across all sources too (ISV_REJECTED_LOG_TOTAL_PER_MINUTE): one count of
-- every source's rejected calls per minute. Each source's count says how many of its calls were logged
-- (stored), and whether the consumer has logged the summary line of those that were only counted.
CREATE TABLE rejected_call_minute (
    id {pk},
    minute BIGINT NOT NULL,
    calls INTEGER NOT NULL,
    CONSTRAINT rejected_call_minute_minute UNIQUE (minute)
);
ALTER TABLE rejected_call_count ADD COLUMN stored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rejected_call_count ADD COLUMN summarized BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE rejected_call_count SET summarized = TRUE;
