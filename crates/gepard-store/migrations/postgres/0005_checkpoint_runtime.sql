-- The attempt's running time when each checkpoint was taken, in milliseconds, summed over the
-- runners that worked on it (a crashed runner's time up to its checkpoint, then the resumed
-- one's). A resume charges max_runtime_sec from here, not from the first start: the time a
-- job waited for its lease to expire is nobody's run. NULL (checkpoints from before this
-- column): unknown, the time since the first start is used.
ALTER TABLE job_checkpoints ADD COLUMN run_ms BIGINT;
