-- Bumped by every write that changes what a job record shows (state, summary, artifacts,
-- usage, metric series, log), under the row's lock. A job read together with its revision
-- tells a watcher which of two records is newer: notices of two writers can arrive in the
-- opposite order of their commits, and showing the older after the newer would make the
-- job go back (even to `running` after `completed`).
ALTER TABLE jobs ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
