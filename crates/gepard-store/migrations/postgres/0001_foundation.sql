-- Foundation schema, PostgreSQL: the same tables, columns, constraints and indexes as
-- migrations/sqlite/0001_foundation.sql, with BYTEA for the one blob. Keys, names and paths the
-- store sorts by are COLLATE "C": SQLite compares text bytewise, and a locale collation
-- (en_US, …) would order `gamma_x` / `gamma-y` differently and make listings differ by backend.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT,
    is_active   BIGINT NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations(id),
    key        TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    is_default BIGINT NOT NULL DEFAULT 0,
    is_active  BIGINT NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (org_id, key)
);
-- At most one default workspace per organization, enforced by the database itself.
CREATE UNIQUE INDEX workspaces_one_default ON workspaces (org_id) WHERE is_default = 1;

CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    key          TEXT COLLATE "C" NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT,
    is_default   BIGINT NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (workspace_id, key)
);
CREATE UNIQUE INDEX projects_one_default ON projects (workspace_id) WHERE is_default = 1;

CREATE TABLE runtimes (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    key        TEXT COLLATE "C" NOT NULL,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (project_id, key)
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email_address TEXT,
    full_name     TEXT,
    created_at    TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id),
    workspace_id TEXT REFERENCES workspaces(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

-- Capabilities and datasets share one set of tables: they differ only in what a version holds.
CREATE TABLE artifacts (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES organizations(id),
    kind           TEXT NOT NULL,
    name           TEXT COLLATE "C" NOT NULL,
    description    TEXT,
    latest_version TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (org_id, kind, name)
);

CREATE TABLE artifact_versions (
    id          TEXT PRIMARY KEY,
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    description TEXT,
    -- capability: JSON array of agents; dataset: NULL
    agents      TEXT,
    -- dataset: inferred schema (JSON), row count, format and rows file; capability: NULL
    schema      TEXT,
    row_count   BIGINT,
    format      TEXT,
    rows_file   TEXT,
    provenance  TEXT,
    created_by  TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (artifact_id, version)
);

CREATE TABLE artifact_files (
    version_id TEXT NOT NULL REFERENCES artifact_versions(id),
    path       TEXT COLLATE "C" NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    content    BYTEA NOT NULL,
    PRIMARY KEY (version_id, path)
);

CREATE TABLE dataset_rows (
    version_id TEXT NOT NULL REFERENCES artifact_versions(id),
    position   BIGINT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (version_id, position)
);
