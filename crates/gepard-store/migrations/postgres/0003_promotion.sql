-- Promotion: which job attempt wrote which capability version, and the organization's audit
-- log. PostgreSQL twin of migrations/sqlite/0003_promotion.sql (identical statements). A promoted version's provenance lives in
-- artifact_versions.provenance (0001).

CREATE TABLE job_promotions (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    attempt     BIGINT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    version_id  TEXT NOT NULL REFERENCES artifact_versions(id),
    promoted_by TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, name, version)
);

CREATE TABLE audit_log (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id),
    workspace_id TEXT REFERENCES workspaces(id),
    -- JSON: {user_id, key_id, key_name, key_prefix}
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    details      TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX audit_log_org_created ON audit_log (org_id, created_at);
