//! Organizations, workspaces, projects, runtimes, users and API keys.

use gepard_core::auth::{hash_key, ApiKeySecret, Scopes};
use gepard_core::model::{
    ApiKeyInfo, Organization, Project, Runtime, User, Workspace, PLATFORM_DEFAULT_RUNTIME_SECONDS,
    PLATFORM_MAX_RUNTIME_SECONDS,
};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{flag, int, now_text, opt_text, opt_time, opt_uuid, text, time, uuid};
use crate::{is_unique_violation, Backend, Result, Store, StoreError};

/// What the first start of a server creates.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Organization key (`local`).
    pub org: String,
    /// Default workspace key (`default`).
    pub workspace: String,
    /// Default project key (`default`).
    pub project: String,
    /// The admin user's name.
    pub username: String,
    /// The admin key to store (its hash only).
    pub admin_key: ApiKeySecret,
}

impl Bootstrap {
    /// What `gepard serve` creates on first start: org `local`, workspace and project
    /// `default`, user `admin` holding `admin_key`.
    pub fn first_start(admin_key: ApiKeySecret) -> Self {
        Self {
            org: "local".into(),
            workspace: "default".into(),
            project: "default".into(),
            username: "admin".into(),
            admin_key,
        }
    }
}

/// A key that authenticated a request, with what it may reach.
#[derive(Debug, Clone)]
pub struct AuthenticatedKey {
    /// The key's record.
    pub info: ApiKeyInfo,
    /// Id of the organization it belongs to.
    pub org_id: Uuid,
    /// Id of the workspace it is limited to, if any.
    pub workspace_id: Option<Uuid>,
}

/// Last-used times are written at most this often per key, so authentication stays a read.
const LAST_USED_RESOLUTION_SECS: i64 = 60;

fn organization(row: &AnyRow) -> Result<Organization> {
    Ok(Organization {
        id: uuid(row, "id")?,
        key: text(row, "key")?,
        name: text(row, "name")?,
        description: opt_text(row, "description")?,
        is_active: flag(row, "is_active")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        effective_max_sandbox_runtime_seconds: PLATFORM_MAX_RUNTIME_SECONDS,
        max_sandbox_runtime_source_level: "platform".into(),
        effective_default_sandbox_runtime_seconds: PLATFORM_DEFAULT_RUNTIME_SECONDS,
        default_sandbox_runtime_source_level: "platform".into(),
        platform_max_sandbox_runtime_seconds: PLATFORM_MAX_RUNTIME_SECONDS,
        platform_default_sandbox_runtime_seconds: PLATFORM_DEFAULT_RUNTIME_SECONDS,
    })
}

fn workspace(row: &AnyRow) -> Result<Workspace> {
    Ok(Workspace {
        id: uuid(row, "id")?,
        key: text(row, "key")?,
        name: text(row, "name")?,
        org_id: uuid(row, "org_id")?,
        is_default: flag(row, "is_default")?,
        is_active: flag(row, "is_active")?,
        project_count: int(row, "project_count")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

fn project(row: &AnyRow) -> Result<Project> {
    Ok(Project {
        id: uuid(row, "id")?,
        key: text(row, "key")?,
        name: text(row, "name")?,
        description: opt_text(row, "description")?,
        workspace_id: uuid(row, "workspace_id")?,
        is_default: flag(row, "is_default")?,
        runtime_count: int(row, "runtime_count")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

fn runtime(row: &AnyRow) -> Result<Runtime> {
    Ok(Runtime {
        id: uuid(row, "id")?,
        project_id: uuid(row, "project_id")?,
        key: text(row, "key")?,
        name: text(row, "name")?,
        created_at: time(row, "created_at")?,
    })
}

fn api_key(row: &AnyRow) -> Result<AuthenticatedKey> {
    let scopes = Scopes::parse_list(&text(row, "scopes")?)
        .map_err(|e| StoreError::Corrupt(format!("column scopes: {e}")))?;
    Ok(AuthenticatedKey {
        info: ApiKeyInfo {
            id: uuid(row, "id")?,
            name: text(row, "name")?,
            prefix: text(row, "prefix")?,
            org: text(row, "org_key")?,
            workspace: opt_text(row, "workspace_key")?,
            scopes,
            user_id: uuid(row, "user_id")?,
            created_at: time(row, "created_at")?,
            last_used_at: opt_time(row, "last_used_at")?,
            revoked_at: opt_time(row, "revoked_at")?,
        },
        org_id: uuid(row, "org_id")?,
        workspace_id: opt_uuid(row, "workspace_id")?,
    })
}

const WORKSPACE_SELECT: &str = "SELECT w.*, (SELECT COUNT(*) FROM projects p WHERE p.workspace_id = w.id) AS project_count FROM workspaces w";
const PROJECT_SELECT: &str = "SELECT p.*, (SELECT COUNT(*) FROM runtimes r WHERE r.project_id = p.id) AS runtime_count FROM projects p";
const KEY_SELECT: &str = "SELECT k.*, o.key AS org_key, w.key AS workspace_key FROM api_keys k \
     JOIN organizations o ON o.id = k.org_id LEFT JOIN workspaces w ON w.id = k.workspace_id";

impl Store {
    /// Creates the first organization, its default workspace and project, an admin user and
    /// the admin key, in one transaction, unless any organization exists. Returns whether it
    /// created them.
    pub async fn bootstrap(&self, b: &Bootstrap) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if self.backend == Backend::Postgres {
            // Servers starting together on an empty PostgreSQL database must not both see "no
            // organization" and both bootstrap (SQLite's `BEGIN IMMEDIATE` already excludes
            // that). Readers are not blocked; the lock ends with this transaction.
            sqlx::query("LOCK TABLE organizations IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        }
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        let now = now_text();
        let (org_id, ws_id, project_id, user_id) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        sqlx::query("INSERT INTO organizations (id, key, name, description, is_active, created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5)")
            .bind(org_id.to_string())
            .bind(&b.org)
            .bind(&b.org)
            .bind("Created at first start")
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO workspaces (id, org_id, key, name, is_default, is_active, created_at, updated_at) VALUES ($1, $2, $3, $4, 1, 1, $5, $5)")
            .bind(ws_id.to_string())
            .bind(org_id.to_string())
            .bind(&b.workspace)
            .bind(&b.workspace)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO projects (id, workspace_id, key, name, description, is_default, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, 1, $5, $5)")
            .bind(project_id.to_string())
            .bind(ws_id.to_string())
            .bind(&b.project)
            .bind(&b.project)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO users (id, username, email_address, full_name, created_at) VALUES ($1, $2, NULL, $3, $4)")
            .bind(user_id.to_string())
            .bind(&b.username)
            .bind("Administrator")
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        insert_key(
            &mut tx,
            org_id,
            None,
            user_id,
            "bootstrap admin",
            &Scopes::new(vec![gepard_core::Scope::Admin]),
            &b.admin_key,
            &now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The organization with this key.
    pub async fn org_by_key(&self, key: &str) -> Result<Option<Organization>> {
        let row = sqlx::query("SELECT * FROM organizations WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(organization).transpose()
    }

    /// Workspaces of an organization, by key.
    pub async fn list_workspaces(&self, org_id: Uuid) -> Result<Vec<Workspace>> {
        let rows = sqlx::query(&format!(
            "{WORKSPACE_SELECT} WHERE w.org_id = $1 ORDER BY w.key"
        ))
        .bind(org_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workspace).collect()
    }

    /// One workspace by key.
    pub async fn workspace_by_key(&self, org_id: Uuid, key: &str) -> Result<Option<Workspace>> {
        let row = sqlx::query(&format!(
            "{WORKSPACE_SELECT} WHERE w.org_id = $1 AND w.key = $2"
        ))
        .bind(org_id.to_string())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(workspace).transpose()
    }

    /// Creates a (non-default) workspace with its default project, in one transaction. A taken
    /// key is a [`StoreError::Conflict`].
    pub async fn create_workspace(&self, org_id: Uuid, key: &str, name: &str) -> Result<Workspace> {
        let now = now_text();
        let (ws_id, project_id) = (Uuid::new_v4(), Uuid::new_v4());
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query("INSERT INTO workspaces (id, org_id, key, name, is_default, is_active, created_at, updated_at) VALUES ($1, $2, $3, $4, 0, 1, $5, $5)")
            .bind(ws_id.to_string())
            .bind(org_id.to_string())
            .bind(key)
            .bind(name)
            .bind(&now)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "workspace `{key}` already exists in this organization"
                )))
            }
            other => other?,
        };
        sqlx::query("INSERT INTO projects (id, workspace_id, key, name, description, is_default, created_at, updated_at) VALUES ($1, $2, 'default', 'default', NULL, 1, $3, $3)")
            .bind(project_id.to_string())
            .bind(ws_id.to_string())
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.workspace_by_key(org_id, key)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("workspace {key}")))
    }

    /// Projects of a workspace, by key.
    pub async fn list_projects(&self, workspace_id: Uuid) -> Result<Vec<Project>> {
        let rows = sqlx::query(&format!(
            "{PROJECT_SELECT} WHERE p.workspace_id = $1 ORDER BY p.key"
        ))
        .bind(workspace_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(project).collect()
    }

    /// One project by key or id.
    pub async fn project(&self, workspace_id: Uuid, key_or_id: &str) -> Result<Option<Project>> {
        let row = sqlx::query(&format!(
            "{PROJECT_SELECT} WHERE p.workspace_id = $1 AND (p.key = $2 OR p.id = $2)"
        ))
        .bind(workspace_id.to_string())
        .bind(key_or_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(project).transpose()
    }

    /// The workspace's default project.
    pub async fn default_project(&self, workspace_id: Uuid) -> Result<Option<Project>> {
        let row = sqlx::query(&format!(
            "{PROJECT_SELECT} WHERE p.workspace_id = $1 AND p.is_default = 1"
        ))
        .bind(workspace_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(project).transpose()
    }

    /// Creates a (non-default) project. A taken key is a [`StoreError::Conflict`].
    pub async fn create_project(
        &self,
        workspace_id: Uuid,
        key: &str,
        name: &str,
        description: Option<&str>,
    ) -> Result<Project> {
        let id = Uuid::new_v4();
        let now = now_text();
        let inserted = sqlx::query("INSERT INTO projects (id, workspace_id, key, name, description, is_default, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6)")
            .bind(id.to_string())
            .bind(workspace_id.to_string())
            .bind(key)
            .bind(name)
            .bind(description)
            .bind(&now)
            .execute(&self.pool)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "project `{key}` already exists in this workspace"
                )))
            }
            other => other?,
        };
        self.project(workspace_id, &id.to_string())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("project {id}")))
    }

    /// Runtimes of a project, oldest first.
    pub async fn list_runtimes(&self, project_id: Uuid) -> Result<Vec<Runtime>> {
        let rows =
            sqlx::query("SELECT * FROM runtimes WHERE project_id = $1 ORDER BY created_at, key")
                .bind(project_id.to_string())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(runtime).collect()
    }

    /// The project's first runtime, creating it if the project has none. Safe under races:
    /// two concurrent callers end up with the same runtime.
    pub async fn ensure_runtime(&self, project_id: Uuid) -> Result<Runtime> {
        if let Some(rt) = self.list_runtimes(project_id).await?.into_iter().next() {
            return Ok(rt);
        }
        let inserted = sqlx::query("INSERT INTO runtimes (id, project_id, key, name, created_at) VALUES ($1, $2, 'default', 'Default runtime', $3)")
            .bind(Uuid::new_v4().to_string())
            .bind(project_id.to_string())
            .bind(now_text())
            .execute(&self.pool)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {}
            other => {
                other?;
            }
        }
        self.list_runtimes(project_id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("runtime of project {project_id}")))
    }

    /// A user by id.
    pub async fn user(&self, id: Uuid) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(User {
                id: uuid(&row, "id")?,
                email_address: opt_text(&row, "email_address")?,
                username: text(&row, "username")?,
                full_name: opt_text(&row, "full_name")?,
                created_at: time(&row, "created_at")?,
            })
        })
        .transpose()
    }

    /// Stores a new API key (its hash only) and returns its record.
    pub async fn create_api_key(
        &self,
        org_id: Uuid,
        workspace_id: Option<Uuid>,
        user_id: Uuid,
        name: &str,
        scopes: &Scopes,
        secret: &ApiKeySecret,
    ) -> Result<ApiKeyInfo> {
        let mut tx = self.write_tx().await?;
        let id = insert_key(
            &mut tx,
            org_id,
            workspace_id,
            user_id,
            name,
            scopes,
            secret,
            &now_text(),
        )
        .await?;
        tx.commit().await?;
        self.api_key(org_id, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key {id}")))
    }

    /// Finds the live (not revoked) key with this plaintext, and notes that it was used.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<AuthenticatedKey>> {
        let hash = hash_key(presented);
        let row = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.key_hash = $1 AND k.revoked_at IS NULL"
        ))
        .bind(&hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(key) = row.as_ref().map(api_key).transpose()? else {
            return Ok(None);
        };
        let stale = key.info.last_used_at.is_none_or(|t| {
            (gepard_core::time::now() - t).num_seconds() >= LAST_USED_RESOLUTION_SECS
        });
        if stale {
            // Best effort: a busy database must not turn a valid request into an error.
            if let Err(e) = sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now_text())
                .bind(key.info.id.to_string())
                .execute(&self.pool)
                .await
            {
                tracing::debug!(error = %e, "could not record API key use");
            }
        }
        Ok(Some(key))
    }

    /// Keys of an organization, newest first (revoked ones included, marked).
    pub async fn list_api_keys(&self, org_id: Uuid) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(&format!(
            "{KEY_SELECT} WHERE k.org_id = $1 ORDER BY k.created_at DESC, k.id"
        ))
        .bind(org_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| api_key(r).map(|k| k.info)).collect()
    }

    /// One key of an organization.
    pub async fn api_key(&self, org_id: Uuid, id: Uuid) -> Result<Option<ApiKeyInfo>> {
        let row = sqlx::query(&format!("{KEY_SELECT} WHERE k.org_id = $1 AND k.id = $2"))
            .bind(org_id.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| api_key(r).map(|k| k.info)).transpose()
    }

    /// Revokes a key. Revoking twice keeps the first revocation time. The organization's last
    /// live admin key that is not limited to a workspace is not revoked
    /// ([`StoreError::Conflict`]): nothing could create keys or workspaces afterwards, and
    /// `GEPARD_ADMIN_KEY` only applies to an empty database.
    pub async fn revoke_api_key(&self, org_id: Uuid, id: Uuid) -> Result<ApiKeyInfo> {
        let mut tx = self.write_tx().await?;
        // The org-wide admin keys, locked on PostgreSQL: two revocations of the last two
        // must not both see the other one still live.
        let admins: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT id FROM api_keys WHERE org_id = $1 AND workspace_id IS NULL \
             AND revoked_at IS NULL AND (',' || scopes || ',') LIKE '%,admin,%'{}",
            self.backend.for_update()
        ))
        .bind(org_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        if admins == [id.to_string()] {
            return Err(StoreError::Conflict(
                "this is the organization's last admin key not limited to a workspace; create \
                 another admin key before revoking it"
                    .into(),
            ));
        }
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(now_text())
            .bind(org_id.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.api_key(org_id, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("API key {id}")))
    }
}

#[allow(clippy::too_many_arguments)]
async fn insert_key(
    tx: &mut crate::WriteTx,
    org_id: Uuid,
    workspace_id: Option<Uuid>,
    user_id: Uuid,
    name: &str,
    scopes: &Scopes,
    secret: &ApiKeySecret,
    now: &str,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO api_keys (id, org_id, workspace_id, user_id, name, prefix, key_hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(id.to_string())
        .bind(org_id.to_string())
        .bind(workspace_id.map(|w| w.to_string()))
        .bind(user_id.to_string())
        .bind(name)
        .bind(secret.display_prefix())
        .bind(secret.hash())
        .bind(scopes.to_list())
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict("this API key is already registered".into())
            } else {
                e.into()
            }
        })?;
    Ok(id)
}
