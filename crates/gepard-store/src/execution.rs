//! What workers need from the store: claiming the oldest queued job under a lease, renewing
//! it, returning jobs whose lease expired to the queue, and keeping the engine checkpoint and
//! usage of a running attempt. Every write a worker makes is fenced by its lease token: once
//! another worker has taken the job over, the old one's writes change nothing.

use std::time::Duration;

use gepard_core::job::{JobCommand, JobStatus};
use gepard_core::model::{Job, JobUsage};
use gepard_core::progress::{LogEntry, LogLevel};
use sqlx::Row;
use uuid::Uuid;

use crate::jobs::from_json;
use crate::lifecycle::{publish, LifecycleError};
use crate::notify::Notifier;
use crate::rows::{int, json, now_text, text};
use crate::{Result, Store, StoreError, WriteTx};

/// A job a worker has claimed, with the fencing token its writes must carry.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, now `running`.
    pub job: Job,
    /// The lease token; writes with an older token are refused.
    pub lease_token: i64,
}

/// The engine checkpoint of an attempt.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// The iteration it was taken after.
    pub iteration: i64,
    /// The serialized checkpoint.
    pub data: String,
    /// The attempt's running time when it was taken, summed over its runners (`None` for
    /// checkpoints written before this was recorded).
    pub run_time: Option<Duration>,
}

/// What a new runner of an attempt that an earlier runner started can do with that work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Resume from the attempt's checkpoint when there is one (gepard's own workers).
    FromCheckpoint,
    /// Start over whatever was saved: an outside runtime cannot read gepard's checkpoints.
    Never,
}

/// After metric points of a job were deleted: the points written next may take the deleted
/// sequence numbers, so a new epoch tells every store that remembered the old series to read
/// it afresh (see `series`).
async fn new_metrics_epoch(tx: &mut WriteTx, job_id: Uuid) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET metrics_epoch = metrics_epoch + 1, revision = revision + 1 WHERE id = $1",
    )
    .bind(job_id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::seconds(30))
}

impl Store {
    /// Claims the oldest queued job for `owner` with a lease of `lease`, or `None` when the
    /// queue is empty. Many workers claiming at once each get a different job, and every job
    /// goes to exactly one of them.
    pub async fn claim_next(
        &self,
        notifier: &dyn Notifier,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, LifecycleError> {
        self.claim(notifier, None, owner, lease, Resume::FromCheckpoint)
            .await
    }

    /// Claims queued job `only` (or, with `None`, the oldest queued job) for `owner`; `None`
    /// when there is no such queued job, or when another claimer holds its row right now.
    pub(crate) async fn claim(
        &self,
        notifier: &dyn Notifier,
        only: Option<Uuid>,
        owner: &str,
        lease: Duration,
        resume: Resume,
    ) -> Result<Option<Claimed>, LifecycleError> {
        let mut tx = self.write_tx().await?;
        // SQLite: `BEGIN IMMEDIATE` already made this the only writer, so the oldest job is
        // ours. PostgreSQL: the row is locked until commit, and jobs other claimers hold at
        // this moment are skipped rather than waited for (or claimed twice). One named job
        // is waited for instead: the other claimer's outcome is then read, not guessed at.
        let (only_clause, lock) = match only {
            Some(_) => (" AND id = $1", self.backend.for_update()),
            None => ("", self.backend.for_update_skip_locked()),
        };
        let sql = format!(
            "SELECT id FROM jobs WHERE status IN ('queued', 'pending'){only_clause} ORDER BY created_at, id LIMIT 1{lock}"
        );
        let mut select = sqlx::query_scalar::<_, String>(&sql);
        if let Some(id) = only {
            select = select.bind(id.to_string());
        }
        let Some(id) = select
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?
        else {
            return Ok(None);
        };
        let id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let over = self.starts_over(&mut tx, id, resume).await?;
        // The lost runner's model calls and tokens were paid for, and a restarted run does not
        // make them undone: the attempt's usage keeps them (its budget, metric_calls, restarts
        // with the run). An outside runtime reports its own totals, which replace these.
        let paid = match (over, resume) {
            (true, Resume::FromCheckpoint) => {
                let row = sqlx::query("SELECT usage FROM jobs WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                let usage: JobUsage = from_json(json(&row, "usage")?, "usage")?;
                JobUsage {
                    metric_calls: 0,
                    ..usage
                }
            }
            _ => JobUsage::default(),
        };
        // Taken before the claim's own log line is stamped, which follows this one.
        let now = gepard_core::time::now();
        let written = self
            .job_command_in(&mut tx, id, &JobCommand::Claim, None, |w| {
                w.lease_owner = Some(owner.to_owned());
                w.lease_duration = chrono_duration(lease);
                if over {
                    w.clear_results();
                    w.usage = Some(paid.clone());
                    let why = match resume {
                        Resume::FromCheckpoint => "the earlier runner left no checkpoint to resume from",
                        Resume::Never => "an outside runtime runs it from the beginning",
                    };
                    w.logs.push(LogEntry {
                        timestamp: now,
                        level: LogLevel::Warning,
                        message: format!(
                            "this attempt starts over ({why}), so the earlier runner's results are cleared"
                        ),
                        data: serde_json::json!({"source": "gepard"}),
                    });
                }
            })
            .await?;
        let Some((workspace_id, seq)) = written else {
            // Unreachable while the row is locked and unfenced; never claim on a guess.
            return Err(
                StoreError::Conflict(format!("job {id} changed while being claimed")).into(),
            );
        };
        let token: i64 = sqlx::query_scalar("SELECT lease_token FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        let job = publish(self, notifier, seq, workspace_id, id).await?;
        Ok(Some(Claimed {
            job,
            lease_token: token,
        }))
    }

    /// Whether claiming job `id` starts its attempt over: an earlier runner started this
    /// attempt (and may have reported results) and the new one cannot resume from its
    /// checkpoint. Then the attempt's metric points, candidates and checkpoint are deleted
    /// here, in the claim's transaction, and the caller clears its summary; otherwise the new
    /// run's series would repeat the lost run's points and its summary would show a result
    /// this run never reached.
    async fn starts_over(&self, tx: &mut WriteTx, id: Uuid, resume: Resume) -> Result<bool> {
        let row = sqlx::query("SELECT started_at, attempt FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&mut **tx)
            .await?;
        let started: Option<String> = row.try_get("started_at")?;
        if started.is_none() {
            return Ok(false);
        }
        let attempt = int(&row, "attempt")?;
        if resume == Resume::FromCheckpoint {
            let checkpointed: Option<i64> = sqlx::query_scalar(
                "SELECT attempt FROM job_checkpoints WHERE job_id = $1 AND attempt = $2",
            )
            .bind(id.to_string())
            .bind(attempt)
            .fetch_optional(&mut **tx)
            .await?;
            if checkpointed.is_some() {
                return Ok(false);
            }
        }
        for table in ["job_metrics", "job_candidates", "job_checkpoints"] {
            // A table name of ours, not client text: safe to inline.
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE job_id = $1 AND attempt = $2"
            ))
            .bind(id.to_string())
            .bind(attempt)
            .execute(&mut **tx)
            .await?;
        }
        new_metrics_epoch(tx, id).await?;
        Ok(true)
    }

    /// Pushes the lease forward; `false` when the worker no longer holds the job (fenced, or
    /// the job is not running any more).
    pub async fn renew_lease(&self, job_id: Uuid, token: i64, lease: Duration) -> Result<bool> {
        let expires =
            gepard_core::time::format(&(gepard_core::time::now() + chrono_duration(lease)));
        let done = sqlx::query("UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND lease_token = $3 AND status = 'running'")
            .bind(expires)
            .bind(job_id.to_string())
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Running jobs whose lease has expired go back to the queue (or end `cancelled` when a
    /// cancel was requested), so another worker resumes them from their checkpoint. Several
    /// reapers (one per worker process) may run at once: each expired job is reaped once.
    pub async fn reap_expired_leases(
        &self,
        notifier: &dyn Notifier,
    ) -> Result<Vec<Uuid>, LifecycleError> {
        const EXPIRED: &str = "SELECT id, lease_token FROM jobs WHERE status = 'running' \
             AND lease_expires_at IS NOT NULL AND lease_expires_at < $1 ORDER BY id";
        let now = now_text();
        // A plain read first: reapers run often and nearly always find nothing, and on SQLite
        // a write transaction would take the database's one write lock just to look.
        let any = sqlx::query(EXPIRED)
            .bind(&now)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from)?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        // PostgreSQL: a job another reaper (or a renewing worker) holds is left to it.
        let rows = sqlx::query(&format!(
            "{EXPIRED}{}",
            self.backend.for_update_skip_locked()
        ))
        .bind(&now)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let mut reaped = Vec::new();
        for row in rows {
            let id = Uuid::parse_str(&text(&row, "id")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let token = int(&row, "lease_token")?;
            // A renewal keeps the token, so the token does not protect a renewing worker here:
            // the row lock does. From the select above to the commit no renewal can land
            // (PostgreSQL re-checks the expiry of a row renewed before the lock was taken, and
            // SQLite's write transaction excludes every other writer).
            match self
                .job_command_in(&mut tx, id, &JobCommand::LeaseExpired, Some(token), |_| {})
                .await
            {
                Ok(Some((workspace_id, seq))) => reaped.push((id, workspace_id, seq)),
                Ok(None)
                | Err(
                    LifecycleError::Illegal(_)
                    | LifecycleError::Fenced(_)
                    | LifecycleError::NotFound(_),
                ) => {}
                Err(e) => return Err(e),
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        let mut ids = Vec::with_capacity(reaped.len());
        for (id, workspace_id, seq) in reaped {
            // Its holder went silent (a killed worker, a lost runtime): an operator's log
            // must show it, not only the job's.
            tracing::warn!(job = %id, "the lease of the job's holder expired; the job is back in the queue (or cancelled, if a cancel was requested)");
            publish(self, notifier, seq, workspace_id, id).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// A worker's command on the job it holds (e.g. `RunnerStopped`), fenced by its token.
    pub async fn runner_command(
        &self,
        notifier: &dyn Notifier,
        job_id: Uuid,
        token: i64,
        cmd: &JobCommand,
    ) -> Result<Job, LifecycleError> {
        self.job_command_with(notifier, job_id, cmd, Some(token), |_| {})
            .await
    }

    /// Stores the checkpoint of the running attempt (replacing the previous one) with the
    /// attempt's running time so far; `false` when the worker's token is stale.
    pub async fn save_checkpoint(
        &self,
        job_id: Uuid,
        attempt: i64,
        token: i64,
        iteration: i64,
        run_time: Duration,
        data: &str,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if !self.holds_attempt(&mut tx, job_id, attempt, token).await? {
            return Ok(false);
        }
        sqlx::query("DELETE FROM job_checkpoints WHERE job_id = $1 AND attempt = $2")
            .bind(job_id.to_string())
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
        // The runner writes an iteration's metric points before its checkpoint, so the
        // highest seq now is exactly where this checkpoint's timeline ends.
        sqlx::query(
            "INSERT INTO job_checkpoints (job_id, attempt, iteration, data, created_at, run_ms, metrics_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, (SELECT COALESCE(MAX(seq), 0) FROM job_metrics WHERE job_id = $1))",
        )
        .bind(job_id.to_string())
        .bind(attempt)
        .bind(iteration)
        .bind(data)
        .bind(now_text())
        .bind(i64::try_from(run_time.as_millis()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether `token` still holds the running `attempt` of the job, inside `tx`.
    async fn holds_attempt(
        &self,
        tx: &mut WriteTx,
        job_id: Uuid,
        attempt: i64,
        token: i64,
    ) -> Result<bool> {
        let held: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT lease_token FROM jobs WHERE id = $1 AND status = 'running' AND attempt = $2{}",
            // A takeover between this check and the write must wait, or a stale worker's
            // write lands after the new owner's.
            self.backend.for_update()
        ))
        .bind(job_id.to_string())
        .bind(attempt)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(held == Some(token))
    }

    /// Before a resume: drops the metric points of the running attempt written after its
    /// checkpoint (a crashed runner's lost work, which the resumed run redoes and reports
    /// again). `false` when `token` no longer holds the job, and then nothing changes.
    pub async fn rewind_metrics_to_checkpoint(
        &self,
        job_id: Uuid,
        attempt: i64,
        token: i64,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if !self.holds_attempt(&mut tx, job_id, attempt, token).await? {
            return Ok(false);
        }
        sqlx::query(
            "DELETE FROM job_metrics WHERE job_id = $1 AND attempt = $2 AND seq > \
             (SELECT metrics_seq FROM job_checkpoints WHERE job_id = $1 AND attempt = $2)",
        )
        .bind(job_id.to_string())
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        // Candidates found after the checkpoint (stored just before a checkpoint that never
        // followed) are found again by the resumed run, with a model that need not answer the
        // same: theirs must not stand in for its.
        let checkpointed: Option<i64> = sqlx::query_scalar(
            "SELECT iteration FROM job_checkpoints WHERE job_id = $1 AND attempt = $2",
        )
        .bind(job_id.to_string())
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(iteration) = checkpointed {
            let rows = sqlx::query(
                "SELECT idx, data FROM job_candidates WHERE job_id = $1 AND attempt = $2",
            )
            .bind(job_id.to_string())
            .bind(attempt)
            .fetch_all(&mut *tx)
            .await?;
            let mut later = Vec::new();
            for row in &rows {
                let found_at = serde_json::from_str::<serde_json::Value>(&text(row, "data")?)
                    .ok()
                    .and_then(|d| d["iteration"].as_i64());
                if found_at.is_some_and(|found| found > iteration) {
                    later.push(int(row, "idx")?.to_string());
                }
            }
            if !later.is_empty() {
                // Indexes read from the table as integers, not client text: safe to inline.
                sqlx::query(&format!(
                    "DELETE FROM job_candidates WHERE job_id = $1 AND attempt = $2 AND idx IN ({})",
                    later.join(", ")
                ))
                .bind(job_id.to_string())
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
            }
        }
        new_metrics_epoch(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The latest checkpoint of an attempt, if any.
    pub async fn checkpoint(&self, job_id: Uuid, attempt: i64) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT iteration, data, run_ms FROM job_checkpoints WHERE job_id = $1 AND attempt = $2",
        )
        .bind(job_id.to_string())
        .bind(attempt)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredCheckpoint {
                iteration: int(&r, "iteration")?,
                data: text(&r, "data")?,
                run_time: r
                    .try_get::<Option<i64>, _>("run_ms")?
                    .map(|ms| Duration::from_millis(ms.unsigned_abs())),
            })
        })
        .transpose()
    }

    /// Records what the running attempt has consumed so far; `false` when fenced.
    pub async fn set_usage(&self, job_id: Uuid, token: i64, usage: &JobUsage) -> Result<bool> {
        let json = serde_json::to_string(usage).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE jobs SET usage = $1, revision = revision + 1 WHERE id = $2 AND lease_token = $3 AND status = $4",
        )
        .bind(json)
        .bind(job_id.to_string())
        .bind(token)
        .bind(JobStatus::Running.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether a cancel has been requested for the job (workers poll this while running).
    pub async fn cancel_requested(&self, job_id: Uuid) -> Result<bool> {
        let v: Option<Option<String>> =
            sqlx::query_scalar("SELECT cancel_requested_at FROM jobs WHERE id = $1")
                .bind(job_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(matches!(v, Some(Some(_))))
    }
}

impl Store {
    /// Stores a candidate of the running attempt (idempotent per index); `false` when fenced.
    pub async fn save_candidate(
        &self,
        job_id: Uuid,
        attempt: i64,
        token: i64,
        index: i64,
        data: &serde_json::Value,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let held: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT lease_token FROM jobs WHERE id = $1 AND status = 'running' AND attempt = $2{}",
            // A takeover between this check and the write must wait, or a stale worker's
            // write lands after the new owner's.
            self.backend.for_update()
        ))
        .bind(job_id.to_string())
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        if held != Some(token) {
            return Ok(false);
        }
        // A resumed run re-reports candidates it already had: keep the first record.
        let inserted = sqlx::query("INSERT INTO job_candidates (job_id, attempt, idx, data) VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, attempt, idx) DO NOTHING")
            .bind(job_id.to_string())
            .bind(attempt)
            .bind(index)
            .bind(data.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            // The same candidate again is fine; another text under its number would be
            // dropped silently, and the lineage would show what the run never had.
            let stored: String = sqlx::query_scalar(
                "SELECT data FROM job_candidates WHERE job_id = $1 AND attempt = $2 AND idx = $3",
            )
            .bind(job_id.to_string())
            .bind(attempt)
            .bind(index)
            .fetch_one(&mut *tx)
            .await?;
            let stored: serde_json::Value = serde_json::from_str(&stored)
                .map_err(|e| StoreError::Corrupt(format!("candidate {index}: {e}")))?;
            if stored.get("instructions") != data.get("instructions") {
                return Err(StoreError::Conflict(format!(
                    "candidate {index} of attempt {attempt} was already reported with other \
                     instructions; candidates are numbered as found, one text each"
                )));
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Candidates of a job's current attempt, by index, exactly one of them (the job's
    /// current best, see [`mark_best`]) with `best: true`.
    pub async fn candidates(&self, job_id: Uuid, attempt: i64) -> Result<Vec<serde_json::Value>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM job_candidates WHERE job_id = $1 AND attempt = $2 ORDER BY idx",
        )
        .bind(job_id.to_string())
        .bind(attempt)
        .fetch_all(&self.pool)
        .await?;
        let mut items = rows
            .iter()
            .map(|s| {
                serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("candidate: {e}")))
            })
            .collect::<Result<Vec<serde_json::Value>>>()?;
        mark_best(&mut items);
        Ok(items)
    }
}

/// Sets `best` on candidates given in index order: `true` on exactly one, the one with the
/// highest `val_score` (the lower index on ties), `false` on every other.
///
/// That is how the engine picks its best (a candidate replaces the best only when its
/// validation mean is strictly higher), so over the candidates recorded so far it is the
/// job's current best, and over all of them the run's final one. It is derived on every read
/// because a flag stored with a candidate cannot say it: it is right only when written (an
/// earlier best keeps `true` after a better candidate arrives) and records are never
/// rewritten (a resumed run's re-reports are ignored). Candidates without a score are never
/// best; with no scores at all, none is.
pub(crate) fn mark_best(items: &mut [serde_json::Value]) {
    let mut best: Option<(usize, f64)> = None;
    for (i, item) in items.iter().enumerate() {
        if let Some(score) = item["val_score"].as_f64() {
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
    }
    for (i, item) in items.iter_mut().enumerate() {
        if let Some(record) = item.as_object_mut() {
            record.insert(
                "best".into(),
                serde_json::Value::Bool(best.is_some_and(|(b, _)| b == i)),
            );
        }
    }
}

impl Store {
    /// How many log entries of the job's current attempt start with `prefix` (e.g. crash
    /// notices, to bound how often a crashing attempt is resumed).
    pub async fn count_logs_starting_with(
        &self,
        job_id: Uuid,
        attempt: i64,
        prefix: &str,
    ) -> Result<i64> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        // LOWER on both sides: SQLite's LIKE ignores ASCII case and PostgreSQL's does not; this
        // keeps the answer the same on both.
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM job_logs WHERE job_id = $1 AND attempt = $2 AND LOWER(message) LIKE LOWER($3) ESCAPE '\\'")
            .bind(job_id.to_string())
            .bind(attempt)
            .bind(pattern)
            .fetch_one(&self.pool)
            .await?)
    }
}
