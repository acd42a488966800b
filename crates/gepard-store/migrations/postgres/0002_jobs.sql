-- Optimization jobs: the control-plane record, its evidence (logs, metric points, attempts,
-- checkpoints, candidates) and idempotency keys. PostgreSQL twin of migrations/sqlite/0002_jobs.sql (identical statements).

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organizations(id),
    workspace_id        TEXT NOT NULL REFERENCES workspaces(id),
    project_id          TEXT NOT NULL REFERENCES projects(id),
    status              TEXT NOT NULL,
    attempt             BIGINT NOT NULL DEFAULT 1,
    name                TEXT,
    backend             TEXT NOT NULL,
    target_kind         TEXT NOT NULL,
    model               TEXT NOT NULL,
    run_ref             TEXT,
    objective           TEXT,
    -- Pinned inputs as submitted and resolved: dataset refs, capability snapshot, agent,
    -- recipe, components, config, tags (JSON). Never changes after creation.
    spec                TEXT NOT NULL,
    summary             TEXT NOT NULL,
    artifacts           TEXT NOT NULL,
    usage               TEXT NOT NULL,
    error               TEXT,
    created_by          TEXT,
    created_at          TEXT NOT NULL,
    started_at          TEXT,
    completed_at        TEXT,
    cancel_requested_at TEXT,
    updated_at          TEXT NOT NULL,
    last_event_at       TEXT,
    -- Highest log sequence number written so far; SSE event ids count in it.
    log_seq             BIGINT NOT NULL DEFAULT 0,
    -- Execution (workers): who holds the job, until when, and the fencing token that makes
    -- a stale worker's writes fail.
    lease_owner         TEXT,
    lease_token         BIGINT NOT NULL DEFAULT 0,
    lease_expires_at    TEXT
);
CREATE INDEX jobs_workspace_created ON jobs (workspace_id, created_at);
CREATE INDEX jobs_status_created ON jobs (status, created_at);

CREATE TABLE job_logs (
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    seq       BIGINT NOT NULL,
    attempt   BIGINT NOT NULL,
    timestamp TEXT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE job_metrics (
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    seq       BIGINT NOT NULL,
    attempt   BIGINT NOT NULL,
    name      TEXT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    step      BIGINT NOT NULL,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_metrics_attempt ON job_metrics (job_id, attempt);

-- Finished attempts, kept when a job is retried.
CREATE TABLE job_attempts (
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    attempt      BIGINT NOT NULL,
    status       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    artifacts    TEXT NOT NULL,
    usage        TEXT NOT NULL,
    error        TEXT,
    started_at   TEXT,
    completed_at TEXT,
    PRIMARY KEY (job_id, attempt)
);

-- The latest engine checkpoint of the current attempt (crash resume).
CREATE TABLE job_checkpoints (
    job_id     TEXT NOT NULL REFERENCES jobs(id),
    attempt    BIGINT NOT NULL,
    iteration  BIGINT NOT NULL,
    data       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);

-- Candidates evaluated on the validation set.
CREATE TABLE job_candidates (
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    attempt       BIGINT NOT NULL,
    idx           BIGINT NOT NULL,
    data          TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, idx)
);

CREATE TABLE idempotency_keys (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    created_at   TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
