-- Where the metric series stood when each checkpoint was taken (the highest job_metrics.seq),
-- so a resume can drop the points a crashed runner wrote after it: the resumed run writes
-- them again, and the series then reads as if there had been no crash. NULL (checkpoints
-- from before this column): unknown, nothing is dropped.
ALTER TABLE job_checkpoints ADD COLUMN metrics_seq BIGINT;
