-- Bumped by each rewind of a job's metric points to a checkpoint (which deletes points whose
-- sequence numbers the resumed run may then reuse), so a store that remembers a job's series
-- and reads only newer points knows when to read the whole series again.
ALTER TABLE jobs ADD COLUMN metrics_epoch BIGINT NOT NULL DEFAULT 0;
