//! The worker: claims jobs, runs each attempt as a sandboxed `run-job` child, applies its
//! output, and keeps the lease alive.
//!
//! One `select!` per running child races its stdout lines against the lease renewal, the
//! cancel check, the hard deadline and the kill escalation (SIGTERM to the child's process
//! group, SIGKILL after a grace period). The child is always reaped. A job's failure — a
//! crash, garbage on stdout, a missing terminal event — fails that job with a message that
//! says so; it never takes the worker down.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use gepard_core::job::{JobCommand, JobStatus};
use gepard_core::model::JobUsage;
use gepard_core::progress::{LogLevel, ProgressEvent, ProgressEventType};
use gepard_store::{Claimed, LifecycleError, Notifier, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::runner::Line;
use crate::spec::{self, Limits};

/// Environment variables a run may see: model credentials and endpoints, nothing else (never
/// the database URL).
pub const PASSTHROUGH_ENV: &[&str] = &[
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEPARD_LOCAL_MODEL_PATH",
    "GEPARD_MODEL_SOURCES",
    "GEPARD_PROVIDERS",
    "PATH",
    "RUST_LOG",
];

/// The attempt a runner's lines belong to: what every write of them is fenced and counted by.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    /// The job.
    id: Uuid,
    /// Its attempt number.
    number: i64,
    /// This worker's lease token.
    token: i64,
    /// Usage the attempt's earlier (crashed) runners recorded.
    earlier: &'a JobUsage,
    /// The attempt's running time before this runner started (up to the checkpoint it
    /// resumes from), and when this runner started: checkpoints record their sum.
    ran_before: Duration,
    started: std::time::Instant,
}

/// Log prefix of a crash notice; counted to bound resumes of a crashing attempt.
const CRASH_NOTICE: &str = "the runner was killed by signal";
/// Resumes of one attempt after crashes before it fails for good.
const MAX_CRASH_RESUMES: i64 = 3;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Name recorded as the lease owner.
    pub name: String,
    /// The program that runs one attempt (the `gepard` binary).
    pub program: PathBuf,
    /// Its arguments (`["run-job"]`).
    pub args: Vec<String>,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// Pause between claims when the queue is empty.
    pub poll: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Resource limits of the child.
    pub limits: Limits,
    /// Directory under which each run gets its own working directory.
    pub work_dir: PathBuf,
    /// The data directory (the local model cache lives there); passed as `GEPARD_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// Most stderr lines copied into the job's log.
    pub stderr_lines: usize,
    /// Extra environment for the child (e.g. a model endpoint), on top of [`PASSTHROUGH_ENV`].
    pub extra_env: Vec<(String, String)>,
}

impl WorkerConfig {
    /// Defaults for a worker running `program run-job`.
    pub fn new(name: impl Into<String>, program: PathBuf, work_dir: PathBuf) -> Self {
        Self {
            name: name.into(),
            program,
            args: vec!["run-job".into()],
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            grace: Duration::from_secs(5),
            limits: Limits::default(),
            work_dir,
            data_dir: None,
            stderr_lines: 200,
            extra_env: Vec::new(),
        }
    }
}

/// One worker.
#[derive(Debug, Clone)]
pub struct Worker {
    store: Store,
    notifier: Arc<dyn Notifier>,
    config: WorkerConfig,
}

/// How one supervised run ended, from the worker's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The runner reported a terminal event.
    Reported,
    /// The runner stopped without one; the job was ended by the worker.
    Stopped,
    /// Another worker owns the job now; nothing was written.
    Fenced,
}

fn signal_group(pid: Option<u32>, sig: nix::sys::signal::Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The child leads its own process group, so this reaches anything it started too.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
    }
}

impl Worker {
    /// A worker over a store; `notifier` announces changes to live watchers.
    pub fn new(store: Store, notifier: Arc<dyn Notifier>, config: WorkerConfig) -> Self {
        Self {
            store,
            notifier,
            config,
        }
    }

    /// Claims and runs jobs until `shutdown`, reaping expired leases between claims.
    pub async fn run(&self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.config.name, "worker started");
        while !shutdown.is_cancelled() {
            if let Err(e) = self.store.reap_expired_leases(self.notifier.as_ref()).await {
                tracing::warn!(error = %e, "reaping expired leases failed");
            }
            match self.run_once(&shutdown).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "claiming a job failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
        tracing::info!(worker = %self.config.name, "worker stopped");
    }

    /// Claims the oldest queued job and runs it to its end; `None` when the queue is empty.
    pub async fn run_once(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Uuid, RunEnd)>, LifecycleError> {
        let Some(claimed) = self
            .store
            .claim_next(self.notifier.as_ref(), &self.config.name, self.config.lease)
            .await?
        else {
            return Ok(None);
        };
        let id = claimed.job.id;
        tracing::info!(
            job = %id,
            attempt = claimed.job.attempt,
            worker = %self.config.name,
            "claimed"
        );
        let end = self.supervise(claimed, shutdown).await;
        // The job's state after the run, so a failure shows in the operator's log with its
        // reason, not only in the job's own log.
        match self.store.job_by_id(id).await {
            // A failed job, or a runner that ended without a word while nobody was stopping it
            // (killed, crashed; not a cancel or a shutdown): what an operator's alerting must
            // see, so at WARN.
            Ok(Some(job))
                if job.status == JobStatus::Failed
                    || (end == RunEnd::Stopped
                        && !shutdown.is_cancelled()
                        && job.status != JobStatus::Cancelled) =>
            {
                // Why: the job's last log entry ("killed by signal 9 …", the error).
                let last = match self.store.log_seq(id).await {
                    Ok(seq) => self.store.job_logs(id, seq - 1, 1).await.ok(),
                    Err(_) => None,
                }
                .and_then(|logs| logs.into_iter().next())
                .map(|l| l.entry.message)
                .unwrap_or_default();
                tracing::warn!(
                    job = %id,
                    end = ?end,
                    status = job.status.as_str(),
                    error = job.error.as_deref().unwrap_or(""),
                    last_log = %last,
                    "run ended abnormally"
                );
            }
            Ok(Some(job)) => tracing::info!(
                job = %id,
                end = ?end,
                status = job.status.as_str(),
                error = job.error.as_deref().unwrap_or(""),
                "run ended"
            ),
            _ => tracing::info!(job = %id, end = ?end, "run ended"),
        }
        Ok(Some((id, end)))
    }

    /// Sends a command on the job the worker holds; a stale token ends the run as fenced.
    async fn command(&self, id: Uuid, token: i64, cmd: JobCommand) -> RunEnd {
        match self
            .store
            .runner_command(self.notifier.as_ref(), id, token, &cmd)
            .await
        {
            Err(LifecycleError::Fenced(_)) => RunEnd::Fenced,
            _ => RunEnd::Stopped,
        }
    }

    /// Puts the job the worker holds back in the queue, with `notice` in its log, so the next
    /// worker resumes it from its checkpoint now rather than when the lease expires.
    async fn requeue(&self, id: Uuid, token: i64, level: LogLevel, notice: String) -> RunEnd {
        let mut e = ProgressEvent::new(ProgressEventType::RuntimeCheckpoint);
        e.level = level;
        e.message = Some(notice);
        let _ = self
            .store
            .ingest_progress(self.notifier.as_ref(), id, &e, Some(token))
            .await;
        self.command(id, token, JobCommand::Release).await
    }

    /// Ends a job the worker holds with `optimization_error` (fenced by its token).
    async fn fail(&self, id: Uuid, token: i64, message: String) -> RunEnd {
        let mut e = ProgressEvent::new(ProgressEventType::OptimizationError);
        e.level = LogLevel::Error;
        e.message = Some(message.clone());
        e.error = Some(message);
        match self
            .store
            .ingest_progress(self.notifier.as_ref(), id, &e, Some(token))
            .await
        {
            Err(LifecycleError::Fenced(_)) => RunEnd::Fenced,
            Err(err) => {
                tracing::warn!(job = %id, error = %err, "could not record the failure");
                RunEnd::Stopped
            }
            Ok(_) => RunEnd::Stopped,
        }
    }

    async fn supervise(&self, claimed: Claimed, shutdown: &CancellationToken) -> RunEnd {
        let Claimed {
            job,
            lease_token: token,
        } = claimed;
        let id = job.id;
        let elapsed = job
            .started_at
            .map(|t| (gepard_core::time::now() - t).to_std().unwrap_or_default())
            .unwrap_or_default();
        let spec = match spec::build(&self.store, &job, self.config.limits, elapsed).await {
            Ok(s) => s,
            Err(e) => {
                return self
                    .fail(id, token, format!("cannot start the run: {e}"))
                    .await
            }
        };
        if spec.resume.is_some() {
            // The crashed runner's metric points after its checkpoint describe work the
            // resumed runner redoes and reports again; without this the series would repeat
            // them.
            match self
                .store
                .rewind_metrics_to_checkpoint(id, job.attempt, token)
                .await
            {
                Ok(true) => {}
                Ok(false) => return RunEnd::Fenced,
                Err(e) => {
                    return self
                        .fail(id, token, format!("cannot prepare the resume: {e}"))
                        .await
                }
            }
        }
        // A runner counts its model calls and tokens from zero; the attempt's earlier runners
        // (crashed, or handed back) spent theirs too, and the job's usage must keep them. The
        // claim kept them also when the attempt starts over, and a new attempt has none.
        let earlier = job.usage.clone();
        let run = Attempt {
            id,
            number: job.attempt,
            token,
            earlier: &earlier,
            ran_before: Duration::from_secs(spec.elapsed_sec),
            started: std::time::Instant::now(),
        };
        let hard_deadline =
            Duration::from_secs(spec.max_runtime_sec.saturating_sub(spec.elapsed_sec))
                + self.config.grace * 2;
        let run_dir = self
            .config
            .work_dir
            .join(id.to_string())
            .join(job.attempt.to_string());
        if let Err(e) = std::fs::create_dir_all(&run_dir) {
            return self
                .fail(id, token, format!("cannot create the run directory: {e}"))
                .await;
        }
        let mut cmd = tokio::process::Command::new(&self.config.program);
        cmd.args(&self.config.args)
            .env_clear()
            .current_dir(&run_dir)
            .env("HOME", &run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for var in PASSTHROUGH_ENV {
            if let Ok(v) = std::env::var(var) {
                cmd.env(var, v);
            }
        }
        if let Some(dir) = &self.config.data_dir {
            cmd.env("GEPARD_DATA_DIR", dir);
        }
        cmd.envs(self.config.extra_env.iter().map(|(k, v)| (k, v)));
        cmd.env(
            crate::runner::SUPERVISOR_PID_ENV,
            std::process::id().to_string(),
        );
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return self
                    .fail(
                        id,
                        token,
                        format!(
                            "cannot start the runner {}: {e}",
                            self.config.program.display()
                        ),
                    )
                    .await
            }
        };
        let pid = child.id();
        let spec_json = serde_json::to_vec(&spec).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A runner that dies before reading its spec shows up below as an early exit.
            let _ = stdin.write_all(&spec_json).await;
        }
        let (line_tx, mut lines) = mpsc::channel::<String>(1024);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if line_tx.send(line).await.is_err() {
                        break;
                    }
                }
            });
        }
        let stderr_task = child.stderr.take().map(|stderr| {
            let (store, notifier, cap) = (
                self.store.clone(),
                Arc::clone(&self.notifier),
                self.config.stderr_lines,
            );
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                let (mut kept, mut tail) = (0usize, Vec::<String>::new());
                while let Ok(Some(line)) = reader.next_line().await {
                    let line: String = line.chars().take(2000).collect();
                    if kept < cap {
                        kept += 1;
                        let mut e = ProgressEvent::new(ProgressEventType::RuntimeCheckpoint);
                        e.level = LogLevel::Warning;
                        e.message = Some(format!("runner stderr: {line}"));
                        // Best effort: stderr is evidence, not state.
                        let _ = store
                            .ingest_progress(notifier.as_ref(), id, &e, Some(token))
                            .await;
                    }
                    tail.push(line);
                    if tail.len() > 20 {
                        tail.remove(0);
                    }
                }
                tail
            })
        });

        let mut renew = tokio::time::interval(self.config.lease / 3);
        let mut cancel_check = tokio::time::interval(Duration::from_millis(250));
        let deadline = tokio::time::sleep(hard_deadline);
        tokio::pin!(deadline);
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut terminal = false;
        let mut fenced = false;
        let mut garbage: Option<String> = None;
        let mut stop_reason: Option<&'static str> = None;
        let status = loop {
            let kill_timer = async {
                match kill_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                line = lines.recv() => match line {
                    Some(line) => {
                        if line.trim().is_empty() {
                            continue;
                        }
                        match serde_json::from_str::<Line>(&line) {
                            Ok(parsed) => match self.apply_patiently(&run, parsed).await {
                                Ok(is_terminal) => terminal |= is_terminal,
                                Err(LifecycleError::Fenced(_)) => {
                                    fenced = true;
                                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                                }
                                Err(LifecycleError::Store(e)) if e.is_transient() => {
                                    // The database stayed away for a whole lease: going on
                                    // would leave holes in the evidence. Stop the runner; the
                                    // job resumes from its last stored checkpoint.
                                    tracing::warn!(job = %id, error = %e, "the database is unavailable; stopping the runner");
                                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                                }
                                Err(e) => tracing::warn!(job = %id, error = %e, "a runner line was not applied"),
                            },
                            Err(e) => {
                                if garbage.is_none() {
                                    let shown: String = line.chars().take(200).collect();
                                    garbage = Some(format!("the runner printed output that is not a progress event ({e}): {shown}"));
                                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                                }
                            }
                        }
                    }
                    None => {
                        // stdout closed: the runner is exiting.
                        break child.wait().await;
                    }
                },
                _ = renew.tick() => {
                    match self.store.renew_lease(id, token, self.config.lease).await {
                        Ok(true) => {}
                        Ok(false) if terminal => {}
                        Ok(false) => {
                            fenced = true;
                            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                        }
                        Err(e) => tracing::warn!(job = %id, error = %e, "lease renewal failed"),
                    }
                }
                _ = cancel_check.tick(), if kill_at.is_none() => {
                    let cancel = self.store.cancel_requested(id).await.unwrap_or(false);
                    if cancel || shutdown.is_cancelled() {
                        stop_reason = Some(if cancel { "cancel" } else { "shutdown" });
                        signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                        kill_at = Some(tokio::time::Instant::now() + self.config.grace);
                    }
                }
                () = kill_timer => {
                    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    kill_at = None;
                }
                () = &mut deadline, if stop_reason.is_none() => {
                    stop_reason = Some("deadline");
                    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + self.config.grace);
                }
            }
        };
        // Drain what the runner wrote before exiting.
        while let Ok(line) = lines.try_recv() {
            if let Ok(parsed) = serde_json::from_str::<Line>(&line) {
                if let Ok(t) = self.apply_patiently(&run, parsed).await {
                    terminal |= t;
                }
            }
        }
        let tail = match stderr_task {
            Some(t) => t.await.unwrap_or_default(),
            None => Vec::new(),
        };
        if fenced {
            return RunEnd::Fenced;
        }
        if let Some(message) = garbage {
            return self.fail(id, token, message).await;
        }
        if terminal {
            return RunEnd::Reported;
        }
        match stop_reason {
            Some("shutdown") => {
                // The worker is going away: give the job back now, so another worker (or this
                // one after a restart) resumes it from its checkpoint at once instead of after
                // the lease expires. Should the release fail, the lease still expires.
                let notice = format!("worker {} is shutting down", self.config.name);
                return self.requeue(id, token, LogLevel::Info, notice).await;
            }
            Some("deadline") => {
                let max = spec.max_runtime_sec;
                return self
                    .fail(id, token, gepard_core::model::runtime_limit_error(max))
                    .await;
            }
            _ => {}
        }
        if self.store.cancel_requested(id).await.unwrap_or(false) {
            return self.command(id, token, JobCommand::RunnerStopped).await;
        }
        // Killed by a signal we did not send (OOM killer, kill -9): a crash, not a verdict on
        // the job. Put it back in the queue to resume from its checkpoint, a few times at most.
        let signal = status
            .as_ref()
            .ok()
            .and_then(std::os::unix::process::ExitStatusExt::signal);
        if let Some(sig) = signal {
            // Unknown (the count failed): not resumed again, and the failure below says how
            // the runner ended rather than naming a count.
            let crashes = self
                .store
                .count_logs_starting_with(id, job.attempt, CRASH_NOTICE)
                .await
                .ok();
            match crashes {
                Some(n) if n < MAX_CRASH_RESUMES => {
                    let notice = format!("{CRASH_NOTICE} {sig}");
                    return self.requeue(id, token, LogLevel::Warning, notice).await;
                }
                Some(crashes) => {
                    let message = format!(
                        "the runner was killed by signal {sig} again, after {crashes} restarts \
                         of this attempt (the most a crashing attempt gets); retry the job to \
                         run it once more"
                    );
                    return self.fail(id, token, message).await;
                }
                None => {}
            }
        }
        let how = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        let last = tail
            .last()
            .map(|l| format!("; last stderr line: {l}"))
            .unwrap_or_default();
        self.fail(
            id,
            token,
            format!("the runner exited ({how}) without reporting an end{last}"),
        )
        .await
    }

    /// [`Self::apply`], retried while the database is momentarily unavailable (busy, locked,
    /// restarting, refusing connections), with backoff, for up to one lease. A line is
    /// evidence: dropping it on a blip would leave a hole in the logs, metrics or candidates.
    /// The runner meanwhile blocks on its full stdout pipe, which is the backpressure wanted.
    async fn apply_patiently(&self, run: &Attempt<'_>, line: Line) -> Result<bool, LifecycleError> {
        let give_up = tokio::time::Instant::now() + self.config.lease;
        let mut wait = Duration::from_millis(100);
        loop {
            match self.apply(run, line.clone()).await {
                Err(LifecycleError::Store(e))
                    if e.is_transient() && tokio::time::Instant::now() + wait < give_up =>
                {
                    tracing::debug!(job = %run.id, error = %e, "the database is busy; applying the line again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// Applies one runner line; `Ok(true)` for a terminal progress event.
    async fn apply(&self, run: &Attempt<'_>, line: Line) -> Result<bool, LifecycleError> {
        let Attempt {
            id,
            number: attempt,
            token,
            earlier,
            ran_before,
            started,
        } = *run;
        let fenced = |ok: bool| {
            if ok {
                Ok(false)
            } else {
                Err(LifecycleError::Fenced(id))
            }
        };
        match line {
            Line::Progress { event } => {
                let terminal = event.event_type.is_terminal();
                self.store
                    .ingest_progress(self.notifier.as_ref(), id, &event, Some(token))
                    .await?;
                Ok(terminal)
            }
            Line::Checkpoint {
                iteration,
                checkpoint,
            } => fenced(
                self.store
                    .save_checkpoint(
                        id,
                        attempt,
                        token,
                        i64::try_from(iteration).unwrap_or(i64::MAX),
                        ran_before + started.elapsed(),
                        &checkpoint,
                    )
                    .await?,
            ),
            Line::Candidate { candidate } => {
                let index = candidate
                    .get("index")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(-1);
                fenced(
                    self.store
                        .save_candidate(id, attempt, token, index, &candidate)
                        .await?,
                )
            }
            Line::Usage { usage } => fenced(
                self.store
                    .set_usage(id, token, &usage.on_top_of(earlier))
                    .await?,
            ),
        }
    }
}
