//! The job lifecycle: every change of a job goes through here, whoever asks (the API, a
//! worker, a runtime reporting progress). Each call reads the job, asks the one pure
//! state-machine function ([`gepard_core::job::decide`]) what may happen, writes the result
//! with a compare-and-set, and publishes it to watchers. A lost race re-reads and decides
//! again, so two writers never both win and nobody overwrites a newer state.

use std::sync::Arc;

use gepard_core::job::{decide, JobCommand, JobStatus, Transition, TransitionError};
use gepard_core::model::Job;
use gepard_core::progress::{self, LogEntry, LogLevel, ProgressEvent, ProgressEventType, Reporter};
use uuid::Uuid;

use sqlx::AnyConnection;

use crate::execution::Resume;
use crate::jobs::{write_job_in, JobWrite, LockedJob};
use crate::notify::{JobNotice, Notifier};
use crate::{Store, StoreError};

/// Why a lifecycle call did not apply.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No such job (in that workspace).
    #[error("job {0} not found")]
    NotFound(Uuid),
    /// The state machine refused (the API answers 409).
    #[error(transparent)]
    Illegal(#[from] TransitionError),
    /// A runner's lease token is stale: another worker owns the job now.
    #[error("this runner no longer holds job {0}: its lease was taken over")]
    Fenced(Uuid),
    /// A report about a job that someone else runs (a worker of this deployment, or a
    /// runtime that claimed it with another key): only the holder reports its progress, so
    /// nobody else can forge its result.
    #[error(
        "job {job} is run by {}, which reports its progress itself; reports from anyone \
         else are refused", holder_text(.worker)
    )]
    HeldByWorker {
        /// The job.
        job: Uuid,
        /// The lease owner: a worker's name, or [`runtime_owner`] of a runtime's key.
        worker: String,
    },
    /// The progress event is malformed (the API answers 422).
    #[error("invalid progress event: {}", .0.iter().map(|e| format!("{}: {}", e.loc.join("."), e.msg)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<gepard_core::model::FieldError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many times a call re-reads after losing a compare-and-set race before giving up.
const MAX_RACES: usize = 16;

/// Lease owners of outside runtimes start with this, so they never equal a worker's name.
const RUNTIME_OWNER: &str = "runtime-key:";

/// The lease owner recorded for a job that an outside runtime claimed with API key `key_id`
/// (see [`Store::ingest_runtime_progress`]): the key is the runtime's identity.
pub fn runtime_owner(key_id: Uuid) -> String {
    format!("{RUNTIME_OWNER}{key_id}")
}

/// The job's `max_runtime_sec` if its attempt has run longer than that since it first
/// started. gepard's own workers stop their runner at the limit; an outside runtime's
/// report is the first moment gepard can enforce it.
fn past_runtime_limit(job: &Job) -> Option<u64> {
    let limit = gepard_core::model::max_runtime_sec(&job.config);
    let ran = gepard_core::time::now() - job.started_at?;
    (ran.num_milliseconds() > i64::try_from(limit.saturating_mul(1000)).unwrap_or(i64::MAX))
        .then_some(limit)
}

/// A runtime's report after its run's time limit, turned into the run's end: what it
/// reports is kept (the best result so far stays promotable), and the job fails with the
/// same error as a run gepard's own worker stopped at the limit.
fn ended_by_runtime_limit(event: &ProgressEvent, limit: u64) -> ProgressEvent {
    let error = gepard_core::model::runtime_limit_error(limit);
    let mut ended = event.clone();
    if ended.event_type != ProgressEventType::OptimizationError {
        ended.event_type = ProgressEventType::OptimizationError;
        ended.message = Some(format!(
            "{error}: this {} report came after the limit, so it ends the run",
            event.event_type.as_str()
        ));
        ended.error = Some(error);
        ended.level = LogLevel::Error;
        // Artifacts ride only on terminal events, and this is one now.
    }
    ended
}

/// A lease owner as a person reads it in an error.
fn holder_text(owner: &str) -> String {
    match owner.strip_prefix(RUNTIME_OWNER) {
        Some(key) => format!("the runtime using API key {key}"),
        None => format!("worker `{owner}`"),
    }
}

/// Turns a decided transition into the columns the store writes.
fn write_for(job: &Job, t: &Transition, now: chrono::DateTime<chrono::Utc>) -> JobWrite {
    let mut w = JobWrite::expecting(job);
    w.status = t.to.status;
    w.attempt = i64::from(t.to.attempt);
    let e = &t.effects;
    if e.archive_attempt {
        w.archive_attempt = true;
    }
    if e.clear_evidence {
        w.clear_results();
        w.last_event_at = Some(None);
    }
    if e.clear_run_times {
        w.started_at = Some(None);
        w.completed_at = Some(None);
    }
    // Set only when empty: a run resumed after a lease expiry keeps its first start time.
    if e.set_started_at && job.started_at.is_none() {
        w.started_at = Some(Some(now));
    }
    if e.set_last_event_at {
        w.last_event_at = Some(Some(now));
    }
    // Workers renew their leases explicitly, with their own lease length; a progress event
    // must not stretch or shrink it to some other length.
    w.lease = match e.lease {
        gepard_core::job::LeaseEffect::Renew => gepard_core::job::LeaseEffect::Keep,
        other => other,
    };
    if e.set_completed_at {
        w.completed_at = Some(Some(now));
    }
    if e.set_cancel_requested_at {
        w.cancel_requested_at = Some(Some(now));
    }
    if e.clear_cancel_requested {
        w.cancel_requested_at = Some(None);
    }
    w
}

/// The write a control command makes on `job` as read, or why the state machine refuses it.
fn command_write(
    job: &Job,
    cmd: &JobCommand,
    lease_token: Option<i64>,
    adjust: &impl Fn(&mut JobWrite),
) -> Result<JobWrite, LifecycleError> {
    let t = decide(&state_of(job), cmd)?;
    let now = gepard_core::time::now();
    let mut w = write_for(job, &t, now);
    w.expected_lease_token = lease_token;
    adjust(&mut w);
    if t.to.status.is_terminal() && !t.from.status.is_terminal() {
        w.artifacts = Some(with_pinned_inputs(job, w.artifacts.as_ref()));
    }
    if let Some(message) = command_log(cmd, job, &t) {
        let mut entry = system_log(message, now);
        if let (JobCommand::Claim, Some(owner)) = (cmd, &w.lease_owner) {
            entry.data["runner"] = owner.clone().into();
        }
        w.logs.push(entry);
    }
    Ok(w)
}

fn state_of(job: &Job) -> gepard_core::job::JobState {
    gepard_core::job::JobState {
        status: job.status,
        cancel_requested: job.cancel_requested_at.is_some(),
        attempt: u32::try_from(job.attempt).unwrap_or(u32::MAX),
    }
}

/// A finished job's artifacts name what it ran on (capability, agent, datasets), so they
/// stand on their own next to the promoted versions added later.
fn with_pinned_inputs(job: &Job, artifacts: Option<&serde_json::Value>) -> serde_json::Value {
    let mut merged = artifacts
        .unwrap_or(&job.artifacts)
        .as_object()
        .cloned()
        .unwrap_or_default();
    let c = &job.capability;
    merged.insert(
        "capability".into(),
        serde_json::json!({"name": c.name, "version": c.version, "artifact_id": c.artifact_id, "runtime_digest": c.runtime_digest}),
    );
    merged.insert("agent_name".into(), job.agent_name.clone().into());
    merged.insert("dataset".into(), serde_json::json!(job.dataset_ref));
    merged.insert("val_dataset".into(), serde_json::json!(job.val_dataset_ref));
    serde_json::Value::Object(merged)
}

/// A log line the lifecycle itself writes (e.g. "cancelled while queued").
fn system_log(message: String, now: chrono::DateTime<chrono::Utc>) -> LogEntry {
    LogEntry {
        timestamp: now,
        level: LogLevel::Info,
        message,
        data: serde_json::json!({"source": "gepard"}),
    }
}

/// Announces a committed change of a job with the log entries written after `before_seq`,
/// and returns the job as read for the notice.
pub(crate) async fn publish(
    store: &Store,
    notifier: &dyn Notifier,
    before_seq: i64,
    workspace_id: Uuid,
    job_id: Uuid,
) -> Result<Job, StoreError> {
    let (job, revision) = store
        .job_with_revision(workspace_id, job_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {job_id}")))?;
    // Another writer may have appended in between; watchers drop entries they already sent
    // (by sequence number), so an overlap is harmless.
    let logs = store.job_logs(job_id, before_seq, 10_000).await?;
    notifier.publish(JobNotice {
        job: Arc::new(job.clone()),
        revision,
        logs,
    });
    Ok(job)
}

impl Store {
    /// Applies a control command (cancel, retry, claim, …) to a job of a workspace.
    pub async fn job_command(
        &self,
        notifier: &dyn Notifier,
        workspace_id: Uuid,
        job_id: Uuid,
        cmd: &JobCommand,
    ) -> Result<Job, LifecycleError> {
        match self.job(workspace_id, job_id).await? {
            Some(_) => {
                self.job_command_with(notifier, job_id, cmd, None, |_| {})
                    .await
            }
            None => Err(LifecycleError::NotFound(job_id)),
        }
    }

    /// Decides and writes one command; `lease_token` fences a worker's command, `adjust` adds
    /// what only the caller knows (the claiming worker's name, the lease length).
    pub(crate) async fn job_command_with(
        &self,
        notifier: &dyn Notifier,
        job_id: Uuid,
        cmd: &JobCommand,
        lease_token: Option<i64>,
        adjust: impl Fn(&mut JobWrite),
    ) -> Result<Job, LifecycleError> {
        for _ in 0..MAX_RACES {
            let job = self
                .job_state_by_id(job_id)
                .await?
                .ok_or(LifecycleError::NotFound(job_id))?;
            let w = command_write(&job, cmd, lease_token, &adjust)?;
            let seq = self.log_seq(job_id).await?;
            match self.write_job(job_id, &w).await? {
                Some(ws) => return Ok(publish(self, notifier, seq, ws, job_id).await?),
                None if lease_token.is_some() && self.lease_token(job_id).await? != lease_token => {
                    return Err(LifecycleError::Fenced(job_id));
                }
                None => {}
            }
        }
        Err(too_fast(job_id))
    }

    /// [`Store::job_command_with`] inside the caller's write transaction, for callers that
    /// locked the job's row themselves (the claim, the lease reaper): nothing can change the
    /// job between this read and the write. Returns the job's workspace and its log sequence
    /// before the write (to publish once committed), or `None` when the compare-and-set
    /// failed anyway (a fenced token).
    pub(crate) async fn job_command_in(
        &self,
        conn: &mut AnyConnection,
        job_id: Uuid,
        cmd: &JobCommand,
        lease_token: Option<i64>,
        adjust: impl Fn(&mut JobWrite),
    ) -> Result<Option<(Uuid, i64)>, LifecycleError> {
        let job = Store::job_state_in(conn, job_id)
            .await?
            .ok_or(LifecycleError::NotFound(job_id))?;
        let w = command_write(&job, cmd, lease_token, &adjust)?;
        let seq: i64 = sqlx::query_scalar("SELECT log_seq FROM jobs WHERE id = $1")
            .bind(job_id.to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::from)?;
        Ok(write_job_in(conn, self.backend, job_id, &w)
            .await?
            .map(|workspace_id| (workspace_id, seq)))
    }

    /// Applies one progress event (API `POST …/progress`, or a sandbox's JSON line): appends
    /// its log entry and metric points, patches the summary, merges artifacts on terminal
    /// events, sets the error, moves the state. A terminal job changes nothing (an error).
    /// `lease_token` fences out a stale worker. Without one the report comes from outside (the
    /// API's runner keys) and is refused while a worker holds the job's lease
    /// ([`LifecycleError::HeldByWorker`]).
    pub async fn ingest_progress(
        &self,
        notifier: &dyn Notifier,
        job_id: Uuid,
        event: &ProgressEvent,
        lease_token: Option<i64>,
    ) -> Result<Job, LifecycleError> {
        event.validate().map_err(LifecycleError::Invalid)?;
        self.ingest(notifier, job_id, event, lease_token, None)
            .await
    }

    /// A report from an outside runtime (`POST …/progress` with a `runner` key). The runtime
    /// `owner` ([`runtime_owner`] of its key) claims a queued job with `optimization_start`,
    /// and from then on holds it like a worker: each report renews its lease of `lease`,
    /// reports from anyone else are refused, and when it falls silent the lease reaper queues
    /// the job again (or ends it `cancelled` after a cancel request). A job a worker of this
    /// deployment holds stays refused ([`LifecycleError::HeldByWorker`]).
    ///
    /// Refused with a 409, so that a runtime never writes into a run that is not its own:
    /// another kind of event on a queued job (the runtime lost the job to the queue, or the
    /// job was retried), a second `optimization_start` on the job it holds (a second process
    /// sharing the key), and a report whose `attempt` is not the job's.
    pub async fn ingest_runtime_progress(
        &self,
        notifier: &dyn Notifier,
        job_id: Uuid,
        event: &ProgressEvent,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Job, LifecycleError> {
        // A malformed first report must not claim the job.
        event.validate().map_err(LifecycleError::Invalid)?;
        let lease_length =
            chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(2));
        let starts = event.event_type == ProgressEventType::OptimizationStart;
        let mut claimed = false;
        for _ in 0..MAX_RACES {
            let job = self
                .job_state_by_id(job_id)
                .await?
                .ok_or(LifecycleError::NotFound(job_id))?;
            let refuse = |detail: String| {
                LifecycleError::Illegal(TransitionError {
                    from: job.status,
                    command: "runtime_progress",
                    detail,
                })
            };
            // A finished job refuses every report as finished (in `ingest`), whatever attempt
            // it names.
            if let Some(sent) = event
                .attempt
                .filter(|a| *a != job.attempt && !job.status.is_terminal())
            {
                return Err(refuse(format!(
                    "this report is about attempt {sent}, but job {job_id} is on attempt {}; \
                     a runtime reports only on the attempt it started",
                    job.attempt
                )));
            }
            if job.status.is_waiting() {
                if !starts {
                    return Err(refuse(format!(
                        "job {job_id} is {}: a runtime starts it with `optimization_start`; \
                         a runtime that lost the job (its lease expired, or the job was \
                         retried) must start it over",
                        job.status
                    )));
                }
                // Whoever wins the claim (this runtime, a worker, another runtime) is seen by
                // the next round, which reports or refuses accordingly.
                claimed = self
                    .claim(notifier, Some(job_id), owner, lease, Resume::Never)
                    .await?
                    .is_some();
                continue;
            }
            let (holder, token) = self.lease_holder(job_id).await?;
            let mut report = std::borrow::Cow::Borrowed(event);
            let token = match holder {
                Some(h) if h == owner => {
                    if starts && !claimed && job.status == JobStatus::Running {
                        return Err(refuse(format!(
                            "job {job_id} is already running under this key; \
                             `optimization_start` starts a run once (is a second process \
                             using the same key?)"
                        )));
                    }
                    // The attempt's clock runs from its first start, so a restart of a job
                    // whose time is used up ends it at once.
                    if let Some(limit) = past_runtime_limit(&job) {
                        report = std::borrow::Cow::Owned(ended_by_runtime_limit(event, limit));
                    }
                    // Before the event: a terminal one ends the run, and only a running
                    // attempt takes candidates and usage.
                    if job.status == JobStatus::Running
                        && !self.record_extras(&job, token, event).await?
                    {
                        continue; // lost the job meanwhile: look again
                    }
                    Some(token)
                }
                // Held by someone else, or not running: `ingest` refuses with the reason.
                _ => None,
            };
            match self
                .ingest(notifier, job_id, &report, token, Some(lease_length))
                .await
            {
                // The reaper took the job back between the read and the write: look again
                // (it may be queued, to be claimed anew, or have ended).
                Err(LifecycleError::Fenced(_)) => {}
                other => return other,
            }
        }
        Err(too_fast(job_id))
    }

    /// Records an outside runtime's `candidate` and `usage` for the attempt it holds with
    /// `token`; `false` when it no longer holds it.
    async fn record_extras(
        &self,
        job: &Job,
        token: i64,
        event: &ProgressEvent,
    ) -> Result<bool, StoreError> {
        if let Some(candidate) = &event.candidate {
            let index = candidate
                .get("index")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or_default();
            if !self
                .save_candidate(job.id, job.attempt, token, index, candidate)
                .await?
            {
                return Ok(false);
            }
        }
        match &event.usage {
            Some(usage) => self.set_usage(job.id, token, usage).await,
            None => Ok(true),
        }
    }

    /// [`Store::ingest_progress`]; `renew` is for outside runtimes: their events are
    /// [`Reporter::Runtime`]'s, and each pushes the holder's lease that far ahead with the
    /// same write, since no worker renews it.
    async fn ingest(
        &self,
        notifier: &dyn Notifier,
        job_id: Uuid,
        event: &ProgressEvent,
        lease_token: Option<i64>,
        renew: Option<chrono::Duration>,
    ) -> Result<Job, LifecycleError> {
        // The report patches the summary and artifacts as read, so the read and the write are
        // one transaction holding the job's row: two reports read at once would otherwise
        // both patch the same summary and the later write would drop the earlier's fields.
        // Taking turns also means parallel reports never fail a compare-and-set and retry.
        let mut tx = self.write_tx().await?;
        let written = self
            .ingest_in(&mut tx, job_id, event, lease_token, renew)
            .await;
        match written {
            Ok((workspace_id, seq)) => {
                tx.commit().await.map_err(StoreError::from)?;
                Ok(publish(self, notifier, seq, workspace_id, job_id).await?)
            }
            Err(e) => {
                // At once, rather than when the dropped transaction is next touched: on SQLite
                // the next writer waits for this one's lock. The caller needs the refusal
                // (422, 409, fenced), not a failed rollback, which the drop retries anyway.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(job = %job_id, error = %rollback, "rolling back a refused report failed");
                }
                Err(e)
            }
        }
    }

    /// [`Store::ingest`]'s decision and write inside its transaction, which this locks the
    /// job's row in: the job's workspace and its log sequence before the write.
    async fn ingest_in(
        &self,
        conn: &mut AnyConnection,
        job_id: Uuid,
        event: &ProgressEvent,
        lease_token: Option<i64>,
        renew: Option<chrono::Duration>,
    ) -> Result<(Uuid, i64), LifecycleError> {
        // The callers validated `event` before reading anything (and `progress::apply` checks
        // it again, as a pure function must).
        let reporter = match renew {
            Some(_) => Reporter::Runtime,
            None => Reporter::Runner,
        };
        let LockedJob {
            job,
            lease_owner: holder,
            lease_token: current_token,
            log_seq: seq,
        } = Store::lock_job_in(conn, self.backend, job_id)
            .await?
            .ok_or(LifecycleError::NotFound(job_id))?;
        // Outside runtimes only: gepard's own runner writes a few points per iteration, and a
        // budget the API accepts (up to 1,000,000 metric calls) may take it past the limit,
        // where refusing its reports would lose their log lines and summary.
        let new_points: usize = event.metrics.values().map(Vec::len).sum();
        if new_points > 0 && reporter == Reporter::Runtime {
            let held: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM job_metrics WHERE job_id = $1 AND attempt = $2",
            )
            .bind(job_id.to_string())
            .bind(job.attempt)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::from)?;
            let held = usize::try_from(held).unwrap_or(usize::MAX);
            if held.saturating_add(new_points) > self.max_metric_points {
                return Err(LifecycleError::Invalid(vec![gepard_core::model::FieldError {
                    loc: vec!["body".into(), "metrics".into()],
                    msg: format!(
                        "attempt {} of this job already holds {held} metric points, and an attempt may hold at most {}",
                        job.attempt, self.max_metric_points
                    ),
                    kind: "value_error".into(),
                }]));
            }
        }
        let now = gepard_core::time::now();
        let outcome = progress::apply(
            &state_of(&job),
            &job.summary,
            &job.artifacts,
            event,
            reporter,
            now,
        )
        .map_err(|e| match e {
            progress::ProgressError::Invalid(v) => LifecycleError::Invalid(v),
            progress::ProgressError::Transition(t) => LifecycleError::Illegal(t),
        })?;
        let mut w = write_for(&job, &outcome.transition, now);
        if let (Some(length), gepard_core::job::LeaseEffect::Renew) =
            (renew, outcome.transition.effects.lease)
        {
            w.lease = gepard_core::job::LeaseEffect::Renew;
            w.lease_duration = length;
        }
        w.expected_lease_token = match (lease_token, holder) {
            (Some(token), _) => Some(token),
            (None, Some(worker)) => {
                return Err(LifecycleError::HeldByWorker {
                    job: job_id,
                    worker,
                })
            }
            (None, None) => Some(current_token),
        };
        w.summary = Some(outcome.summary);
        if let Some(a) = outcome.artifacts {
            w.artifacts = Some(a);
        }
        if outcome.transition.to.status.is_terminal() {
            w.artifacts = Some(with_pinned_inputs(&job, w.artifacts.as_ref()));
        }
        if let Some(e) = outcome.error {
            w.error = Some(Some(e));
        }
        w.last_event_at = Some(Some(now));
        w.logs.push(outcome.log);
        w.metrics = outcome.metrics;
        match write_job_in(conn, self.backend, job_id, &w).await? {
            Some(workspace_id) => Ok((workspace_id, seq)),
            // Nothing else could write the locked row: only a stale token fails here.
            None => Err(LifecycleError::Fenced(job_id)),
        }
    }

    /// Appends informational log lines to a job without changing its state (e.g. what the
    /// submission resolved), and publishes them. They are written whatever the job has become
    /// meanwhile: a worker can claim a new job, or a client cancel it, before its submission's
    /// notes land, and those notes (a budget that covers only the seed, a setting stored but
    /// not used) still explain the run.
    pub async fn note_job(
        &self,
        notifier: &dyn Notifier,
        job: &Job,
        notes: &[String],
    ) -> Result<Job, LifecycleError> {
        if notes.is_empty() {
            return Ok(job.clone());
        }
        let now = gepard_core::time::now();
        let mut seen = job.clone();
        for _ in 0..MAX_RACES {
            let mut w = JobWrite::expecting(&seen);
            w.logs = notes.iter().map(|n| system_log(n.clone(), now)).collect();
            let seq = self.log_seq(job.id).await?;
            if let Some(ws) = self.write_job(job.id, &w).await? {
                return Ok(publish(self, notifier, seq, ws, job.id).await?);
            }
            seen = self
                .job_state_by_id(job.id)
                .await?
                .ok_or(LifecycleError::NotFound(job.id))?;
        }
        Err(too_fast(job.id))
    }

    /// The sequence number of the job's last log entry (0 before the first, or for a job that
    /// does not exist); it only grows.
    pub async fn log_seq(&self, job_id: Uuid) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT log_seq FROM jobs WHERE id = $1")
            .bind(job_id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0))
    }

    /// The worker holding `job_id`'s lease (if any) and its current lease token.
    async fn lease_holder(&self, job_id: Uuid) -> Result<(Option<String>, i64), LifecycleError> {
        let row = sqlx::query("SELECT lease_owner, lease_token FROM jobs WHERE id = $1")
            .bind(job_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from)?
            .ok_or(LifecycleError::NotFound(job_id))?;
        Ok((
            crate::rows::opt_text(&row, "lease_owner")?,
            crate::rows::int(&row, "lease_token")?,
        ))
    }

    async fn lease_token(&self, job_id: Uuid) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT lease_token FROM jobs WHERE id = $1")
                .bind(job_id.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// A write that lost its compare-and-set [`MAX_RACES`] times in a row.
fn too_fast(job_id: Uuid) -> LifecycleError {
    StoreError::Conflict(format!("job {job_id} is changing too fast; try again")).into()
}

/// The log line a control command leaves, so the job's log tells its whole story.
fn command_log(cmd: &JobCommand, job: &Job, t: &Transition) -> Option<String> {
    Some(match cmd {
        JobCommand::RequestCancel if t.to.status == JobStatus::Cancelled => {
            "cancelled while queued".to_owned()
        }
        JobCommand::RequestCancel if t.from.cancel_requested => return None,
        JobCommand::RequestCancel => "cancel requested; waiting for the runtime to stop".to_owned(),
        JobCommand::Retry => format!(
            "retry: attempt {} queued (attempt {} was {})",
            t.to.attempt,
            job.attempt,
            job.status.as_str()
        ),
        JobCommand::Claim => "started".to_owned(),
        // The cancel request wins over a requeue (see `job::decide`), so the line must say
        // which of the two happened.
        JobCommand::LeaseExpired if t.to.status == JobStatus::Cancelled => {
            "cancelled: the lease expired after the cancel request (its worker or runtime went \
             silent)"
                .to_owned()
        }
        JobCommand::LeaseExpired => {
            "the lease expired (its worker or runtime went silent: killed, cut off, or lost); the \
             job is queued again"
                .to_owned()
        }
        JobCommand::Release if t.to.status == JobStatus::Cancelled => {
            "cancelled: the worker stopped the runtime after the cancel request".to_owned()
        }
        JobCommand::Release => {
            "the worker gave the job back; it is queued again to resume from its last checkpoint"
                .to_owned()
        }
        JobCommand::RunnerStopped if t.to.status == JobStatus::Cancelled => {
            "cancelled: the runtime stopped".to_owned()
        }
        JobCommand::RunnerStopped => {
            "failed: the runtime stopped without reporting an end".to_owned()
        }
        JobCommand::Progress(_) | JobCommand::RuntimeProgress(_) => return None,
    })
}
