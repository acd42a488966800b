//! The capability and dataset registries: immutable versions with their files (and, for
//! datasets, rows), published in one transaction each.

use gepard_agent::bundle::{BundleFile, Capability, Dataset};
use gepard_core::model::{
    AgentInfo, ArtifactKind, ArtifactSummary, CapabilityVersion, DatasetVersion, FileInfo, Page,
    RowsPage, VersionSummary,
};
use gepard_core::PageRequest;
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::rows::{int, json, now_text, opt_json, opt_text, opt_uuid, text, time, uuid};
use crate::{is_unique_violation, Backend, Result, Store, StoreError};

/// Outcome of publishing a version.
#[derive(Debug, Clone, PartialEq)]
pub enum Published<T> {
    /// A new version was written.
    Created(T),
    /// This exact content was already published under that version; nothing was written.
    Existing(T),
}

impl<T> Published<T> {
    /// The version, however it came about.
    pub fn into_inner(self) -> T {
        match self {
            Self::Created(t) | Self::Existing(t) => t,
        }
    }

    /// Whether a new version was written.
    pub fn is_created(&self) -> bool {
        matches!(self, Self::Created(_))
    }
}

/// Rows per multi-row INSERT: 3 parameters each keeps far below every database's limit.
const ROWS_PER_INSERT: usize = 500;

/// What one new version writes, whatever its kind.
pub(crate) struct NewVersion<'a> {
    pub(crate) kind: ArtifactKind,
    pub(crate) name: &'a str,
    pub(crate) version: &'a semver::Version,
    pub(crate) sha256: &'a str,
    pub(crate) description: Option<&'a str>,
    pub(crate) agents: Option<String>,
    pub(crate) schema: Option<String>,
    pub(crate) row_count: Option<i64>,
    pub(crate) format: Option<&'a str>,
    pub(crate) rows_file: Option<&'a str>,
    pub(crate) files: &'a [BundleFile],
    pub(crate) rows: &'a [Map<String, Value>],
    pub(crate) created_by: Option<Uuid>,
}

impl<'a> NewVersion<'a> {
    /// The version row of a parsed capability.
    pub(crate) fn capability(cap: &'a Capability, created_by: Option<Uuid>) -> Result<Self> {
        let agents: Vec<AgentInfo> = cap
            .agents
            .iter()
            .map(|a| AgentInfo {
                name: a.name.clone(),
                description: a.description.clone(),
                model: a.model.clone(),
                tools: a.tools.clone(),
                instructions: a.instructions.clone(),
                path: a.path.clone(),
            })
            .collect();
        let agents =
            serde_json::to_string(&agents).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Self {
            kind: ArtifactKind::Capability,
            name: cap.name.as_str(),
            version: &cap.version,
            sha256: &cap.sha256,
            description: cap.description.as_deref(),
            agents: Some(agents),
            schema: None,
            row_count: None,
            format: None,
            rows_file: None,
            files: cap.bundle.files(),
            rows: &[],
            created_by,
        })
    }
}

fn summary(row: &AnyRow) -> Result<ArtifactSummary> {
    Ok(ArtifactSummary {
        id: uuid(row, "id")?,
        name: text(row, "name")?,
        description: opt_text(row, "description")?,
        latest_version: text(row, "latest_version")?,
        version_count: int(row, "version_count")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

const ARTIFACT_SELECT: &str = "SELECT a.*, (SELECT COUNT(*) FROM artifact_versions v WHERE v.artifact_id = a.id) AS version_count FROM artifacts a";
const VERSION_SELECT: &str = "SELECT v.*, a.name AS artifact_name FROM artifact_versions v JOIN artifacts a ON a.id = v.artifact_id";

/// Escapes `%`, `_` and `\` so a search term matches literally inside `LIKE … ESCAPE '\'`.
pub(crate) fn like_pattern(term: &str) -> String {
    let mut out = String::from("%");
    for c in term.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// Publishes a capability version. Identical content under an existing version is
    /// [`Published::Existing`]; other content is a [`StoreError::Conflict`] saying so.
    pub async fn publish_capability(
        &self,
        org_id: Uuid,
        cap: &Capability,
        created_by: Option<Uuid>,
    ) -> Result<Published<CapabilityVersion>> {
        let published = self
            .publish(org_id, NewVersion::capability(cap, created_by)?)
            .await?;
        let version = cap.version.to_string();
        let fetch = || async {
            self.capability_version(org_id, cap.name.as_str(), &version)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("capability {}@{version}", cap.name)))
        };
        Ok(match published {
            Published::Created(()) => Published::Created(fetch().await?),
            Published::Existing(()) => Published::Existing(fetch().await?),
        })
    }

    /// Publishes a dataset version, rows included, with the same rules as capabilities.
    pub async fn publish_dataset(
        &self,
        org_id: Uuid,
        ds: &Dataset,
        created_by: Option<Uuid>,
    ) -> Result<Published<DatasetVersion>> {
        let format = match ds.format {
            gepard_agent::bundle::RowFormat::Jsonl => "jsonl",
            gepard_agent::bundle::RowFormat::Csv => "csv",
            gepard_agent::bundle::RowFormat::Parquet => "parquet",
        };
        let published = self
            .publish(
                org_id,
                NewVersion {
                    kind: ArtifactKind::Dataset,
                    name: ds.name.as_str(),
                    version: &ds.version,
                    sha256: &ds.sha256,
                    description: ds.description.as_deref(),
                    agents: None,
                    schema: Some(ds.schema.to_string()),
                    row_count: Some(ds.rows.len() as i64),
                    format: Some(format),
                    rows_file: Some(&ds.rows_file),
                    files: ds.bundle.files(),
                    rows: &ds.rows,
                    created_by,
                },
            )
            .await?;
        let version = ds.version.to_string();
        let fetch = || async {
            self.dataset_version(org_id, ds.name.as_str(), &version)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("dataset {}@{version}", ds.name)))
        };
        Ok(match published {
            Published::Created(()) => Published::Created(fetch().await?),
            Published::Existing(()) => Published::Existing(fetch().await?),
        })
    }

    async fn publish(&self, org_id: Uuid, nv: NewVersion<'_>) -> Result<Published<()>> {
        match self.try_publish(org_id, &nv).await {
            // A concurrent publisher of the same name or version won the insert (possible on
            // PostgreSQL, where writers do not queue up front): look again, which now finds
            // theirs and answers Existing or Conflict.
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                self.try_publish(org_id, &nv).await
            }
            other => other,
        }
    }

    async fn try_publish(&self, org_id: Uuid, nv: &NewVersion<'_>) -> Result<Published<()>> {
        let mut tx = self.write_tx().await?;
        let written = insert_version(&mut tx, self.backend, org_id, nv, None).await?;
        if written.is_created() {
            tx.commit().await?;
        }
        Ok(match written {
            Published::Created(_) => Published::Created(()),
            Published::Existing(_) => Published::Existing(()),
        })
    }
}

/// Writes a version inside the caller's transaction (publish, promotion): the artifact row
/// (created or its latest version moved up), the version with its files and rows. Returns the
/// new version's id, or [`Published::Existing`] when this exact content is already there.
pub(crate) async fn insert_version(
    tx: &mut sqlx::AnyConnection,
    backend: Backend,
    org_id: Uuid,
    nv: &NewVersion<'_>,
    provenance: Option<&str>,
) -> Result<Published<String>> {
    let version = nv.version.to_string();
    let kind = nv.kind.as_str();
    let now = now_text();
    // Locked on PostgreSQL: two publishers of different versions would otherwise both read
    // the old latest_version and the lower one could overwrite the higher.
    let artifact = sqlx::query(&format!(
        "SELECT id, latest_version FROM artifacts WHERE org_id = $1 AND kind = $2 AND name = $3{}",
        backend.for_update()
    ))
    .bind(org_id.to_string())
    .bind(kind)
    .bind(nv.name)
    .fetch_optional(&mut *tx)
    .await?;
    let artifact_id = match artifact {
        Some(row) => {
            let id = text(&row, "id")?;
            let existing = sqlx::query(
                "SELECT id, sha256 FROM artifact_versions WHERE artifact_id = $1 AND version = $2",
            )
            .bind(&id)
            .bind(&version)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(existing) = existing {
                let sha = text(&existing, "sha256")?;
                if sha == nv.sha256 {
                    return Ok(Published::Existing(text(&existing, "id")?));
                }
                return Err(StoreError::Conflict(format!(
                        "{kind} {}@{version} is already published with different content \
                         (sha256 {sha}, this bundle {}); versions are immutable: publish a new version",
                        nv.name, nv.sha256
                    )));
            }
            let latest = semver::Version::parse(&text(&row, "latest_version")?)
                .map_err(|e| StoreError::Corrupt(format!("latest_version: {e}")))?;
            if *nv.version > latest {
                sqlx::query("UPDATE artifacts SET latest_version = $1, description = $2, updated_at = $3 WHERE id = $4")
                        .bind(&version)
                        .bind(nv.description)
                        .bind(&now)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
            } else {
                sqlx::query("UPDATE artifacts SET updated_at = $1 WHERE id = $2")
                    .bind(&now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
            }
            id
        }
        None => {
            let id = Uuid::new_v4().to_string();
            sqlx::query("INSERT INTO artifacts (id, org_id, kind, name, description, latest_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)")
                    .bind(&id)
                    .bind(org_id.to_string())
                    .bind(kind)
                    .bind(nv.name)
                    .bind(nv.description)
                    .bind(&version)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
            id
        }
    };
    let version_id = Uuid::new_v4().to_string();
    sqlx::query("INSERT INTO artifact_versions (id, artifact_id, version, sha256, description, agents, schema, row_count, format, rows_file, provenance, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
            .bind(&version_id)
            .bind(&artifact_id)
            .bind(&version)
            .bind(nv.sha256)
            .bind(nv.description)
            .bind(nv.agents.as_deref())
            .bind(nv.schema.as_deref())
            .bind(nv.row_count)
            .bind(nv.format)
            .bind(nv.rows_file)
            .bind(provenance)
            .bind(nv.created_by.map(|u| u.to_string()))
            .bind(&now)
            .execute(&mut *tx)
            .await?;
    for f in nv.files {
        sqlx::query("INSERT INTO artifact_files (version_id, path, sha256, size, content) VALUES ($1, $2, $3, $4, $5)")
                .bind(&version_id)
                .bind(&f.path)
                .bind(&f.sha256)
                .bind(f.content.len() as i64)
                .bind(f.content.clone())
                .execute(&mut *tx)
                .await?;
    }
    for (chunk_no, chunk) in nv.rows.chunks(ROWS_PER_INSERT).enumerate() {
        let mut sql = String::from("INSERT INTO dataset_rows (version_id, position, data) VALUES ");
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let p = i * 3;
            sql.push_str(&format!("(${}, ${}, ${})", p + 1, p + 2, p + 3));
        }
        let mut q = sqlx::query(&sql);
        for (i, row) in chunk.iter().enumerate() {
            let position = (chunk_no * ROWS_PER_INSERT + i) as i64;
            q = q
                .bind(version_id.clone())
                .bind(position)
                .bind(Value::Object(row.clone()).to_string());
        }
        q.execute(&mut *tx).await?;
    }
    Ok(Published::Created(version_id))
}

impl Store {
    /// Artifacts of one kind, by name, optionally filtered by a name substring.
    pub async fn list_artifacts(
        &self,
        org_id: Uuid,
        kind: ArtifactKind,
        search: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<ArtifactSummary>> {
        let pattern = like_pattern(search.unwrap_or(""));
        // The pattern is lowercased (`like_pattern`) and so is the name: SQLite's LIKE ignores
        // ASCII case, PostgreSQL's does not, and search must answer the same on both.
        let filter = "WHERE a.org_id = $1 AND a.kind = $2 AND LOWER(a.name) LIKE $3 ESCAPE '\\'";
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM artifacts a {filter}"))
            .bind(org_id.to_string())
            .bind(kind.as_str())
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(&format!(
            "{ARTIFACT_SELECT} {filter} ORDER BY a.name LIMIT $4 OFFSET $5"
        ))
        .bind(org_id.to_string())
        .bind(kind.as_str())
        .bind(&pattern)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        Ok(Page {
            items: rows.iter().map(summary).collect::<Result<_>>()?,
            total,
            page: page.page,
            page_size: page.page_size,
        })
    }

    /// One artifact's summary.
    pub async fn artifact(
        &self,
        org_id: Uuid,
        kind: ArtifactKind,
        name: &str,
    ) -> Result<Option<ArtifactSummary>> {
        let row = sqlx::query(&format!(
            "{ARTIFACT_SELECT} WHERE a.org_id = $1 AND a.kind = $2 AND a.name = $3"
        ))
        .bind(org_id.to_string())
        .bind(kind.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(summary).transpose()
    }

    /// Versions of an artifact, highest first (semver order); `None` when the artifact is unknown.
    pub async fn list_versions(
        &self,
        org_id: Uuid,
        kind: ArtifactKind,
        name: &str,
    ) -> Result<Option<Vec<VersionSummary>>> {
        let Some(artifact) = self.artifact(org_id, kind, name).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT id, version, sha256, created_at FROM artifact_versions WHERE artifact_id = $1",
        )
        .bind(artifact.id.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut versions = rows
            .iter()
            .map(|r| {
                Ok(VersionSummary {
                    id: uuid(r, "id")?,
                    version: text(r, "version")?,
                    sha256: text(r, "sha256")?,
                    created_at: time(r, "created_at")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        versions.sort_by_cached_key(|v| std::cmp::Reverse(semver::Version::parse(&v.version).ok()));
        Ok(Some(versions))
    }

    async fn version_row(
        &self,
        org_id: Uuid,
        kind: ArtifactKind,
        name: &str,
        version: &str,
    ) -> Result<Option<AnyRow>> {
        Ok(sqlx::query(&format!("{VERSION_SELECT} WHERE a.org_id = $1 AND a.kind = $2 AND a.name = $3 AND v.version = $4"))
            .bind(org_id.to_string())
            .bind(kind.as_str())
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn files(&self, version_id: &str) -> Result<Vec<FileInfo>> {
        let rows = sqlx::query(
            "SELECT path, sha256, size FROM artifact_files WHERE version_id = $1 ORDER BY path",
        )
        .bind(version_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FileInfo {
                    path: text(r, "path")?,
                    sha256: text(r, "sha256")?,
                    size: int(r, "size")?,
                })
            })
            .collect()
    }

    /// A capability version in full.
    pub async fn capability_version(
        &self,
        org_id: Uuid,
        name: &str,
        version: &str,
    ) -> Result<Option<CapabilityVersion>> {
        let Some(row) = self
            .version_row(org_id, ArtifactKind::Capability, name, version)
            .await?
        else {
            return Ok(None);
        };
        let agents: Vec<AgentInfo> = serde_json::from_value(json(&row, "agents")?)
            .map_err(|e| StoreError::Corrupt(format!("column agents: {e}")))?;
        let id = text(&row, "id")?;
        Ok(Some(CapabilityVersion {
            id: uuid(&row, "id")?,
            name: text(&row, "artifact_name")?,
            version: text(&row, "version")?,
            description: opt_text(&row, "description")?,
            sha256: text(&row, "sha256")?,
            agents,
            files: self.files(&id).await?,
            provenance: opt_json(&row, "provenance")?,
            created_by: opt_uuid(&row, "created_by")?,
            created_at: time(&row, "created_at")?,
        }))
    }

    /// A dataset version in full (rows are paged with [`Store::dataset_rows`]).
    pub async fn dataset_version(
        &self,
        org_id: Uuid,
        name: &str,
        version: &str,
    ) -> Result<Option<DatasetVersion>> {
        let Some(row) = self
            .version_row(org_id, ArtifactKind::Dataset, name, version)
            .await?
        else {
            return Ok(None);
        };
        let id = text(&row, "id")?;
        Ok(Some(DatasetVersion {
            id: uuid(&row, "id")?,
            name: text(&row, "artifact_name")?,
            version: text(&row, "version")?,
            description: opt_text(&row, "description")?,
            sha256: text(&row, "sha256")?,
            row_count: int(&row, "row_count")?,
            schema: json(&row, "schema")?,
            format: text(&row, "format")?,
            rows_file: text(&row, "rows_file")?,
            files: self.files(&id).await?,
            created_by: opt_uuid(&row, "created_by")?,
            created_at: time(&row, "created_at")?,
        }))
    }

    /// The bytes of one stored file of a version.
    pub async fn file_content(
        &self,
        org_id: Uuid,
        kind: ArtifactKind,
        name: &str,
        version: &str,
        path: &str,
    ) -> Result<Option<Vec<u8>>> {
        let Some(row) = self.version_row(org_id, kind, name, version).await? else {
            return Ok(None);
        };
        Ok(sqlx::query_scalar(
            "SELECT content FROM artifact_files WHERE version_id = $1 AND path = $2",
        )
        .bind(text(&row, "id")?)
        .bind(path)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A window of a dataset version's rows, in file order.
    pub async fn dataset_rows(
        &self,
        org_id: Uuid,
        name: &str,
        version: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Option<RowsPage>> {
        let Some(row) = self
            .version_row(org_id, ArtifactKind::Dataset, name, version)
            .await?
        else {
            return Ok(None);
        };
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM dataset_rows WHERE version_id = $1 AND position >= $2 ORDER BY position LIMIT $3",
        )
        .bind(text(&row, "id")?)
        .bind(offset)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|s| {
                serde_json::from_str(s)
                    .map_err(|e| StoreError::Corrupt(format!("dataset row: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok(Some(RowsPage {
            items,
            offset,
            limit,
            total: int(&row, "row_count")?,
        }))
    }

    /// Every row of a dataset version, in file order (read in pages of 1,000), or `None`
    /// when the version does not exist. `name` may carry the org prefix (`acme/train`).
    pub async fn all_dataset_rows(
        &self,
        org_id: Uuid,
        name: &str,
        version: &str,
    ) -> Result<Option<Vec<Value>>> {
        const PAGE: i64 = 1000;
        let bare = name.rsplit_once('/').map_or(name, |(_, n)| n);
        let mut rows = Vec::new();
        loop {
            let offset = i64::try_from(rows.len()).unwrap_or(i64::MAX);
            let Some(page) = self
                .dataset_rows(org_id, bare, version, offset, PAGE)
                .await?
            else {
                return Ok(None);
            };
            let done = i64::try_from(page.items.len()).unwrap_or(0) < PAGE;
            rows.extend(page.items);
            if done {
                return Ok(Some(rows));
            }
        }
    }
}
