//! Optimization jobs: creation (with idempotency keys), listing, compare-and-set updates that
//! carry their evidence (log entries, metric points) in the same transaction, and the
//! attempt history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gepard_core::job::{JobStatus, LeaseEffect};
use gepard_core::model::{Job, JobAttempt, JobSpec, JobUsage, Page, SequencedLog};
use gepard_core::progress::{JobSummary, LogEntry, MetricPoint};
use gepard_core::PageRequest;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use crate::rows::{int, json, now_text, opt_text, opt_time, opt_uuid, text, time, uuid};
use crate::series::{SeqPoint, Series};
use crate::{is_unique_violation, Backend, Result, Store, StoreError};

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Owning organization.
    pub org_id: Uuid,
    /// Owning workspace.
    pub workspace_id: Uuid,
    /// Resolved project.
    pub project_id: Uuid,
    /// Display name.
    pub name: Option<String>,
    /// `gepa`.
    pub backend: String,
    /// `capability_agent`.
    pub target_kind: String,
    /// Target model id.
    pub model: String,
    /// Caller's run reference.
    pub run_ref: Option<String>,
    /// Objective in words.
    pub objective: Option<String>,
    /// Pinned inputs.
    pub spec: JobSpec,
    /// Submitting user.
    pub created_by: Option<Uuid>,
}

/// An `Idempotency-Key` and the hash of the request body it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// The header value.
    pub key: String,
    /// Hash of the canonical request body.
    pub request_hash: String,
}

/// How a create call ended.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new job was written.
    New(Job),
    /// The idempotency key was seen with the same body: the earlier job.
    Replayed(Job),
}

/// List filters of `GET …/jobs`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this backend.
    pub backend: Option<String>,
    /// Only this target kind.
    pub target_kind: Option<String>,
    /// Only this project.
    pub project_id: Option<Uuid>,
    /// Only jobs whose id, name, model, capability (`name@version`) or tags contain this text,
    /// ignoring case.
    pub search: Option<String>,
    /// Oldest first instead of newest first (a runtime taking queued jobs in order).
    pub oldest_first: bool,
}

/// A job as a writer holding its row reads it ([`Store::lock_job_in`]).
pub(crate) struct LockedJob {
    /// The job, without its metric series.
    pub(crate) job: Job,
    /// Who holds its lease.
    pub(crate) lease_owner: Option<String>,
    /// The current fencing token.
    pub(crate) lease_token: i64,
    /// The last log sequence number.
    pub(crate) log_seq: i64,
}

/// A compare-and-set update of a job: applied only if the job is still in `expected_status`
/// at `expected_attempt` with the cancel request as seen (and, for workers, still holds
/// `expected_lease_token`), so two writers can never both win.
#[derive(Debug, Clone)]
pub struct JobWrite {
    /// Status the writer saw.
    pub expected_status: JobStatus,
    /// Attempt the writer saw.
    pub expected_attempt: i64,
    /// Fencing token a worker holds; `None` for API writes.
    pub expected_lease_token: Option<i64>,
    /// Whether the writer saw a cancel request. A decision taken without one (an outside
    /// runtime's end, which a cancel request turns into `cancelled`) must not land after one.
    pub expected_cancel_requested: bool,
    /// New status.
    pub status: JobStatus,
    /// New attempt number.
    pub attempt: i64,
    /// `Some(v)` sets `started_at` to `v`.
    pub started_at: Option<Option<DateTime<Utc>>>,
    /// `Some(v)` sets `completed_at` to `v`.
    pub completed_at: Option<Option<DateTime<Utc>>>,
    /// `Some(v)` sets `cancel_requested_at` to `v`.
    pub cancel_requested_at: Option<Option<DateTime<Utc>>>,
    /// Replaces the summary.
    pub summary: Option<JobSummary>,
    /// Replaces the artifacts.
    pub artifacts: Option<Value>,
    /// `Some(v)` sets the error to `v`.
    pub error: Option<Option<String>>,
    /// Replaces the usage.
    pub usage: Option<JobUsage>,
    /// Sets (or, with `Some(None)`, clears) `last_event_at`.
    pub last_event_at: Option<Option<DateTime<Utc>>>,
    /// Copy the finished attempt into the history before overwriting it (retry).
    pub archive_attempt: bool,
    /// Log entries to append.
    pub logs: Vec<LogEntry>,
    /// Metric points to append.
    pub metrics: Vec<(String, MetricPoint)>,
    /// What happens to the worker lease.
    pub lease: LeaseEffect,
    /// The claiming worker (with [`LeaseEffect::Acquire`]).
    pub lease_owner: Option<String>,
    /// How long a granted or renewed lease lasts.
    pub lease_duration: chrono::Duration,
}

impl JobWrite {
    /// Clears what a run of the attempt found: summary, artifacts, error and usage (a retry,
    /// and a claim that starts an attempt over).
    pub(crate) fn clear_results(&mut self) {
        self.summary = Some(JobSummary::default());
        self.artifacts = Some(serde_json::json!({}));
        self.error = Some(None);
        self.usage = Some(JobUsage::default());
    }

    /// A write that changes nothing yet, expecting the job as it is.
    pub fn expecting(job: &Job) -> Self {
        Self {
            expected_status: job.status,
            expected_attempt: job.attempt,
            expected_lease_token: None,
            expected_cancel_requested: job.cancel_requested_at.is_some(),
            status: job.status,
            attempt: job.attempt,
            started_at: None,
            completed_at: None,
            cancel_requested_at: None,
            summary: None,
            artifacts: None,
            error: None,
            usage: None,
            last_event_at: None,
            archive_attempt: false,
            logs: Vec::new(),
            metrics: Vec::new(),
            lease: LeaseEffect::Keep,
            lease_owner: None,
            lease_duration: chrono::Duration::seconds(30),
        }
    }
}

const JOB_SELECT: &str =
    "SELECT j.*, p.key AS project_key FROM jobs j JOIN projects p ON p.id = j.project_id";

fn metric_point(r: &AnyRow) -> Result<MetricPoint> {
    Ok(MetricPoint {
        value: r.try_get::<f64, _>("value")?,
        step: int(r, "step")?,
        timestamp: Some(time(r, "timestamp")?),
    })
}

fn ts(t: &DateTime<Utc>) -> String {
    gepard_core::time::format(t)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(v: Value, col: &str) -> Result<T> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

pub(crate) fn status(row: &AnyRow, col: &str) -> Result<JobStatus> {
    text(row, col)?
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

/// A job from its row, with `metrics` empty (they live in their own table).
fn job_without_metrics(row: &AnyRow) -> Result<Job> {
    let spec: JobSpec = from_json(json(row, "spec")?, "spec")?;
    Ok(Job {
        id: uuid(row, "id")?,
        organization_id: uuid(row, "org_id")?,
        workspace_id: uuid(row, "workspace_id")?,
        status: status(row, "status")?,
        name: opt_text(row, "name")?,
        backend: text(row, "backend")?,
        target_kind: text(row, "target_kind")?,
        model: text(row, "model")?,
        project: text(row, "project_key")?,
        project_id: uuid(row, "project_id")?,
        run_ref: opt_text(row, "run_ref")?,
        dataset_ref: spec.dataset_ref,
        val_dataset_ref: spec.val_dataset_ref,
        objective: opt_text(row, "objective")?,
        capability: spec.capability,
        agent_name: spec.agent_name,
        reward_recipe: spec.reward_recipe,
        components: spec.components,
        config: spec.config,
        metrics: BTreeMap::new(),
        summary: {
            // The job's objective is what its run optimizes for; runs need not repeat it.
            let mut summary: JobSummary = from_json(json(row, "summary")?, "summary")?;
            if summary.objective.is_none() {
                summary.objective = opt_text(row, "objective")?;
            }
            summary
        },
        artifacts: json(row, "artifacts")?,
        tags: spec.tags,
        error: opt_text(row, "error")?,
        created_at: time(row, "created_at")?,
        created_by: opt_uuid(row, "created_by")?,
        started_at: opt_time(row, "started_at")?,
        completed_at: opt_time(row, "completed_at")?,
        cancel_requested_at: opt_time(row, "cancel_requested_at")?,
        updated_at: time(row, "updated_at")?,
        last_event_at: opt_time(row, "last_event_at")?,
        attempt: int(row, "attempt")?,
        usage: from_json(json(row, "usage")?, "usage")?,
    })
}

impl Store {
    /// Creates a queued job; with an idempotency key, a repeat of the same request returns the
    /// earlier job and a different request under the same key is a conflict.
    pub async fn create_job(
        &self,
        new: NewJob,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Created> {
        match self.try_create_job(&new, idempotency.as_ref()).await {
            // PostgreSQL: a concurrent request with the same key committed its job between our
            // look-up and our insert (on SQLite writers queue, so it cannot happen). Looking
            // again finds theirs and replays it, or reports the different body.
            Err(StoreError::Database(e)) if idempotency.is_some() && is_unique_violation(&e) => {
                self.try_create_job(&new, idempotency.as_ref()).await
            }
            other => other,
        }
    }

    async fn try_create_job(
        &self,
        new: &NewJob,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<Created> {
        let mut tx = self.write_tx().await?;
        if let Some(idem) = idempotency {
            let seen = sqlx::query("SELECT request_hash, job_id FROM idempotency_keys WHERE workspace_id = $1 AND key = $2")
                .bind(new.workspace_id.to_string())
                .bind(&idem.key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(seen) = seen {
                if text(&seen, "request_hash")? != idem.request_hash {
                    return Err(StoreError::Conflict(format!(
                        "Idempotency-Key `{}` was already used with a different request body",
                        idem.key
                    )));
                }
                let id = uuid(&seen, "job_id")?;
                tx.rollback().await?;
                let job = self
                    .job(new.workspace_id, id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
                return Ok(Created::Replayed(job));
            }
        }
        let id = Uuid::new_v4();
        let now = now_text();
        sqlx::query(
            "INSERT INTO jobs (id, org_id, workspace_id, project_id, status, attempt, name, backend, target_kind, model, \
             run_ref, objective, spec, summary, artifacts, usage, error, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, $10, $11, $12, $13, '{}', $14, NULL, $15, $16, $16)",
        )
        .bind(id.to_string())
        .bind(new.org_id.to_string())
        .bind(new.workspace_id.to_string())
        .bind(new.project_id.to_string())
        .bind(JobStatus::Queued.as_str())
        .bind(new.name.as_deref())
        .bind(&new.backend)
        .bind(&new.target_kind)
        .bind(&new.model)
        .bind(new.run_ref.as_deref())
        .bind(new.objective.as_deref())
        .bind(to_json(&new.spec)?)
        .bind(to_json(&JobSummary::default())?)
        .bind(to_json(&JobUsage::default())?)
        .bind(new.created_by.map(|u| u.to_string()))
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        if let Some(idem) = idempotency {
            sqlx::query("INSERT INTO idempotency_keys (workspace_id, key, request_hash, job_id, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(new.workspace_id.to_string())
                .bind(&idem.key)
                .bind(&idem.request_hash)
                .bind(id.to_string())
                .bind(&now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let job = self
            .job(new.workspace_id, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        Ok(Created::New(job))
    }

    /// A job of a workspace.
    pub async fn job(&self, workspace_id: Uuid, id: Uuid) -> Result<Option<Job>> {
        let mut conn = self.pool.acquire().await?;
        Ok(self
            .read_job(&mut conn, workspace_id, id)
            .await?
            .map(|(job, _)| job))
    }

    /// A job of a workspace with its revision: of two records of a job, the one with the
    /// higher revision is the newer (a live view must never show the older after the newer).
    /// The row and the metric series are read in one snapshot, so the series is exactly the
    /// revision's: read in two, a record could pair a newer row with an older series than a
    /// record of a lower revision, and a chart would lose a point for one event.
    pub async fn job_with_revision(
        &self,
        workspace_id: Uuid,
        id: Uuid,
    ) -> Result<Option<(Job, i64)>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // READ COMMITTED takes a snapshot per statement; SQLite's read transaction (WAL)
            // already keeps one from its first read to its end.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let read = self.read_job(&mut tx, workspace_id, id).await?;
        tx.commit().await?;
        Ok(read)
    }

    /// A job of a workspace and its revision, read on `conn`.
    async fn read_job(
        &self,
        conn: &mut AnyConnection,
        workspace_id: Uuid,
        id: Uuid,
    ) -> Result<Option<(Job, i64)>> {
        let row = sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.workspace_id = $1 AND j.id = $2"
        ))
        .bind(workspace_id.to_string())
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        match row {
            Some(row) => Ok(Some((
                self.job_from_row(conn, &row).await?,
                int(&row, "revision")?,
            ))),
            None => Ok(None),
        }
    }

    /// A job by id alone (workers, which are not scoped to a workspace).
    pub async fn job_by_id(&self, id: Uuid) -> Result<Option<Job>> {
        self.job_by_id_with(id, true).await
    }

    /// A job by id with its `metrics` left empty: what the lifecycle needs to decide a change
    /// (status, attempt, summary, artifacts, times). The series cost a row per point, a long
    /// run has thousands, and they would otherwise be read again on every progress event.
    pub(crate) async fn job_state_by_id(&self, id: Uuid) -> Result<Option<Job>> {
        self.job_by_id_with(id, false).await
    }

    /// [`Store::job_state_by_id`] inside the caller's write transaction, holding the job's row
    /// until it ends, with what of the row the job record does not carry.
    pub(crate) async fn lock_job_in(
        conn: &mut AnyConnection,
        backend: Backend,
        id: Uuid,
    ) -> Result<Option<LockedJob>> {
        let row = sqlx::query(&format!(
            "{JOB_SELECT} WHERE j.id = $1{}",
            backend.for_update_of_job()
        ))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|r| {
            Ok(LockedJob {
                job: job_without_metrics(&r)?,
                lease_owner: opt_text(&r, "lease_owner")?,
                lease_token: int(&r, "lease_token")?,
                log_seq: int(&r, "log_seq")?,
            })
        })
        .transpose()
    }

    /// [`Store::job_state_by_id`] inside the caller's transaction (claims, the lease reaper).
    pub(crate) async fn job_state_in(conn: &mut AnyConnection, id: Uuid) -> Result<Option<Job>> {
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE j.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(job_without_metrics).transpose()
    }

    async fn job_by_id_with(&self, id: Uuid, with_metrics: bool) -> Result<Option<Job>> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE j.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(row) if with_metrics => Ok(Some(self.job_from_row(&mut conn, &row).await?)),
            Some(row) => Ok(Some(job_without_metrics(&row)?)),
            None => Ok(None),
        }
    }

    /// The job of a row, with its metric series read on the same connection.
    async fn job_from_row(&self, conn: &mut AnyConnection, row: &AnyRow) -> Result<Job> {
        let mut job = job_without_metrics(row)?;
        job.metrics = self.series_in(conn, job.id, job.attempt).await?;
        Ok(job)
    }

    /// The metric series of a job's attempt. Only the points written since this store last
    /// read the job are fetched when it can (see `series`); otherwise, and when a rewind
    /// happened in between, all of them.
    async fn series_in(
        &self,
        conn: &mut AnyConnection,
        job_id: Uuid,
        attempt: i64,
    ) -> Result<Series> {
        let mut after = self.series.read_after(job_id, attempt);
        loop {
            // The epoch comes from the same statement as the points: one snapshot, so the
            // points are all from before a rewind or all from after it. So does the last
            // point of the snapshot, which bounds what of the remembered series is returned.
            let rows = sqlx::query(
                "SELECT j.metrics_epoch, j.upto, m.seq, m.name, m.value, m.step, m.timestamp \
                 FROM (SELECT id, metrics_epoch, \
                       (SELECT COALESCE(MAX(s.seq), 0) FROM job_metrics s WHERE s.job_id = $1) AS upto \
                       FROM jobs WHERE id = $1) j \
                 LEFT JOIN job_metrics m ON m.job_id = j.id AND m.attempt = $2 AND m.seq > $3 \
                 ORDER BY m.seq",
            )
            .bind(job_id.to_string())
            .bind(attempt)
            .bind(after.unwrap_or(0))
            .fetch_all(&mut *conn)
            .await?;
            let Some(first) = rows.first() else {
                return Ok(Series::new());
            };
            let epoch = int(first, "metrics_epoch")?;
            let upto = int(first, "upto")?;
            let mut points = Vec::with_capacity(rows.len());
            for r in &rows {
                // The one row of a left join without new points has no point.
                if let Some(seq) = r.try_get::<Option<i64>, _>("seq")? {
                    points.push(SeqPoint {
                        seq,
                        name: text(r, "name")?,
                        point: metric_point(r)?,
                    });
                }
            }
            match self
                .series
                .extend(job_id, attempt, epoch, after, points, upto)
            {
                Some(series) => return Ok(series),
                // Only after a partial read: the next round reads every point.
                None => after = None,
            }
        }
    }

    /// Loads the metric series of every job in `jobs` (of the attempt each was read at) with
    /// one query, not one per job: a page of 100 jobs was 101 round trips.
    async fn fill_metrics(&self, jobs: &mut [Job]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // The ids are bound, never inlined; only the placeholders are built here.
        let placeholders = (1..=jobs.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        // In step order, as a job read alone has them (see `series`).
        let sql = format!(
            "SELECT job_id, attempt, name, value, step, timestamp FROM job_metrics \
             WHERE job_id IN ({placeholders}) ORDER BY job_id, step, seq"
        );
        let mut q = sqlx::query(&sql);
        for job in jobs.iter() {
            q = q.bind(job.id.to_string());
        }
        let rows = q.fetch_all(&self.pool).await?;
        // Earlier attempts' points stay in the table; each job shows its own attempt's.
        let attempts: std::collections::HashMap<Uuid, i64> =
            jobs.iter().map(|j| (j.id, j.attempt)).collect();
        let mut by_job: std::collections::HashMap<Uuid, BTreeMap<String, Vec<MetricPoint>>> =
            std::collections::HashMap::new();
        for r in &rows {
            let id = uuid(r, "job_id")?;
            if attempts.get(&id) != Some(&int(r, "attempt")?) {
                continue;
            }
            by_job
                .entry(id)
                .or_default()
                .entry(text(r, "name")?)
                .or_default()
                .push(metric_point(r)?);
        }
        for job in jobs.iter_mut() {
            job.metrics = by_job.remove(&job.id).unwrap_or_default();
        }
        Ok(())
    }

    /// How many jobs are in each status, over every organization: what an operator's
    /// `/metrics` scrape reports. One `GROUP BY` over the `(status, created_at)` index, so it
    /// stays cheap with many jobs. Statuses without jobs are absent; the order is by status.
    pub async fn job_counts_by_status(&self) -> Result<Vec<(JobStatus, i64)>> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let status = text(r, "status")?;
            let status = status
                .parse::<JobStatus>()
                .map_err(|e| StoreError::Corrupt(format!("job status `{}`", e.0)))?;
            out.push((status, int(r, "n")?));
        }
        Ok(out)
    }

    /// Jobs of a workspace, newest first.
    pub async fn list_jobs(
        &self,
        workspace_id: Uuid,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<Page<Job>> {
        let mut clauses = vec!["j.workspace_id = $1".to_owned()];
        let mut binds: Vec<String> = vec![workspace_id.to_string()];
        let mut add = |clause: &str, value: String| {
            binds.push(value);
            clauses.push(format!("{clause} = ${}", binds.len()));
        };
        if let Some(s) = filter.status {
            add("j.status", s.as_str().to_owned());
        }
        if let Some(b) = &filter.backend {
            add("j.backend", b.clone());
        }
        if let Some(t) = &filter.target_kind {
            add("j.target_kind", t.clone());
        }
        if let Some(p) = filter.project_id {
            add("j.project_id", p.to_string());
        }
        if let Some(term) = filter.search.as_deref().filter(|t| !t.is_empty()) {
            binds.push(crate::registry::like_pattern(term));
            // Lowercased on both sides (the pattern by `like_pattern`): SQLite's LIKE ignores
            // ASCII case, PostgreSQL's does not, and a search must answer the same on both.
            let (capability, version, tags) = match self.backend {
                Backend::Sqlite => (
                    "json_extract(j.spec, '$.capability.name')",
                    "json_extract(j.spec, '$.capability.version')",
                    "json_extract(j.spec, '$.tags')",
                ),
                Backend::Postgres => (
                    "(j.spec::json #>> '{capability,name}')",
                    "(j.spec::json #>> '{capability,version}')",
                    "(j.spec::json #>> '{tags}')",
                ),
            };
            clauses.push(format!(
                "LOWER(j.id || ' ' || COALESCE(j.name, '') || ' ' || j.model || ' ' || \
                 COALESCE({capability}, '') || '@' || COALESCE({version}, '') || ' ' || \
                 COALESCE({tags}, '')) LIKE ${} ESCAPE '\\'",
                binds.len()
            ));
        }
        let filter_sql = clauses.join(" AND ");
        let count_sql = format!("SELECT COUNT(*) FROM jobs j WHERE {filter_sql}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        for b in &binds {
            count = count.bind(b.clone());
        }
        let total = count.fetch_one(&self.pool).await?;
        let n = binds.len();
        let sql = format!(
            "{JOB_SELECT} WHERE {filter_sql} ORDER BY j.created_at {order}, j.id {order} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2,
            order = if filter.oldest_first { "ASC" } else { "DESC" },
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.clone());
        }
        let rows = q
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows
            .iter()
            .map(job_without_metrics)
            .collect::<Result<Vec<_>>>()?;
        self.fill_metrics(&mut items).await?;
        Ok(Page {
            items,
            total,
            page: page.page,
            page_size: page.page_size,
        })
    }

    /// Applies a compare-and-set write: the job's workspace once written. `Ok(None)` means the
    /// job changed underneath the writer (or the writer's lease token is stale): nothing was
    /// written; re-read and decide again.
    pub async fn write_job(&self, job_id: Uuid, w: &JobWrite) -> Result<Option<Uuid>> {
        let mut tx = self.write_tx().await?;
        let Some(workspace_id) = write_job_in(&mut tx, self.backend, job_id, w).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(workspace_id))
    }
    /// Log entries after sequence number `after`, oldest first, at most `limit`.
    pub async fn job_logs(
        &self,
        job_id: Uuid,
        after: i64,
        limit: i64,
    ) -> Result<Vec<SequencedLog>> {
        let rows = sqlx::query("SELECT seq, attempt, timestamp, level, message, data FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(job_id.to_string())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SequencedLog {
                    seq: int(r, "seq")?,
                    attempt: int(r, "attempt")?,
                    entry: LogEntry {
                        timestamp: time(r, "timestamp")?,
                        level: serde_json::from_value(Value::String(text(r, "level")?))
                            .map_err(|e| StoreError::Corrupt(format!("column level: {e}")))?,
                        message: text(r, "message")?,
                        data: json(r, "data")?,
                    },
                })
            })
            .collect()
    }

    /// Finished attempts of a job, oldest first.
    pub async fn job_attempts(&self, job_id: Uuid) -> Result<Vec<JobAttempt>> {
        let rows = sqlx::query("SELECT * FROM job_attempts WHERE job_id = $1 ORDER BY attempt")
            .bind(job_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JobAttempt {
                    attempt: int(r, "attempt")?,
                    status: status(r, "status")?,
                    summary: from_json(json(r, "summary")?, "summary")?,
                    artifacts: json(r, "artifacts")?,
                    usage: from_json(json(r, "usage")?, "usage")?,
                    error: opt_text(r, "error")?,
                    started_at: opt_time(r, "started_at")?,
                    completed_at: opt_time(r, "completed_at")?,
                })
            })
            .collect()
    }
}

/// The compare-and-set of [`Store::write_job`] inside the caller's write transaction: the
/// workspace of the job when written, `None` when the job is not as `w` expects (nothing was
/// written; the caller rolls back).
pub(crate) async fn write_job_in(
    conn: &mut AnyConnection,
    backend: Backend,
    job_id: Uuid,
    w: &JobWrite,
) -> Result<Option<Uuid>> {
    let id = job_id.to_string();
    // Locked on PostgreSQL so the check below and the update are one step: without it two
    // writers at READ COMMITTED both see the old status and both "win".
    let Some(cur) = sqlx::query(&format!(
        "SELECT status, attempt, log_seq, lease_token, workspace_id, cancel_requested_at FROM jobs WHERE id = $1{}",
        backend.for_update()
    ))
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Err(StoreError::NotFound(format!("job {job_id}")));
    };
    let fenced = w
        .expected_lease_token
        .is_some_and(|t| t != int(&cur, "lease_token").unwrap_or(-1));
    if status(&cur, "status")? != w.expected_status
        || int(&cur, "attempt")? != w.expected_attempt
        || opt_text(&cur, "cancel_requested_at")?.is_some() != w.expected_cancel_requested
        || fenced
    {
        return Ok(None);
    }
    let workspace_id = uuid(&cur, "workspace_id")?;
    if w.archive_attempt {
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, status, summary, artifacts, usage, error, started_at, completed_at) \
             SELECT id, attempt, status, summary, artifacts, usage, error, started_at, completed_at FROM jobs WHERE id = $1",
        )
        .bind(&id)
        .execute(&mut *conn)
        .await?;
    }
    let now = now_text();
    let log_seq = int(&cur, "log_seq")?;
    let mut sets = vec![
        "status = $2".to_owned(),
        "attempt = $3".to_owned(),
        "updated_at = $4".to_owned(),
        "revision = revision + 1".to_owned(),
    ];
    let mut binds: Vec<Option<String>> = vec![];
    let mut set = |col: &str, v: Option<String>| {
        binds.push(v);
        sets.push(format!("{col} = ${}", binds.len() + 4));
    };
    let opt_ts = |v: &Option<DateTime<Utc>>| v.as_ref().map(ts);
    if let Some(v) = &w.started_at {
        set("started_at", opt_ts(v));
    }
    if let Some(v) = &w.completed_at {
        set("completed_at", opt_ts(v));
    }
    if let Some(v) = &w.cancel_requested_at {
        set("cancel_requested_at", opt_ts(v));
    }
    if let Some(v) = &w.summary {
        set("summary", Some(to_json(v)?));
    }
    if let Some(v) = &w.artifacts {
        set("artifacts", Some(to_json(v)?));
    }
    if let Some(v) = &w.error {
        set("error", v.clone());
    }
    if let Some(v) = &w.usage {
        set("usage", Some(to_json(v)?));
    }
    if let Some(v) = &w.last_event_at {
        set("last_event_at", opt_ts(v));
    }
    let expires = ts(&(gepard_core::time::now() + w.lease_duration));
    match w.lease {
        LeaseEffect::Keep => {}
        LeaseEffect::Acquire => {
            set("lease_owner", w.lease_owner.clone());
            set("lease_expires_at", Some(expires));
        }
        LeaseEffect::Renew => set("lease_expires_at", Some(expires)),
        LeaseEffect::Release => {
            // The token stays: it only ever grows, so a stale runner stays fenced out.
            set("lease_owner", None);
            set("lease_expires_at", None);
        }
    }
    if w.lease == LeaseEffect::Acquire {
        // A fresh token fences out whoever held the job before.
        sets.push("lease_token = lease_token + 1".to_owned());
    }
    if !w.logs.is_empty() {
        // A count we computed, not client text: safe to inline.
        sets.push(format!("log_seq = log_seq + {}", w.logs.len()));
    }
    let sql = format!("UPDATE jobs SET {} WHERE id = $1", sets.join(", "));
    let mut q = sqlx::query(&sql)
        .bind(&id)
        .bind(w.status.as_str())
        .bind(w.attempt)
        .bind(&now);
    for b in binds {
        q = q.bind(b);
    }
    q.execute(&mut *conn).await?;
    for (i, entry) in w.logs.iter().enumerate() {
        sqlx::query("INSERT INTO job_logs (job_id, seq, attempt, timestamp, level, message, data) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id)
            .bind(log_seq + 1 + i as i64)
            .bind(w.attempt)
            .bind(ts(&entry.timestamp))
            .bind(entry.level.as_str())
            .bind(&entry.message)
            .bind(to_json(&entry.data)?)
            .execute(&mut *conn)
            .await?;
    }
    if !w.metrics.is_empty() {
        let base: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM job_metrics WHERE job_id = $1")
                .bind(&id)
                .fetch_one(&mut *conn)
                .await?;
        for (i, (name, p)) in w.metrics.iter().enumerate() {
            let at = p.timestamp.unwrap_or_else(gepard_core::time::now);
            sqlx::query("INSERT INTO job_metrics (job_id, seq, attempt, name, value, step, timestamp) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&id)
                .bind(base + 1 + i as i64)
                .bind(w.attempt)
                .bind(name)
                .bind(p.value)
                .bind(p.step)
                .bind(ts(&at))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(Some(workspace_id))
}
