//! The job state machine: the one pure function that decides every job transition.
//!
//! The API (cancel, retry, progress), the workers (claim, progress, runner exit, lease expiry)
//! and both stores call [`decide`] and then write what the returned [`Transition`] says. Keeping
//! the rules in one place is what stops the HTTP handler, the worker and the SQL from disagreeing
//! about, say, whether a cancelled job may still receive progress. Illegal transitions are
//! [`TransitionError`]s (409 at the API), never silent no-ops.
//!
//! Lifecycle: `queued → running → completed | failed | cancelled`, plus `retry` (terminal →
//! `queued`, attempt + 1) and lease expiry (`running → queued`, same attempt, resume from the last
//! checkpoint).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting, as written by older clients. gepard itself never creates it; it exists so that
    /// records and filters from the Dreadnode API parse. It behaves exactly like `queued`.
    Pending,
    /// Waiting for a worker. Every new job starts here.
    Queued,
    /// A worker holds the job's lease and its runner is working.
    Running,
    /// The run reported `optimization_end`.
    Completed,
    /// The run reported `optimization_error`, or its runner stopped without a terminal event.
    Failed,
    /// Cancelled by a person: at once when waiting, after the runner stopped when running.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        Self::Pending,
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The status as stored and served (`queued`, `running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job is finished (`completed`, `failed` or `cancelled`): nothing but a retry
    /// moves it again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// Whether the job waits for a worker (`queued`, or the legacy `pending`).
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Pending | Self::Queued)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a job status (e.g. a bad `?status=` filter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown job status `{0}`; expected one of pending, queued, running, completed, failed, cancelled"
)]
pub struct UnknownJobStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownJobStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownJobStatus(s.to_owned()))
    }
}

/// The part of a job record that the state machine reads and writes.
///
/// A store builds it from a row: `cancel_requested` is `cancel_requested_at IS NOT NULL`. That
/// is why it can stay `true` on a terminal job (the record keeps when a cancel was asked); it is
/// never `true` on a waiting job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobState {
    /// Lifecycle status.
    pub status: JobStatus,
    /// Whether someone asked to cancel this attempt.
    pub cancel_requested: bool,
    /// 1-based attempt number; grows by one on each retry and on nothing else.
    pub attempt: u32,
}

impl JobState {
    /// The state of a freshly submitted job: `queued`, attempt 1.
    pub fn new_job() -> Self {
        Self {
            status: JobStatus::Queued,
            cancel_requested: false,
            attempt: 1,
        }
    }
}

/// What a progress event does to the lifecycle (see `progress::ProgressEventType::kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressKind {
    /// Any non-terminal event (`iteration_start`, `runtime_checkpoint`, …): the job stays
    /// running.
    Update,
    /// `optimization_end`: the job is `completed`.
    End,
    /// `optimization_error`: the job is `failed`.
    Error,
}

/// Every way a job can change. One variant per caller intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobCommand {
    /// A worker takes a waiting job (`queued → running`).
    Claim,
    /// A person asks to cancel (`POST …/cancel`).
    RequestCancel,
    /// A person asks to run a finished job again (`POST …/retry`).
    Retry,
    /// gepard's own runner reported a progress event (a sandbox JSON line, through its worker).
    Progress(ProgressKind),
    /// An outside runtime reported a progress event (`POST …/progress` with a `runner` key).
    /// As [`Self::Progress`], except that a terminal event after a cancel request ends the job
    /// `cancelled`: such a runtime has no other way to say it stopped as asked, and gepard
    /// cannot tell that from a run that happened to end at that moment.
    RuntimeProgress(ProgressKind),
    /// The runner exited without a terminal event (killed after a cancel, crashed, hit
    /// `max_runtime_sec`).
    RunnerStopped,
    /// The worker holding the job stopped renewing its lease (worker or host died).
    LeaseExpired,
    /// The worker holding the job gives it back while it is still alive (it is shutting down,
    /// or the runner was killed by a signal it did not send), so the next worker resumes it now
    /// instead of after the lease expires. Same transition as [`Self::LeaseExpired`]; a
    /// separate command so the job's log says what happened.
    Release,
}

impl JobCommand {
    /// Short snake-case name, for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::RequestCancel => "cancel",
            Self::Retry => "retry",
            Self::Progress(ProgressKind::Update) => "progress",
            Self::Progress(ProgressKind::End) => "progress_end",
            Self::Progress(ProgressKind::Error) => "progress_error",
            Self::RuntimeProgress(ProgressKind::Update) => "runtime_progress",
            Self::RuntimeProgress(ProgressKind::End) => "runtime_progress_end",
            Self::RuntimeProgress(ProgressKind::Error) => "runtime_progress_error",
            Self::RunnerStopped => "runner_stopped",
            Self::LeaseExpired => "lease_expired",
            Self::Release => "release",
        }
    }
}

impl fmt::Display for JobCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to the worker's lease on the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LeaseEffect {
    /// Leave the lease columns as they are.
    #[default]
    Keep,
    /// Grant a new lease and a fresh fencing token to the claiming worker.
    Acquire,
    /// Push the lease expiry forward (the runner is alive: it just reported progress).
    Renew,
    /// Drop the lease and token: the job is no longer running on anyone.
    Release,
}

/// What a store must write besides the new [`JobState`].
///
/// Each flag is one column-level action, so the SQLite and PostgreSQL stores can apply a
/// transition the same way without re-deriving the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Effects {
    /// Set `started_at = now` **only if it is null**: a run resumed after a lease expiry keeps
    /// the time it first started.
    pub set_started_at: bool,
    /// Set `completed_at = now` (the job just became terminal).
    pub set_completed_at: bool,
    /// Set `cancel_requested_at = now` (first cancel request of this attempt only; a repeated
    /// request keeps the first time).
    pub set_cancel_requested_at: bool,
    /// Set `cancel_requested_at = null` (retry: the new attempt was not asked to stop).
    pub clear_cancel_requested: bool,
    /// Set `started_at` and `completed_at` to null (retry: those times belong to the archived
    /// attempt, and the new one has not started).
    pub clear_run_times: bool,
    /// Clear the attempt's evidence: everything listed in [`EVIDENCE_CLEARED_ON_RETRY`]. Logs
    /// are **not** evidence and are kept (see that constant).
    pub clear_evidence: bool,
    /// Before clearing, copy the finished attempt (number, status, times, error, summary,
    /// usage) into the job's attempt history, so earlier attempts stay visible.
    pub archive_attempt: bool,
    /// Set `last_event_at = now` (a progress event arrived).
    pub set_last_event_at: bool,
    /// What happens to the lease.
    pub lease: LeaseEffect,
}

/// What `clear_evidence` clears, by job-record field (plus stored candidates and checkpoints).
///
/// - `metrics`, `summary`, `artifacts`, `error`: the record fields the API shows; a new attempt
///   must not display the old attempt's results as its own.
/// - `candidates`: the `GET …/candidates` rows of the old attempt.
/// - `checkpoints`: otherwise the new attempt would *resume* the old run instead of starting
///   over, which is the opposite of what a retry asks for.
/// - `usage`: counters are per attempt; the archived attempt keeps its own.
///
/// Logs are deliberately kept: they are the job's append-only audit trail (the retry itself is
/// worth a log line), and `GET …/logs?after=<seq>` and SSE `Last-Event-ID` cursors are sequence
/// numbers that would break if entries vanished.
pub const EVIDENCE_CLEARED_ON_RETRY: &[&str] = &[
    "metrics",
    "summary",
    "artifacts",
    "error",
    "candidates",
    "checkpoints",
    "usage",
];

/// A decided transition: the state before, the state after and the side effects to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The state the decision was made from (stores use it for a compare-and-set update).
    pub from: JobState,
    /// The state to write.
    pub to: JobState,
    /// What else to write.
    pub effects: Effects,
}

impl Transition {
    /// Whether applying the transition writes anything at all (a repeated cancel request does
    /// not).
    pub fn is_noop(&self) -> bool {
        self.from == self.to && self.effects == Effects::default()
    }
}

/// An illegal transition; the API answers it with 409 and `detail` as the body's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct TransitionError {
    /// The status the job was in.
    pub from: JobStatus,
    /// The refused command ([`JobCommand::name`]).
    pub command: &'static str,
    /// A human sentence fit for a 409 detail.
    pub detail: String,
}

/// Decides what `cmd` does to a job in `state`.
///
/// Pure: the caller supplies the state it read and applies the returned [`Transition`]
/// atomically (compare-and-set on `from`), so two racing callers cannot both win.
pub fn decide(state: &JobState, cmd: &JobCommand) -> Result<Transition, TransitionError> {
    let status = state.status;
    let refuse = |detail: String| TransitionError {
        from: status,
        command: cmd.name(),
        detail,
    };
    let to = |status: JobStatus| JobState { status, ..*state };

    let (next, effects) = match (*cmd, status) {
        // --- claim -----------------------------------------------------------------------
        (JobCommand::Claim, s) if s.is_waiting() => (
            to(JobStatus::Running),
            Effects {
                set_started_at: true,
                lease: LeaseEffect::Acquire,
                ..Effects::default()
            },
        ),
        (JobCommand::Claim, JobStatus::Running) => {
            return Err(refuse(
                "job is already running; only a queued job can be claimed".into(),
            ))
        }
        (JobCommand::Claim, s) => {
            return Err(refuse(format!(
                "job is {s}; only a queued job can be claimed"
            )))
        }

        // --- cancel ----------------------------------------------------------------------
        // A waiting job has no runner to stop, so it ends at once; the request time is still
        // recorded so the record says when (and that) a cancel was asked.
        (JobCommand::RequestCancel, s) if s.is_waiting() => (
            JobState {
                status: JobStatus::Cancelled,
                cancel_requested: true,
                attempt: state.attempt,
            },
            Effects {
                set_cancel_requested_at: !state.cancel_requested,
                set_completed_at: true,
                ..Effects::default()
            },
        ),
        // Running: only record the request; the worker sees it and stops the sandbox, and the
        // job becomes cancelled through `RunnerStopped`, keeping its best result so far.
        (JobCommand::RequestCancel, JobStatus::Running) if state.cancel_requested => {
            (*state, Effects::default())
        }
        (JobCommand::RequestCancel, JobStatus::Running) => (
            JobState {
                cancel_requested: true,
                ..*state
            },
            Effects {
                set_cancel_requested_at: true,
                ..Effects::default()
            },
        ),
        (JobCommand::RequestCancel, s) => {
            return Err(refuse(format!(
                "job is already {s}; a finished job cannot be cancelled"
            )))
        }

        // --- retry -----------------------------------------------------------------------
        (JobCommand::Retry, s) if s.is_terminal() => {
            let Some(attempt) = state.attempt.checked_add(1) else {
                return Err(refuse(
                    "job has reached the highest attempt number and cannot be retried".into(),
                ));
            };
            (
                JobState {
                    status: JobStatus::Queued,
                    cancel_requested: false,
                    attempt,
                },
                Effects {
                    archive_attempt: true,
                    clear_evidence: true,
                    clear_run_times: true,
                    clear_cancel_requested: state.cancel_requested,
                    ..Effects::default()
                },
            )
        }
        (JobCommand::Retry, s) => {
            return Err(refuse(format!(
                "only a finished job can be retried; this job is {s}"
            )))
        }

        // --- progress --------------------------------------------------------------------
        (JobCommand::Progress(kind) | JobCommand::RuntimeProgress(kind), JobStatus::Running) => {
            let base = Effects {
                set_last_event_at: true,
                ..Effects::default()
            };
            let runtime = matches!(cmd, JobCommand::RuntimeProgress(_));
            match kind {
                ProgressKind::Update => (
                    *state,
                    Effects {
                        lease: LeaseEffect::Renew,
                        ..base
                    },
                ),
                // An outside runtime's end after a cancel request is how it says it stopped.
                ProgressKind::End | ProgressKind::Error if runtime && state.cancel_requested => {
                    (to(JobStatus::Cancelled), finish(base))
                }
                // gepard's own runner stops on a cancel without a terminal event (its worker
                // then reports `RunnerStopped`), so a terminal event after a cancel request
                // means the run finished (or broke) before it could be stopped, and saying so
                // is more truthful than `cancelled`. `cancel_requested_at` stays as history.
                ProgressKind::End => (to(JobStatus::Completed), finish(base)),
                ProgressKind::Error => (to(JobStatus::Failed), finish(base)),
            }
        }
        (JobCommand::Progress(_) | JobCommand::RuntimeProgress(_), s) if s.is_terminal() => {
            return Err(refuse(format!(
                "job is already {s}; a finished job takes no more progress"
            )))
        }
        (JobCommand::Progress(_) | JobCommand::RuntimeProgress(_), s) => {
            return Err(refuse(format!(
                "job is {s}; progress is accepted only while it is running"
            )))
        }

        // --- runner stopped --------------------------------------------------------------
        (JobCommand::RunnerStopped, JobStatus::Running) => {
            let end = if state.cancel_requested {
                JobStatus::Cancelled
            } else {
                JobStatus::Failed
            };
            (to(end), finish(Effects::default()))
        }
        (JobCommand::RunnerStopped, s) => {
            return Err(refuse(format!(
                "job is {s}; only a running job has a runner that can stop"
            )))
        }

        // --- lease expired ---------------------------------------------------------------
        // A cancel was asked and the runner is gone: re-queueing would only start a run that
        // must then be stopped, so the job ends cancelled (keeping its evidence). This also
        // keeps `cancel_requested` off waiting jobs.
        (JobCommand::LeaseExpired | JobCommand::Release, JobStatus::Running)
            if state.cancel_requested =>
        {
            (to(JobStatus::Cancelled), finish(Effects::default()))
        }
        // Otherwise back to the queue, same attempt, evidence and checkpoints kept, so the
        // next worker resumes from the last checkpoint instead of paying for the work again.
        (JobCommand::LeaseExpired | JobCommand::Release, JobStatus::Running) => (
            to(JobStatus::Queued),
            Effects {
                lease: LeaseEffect::Release,
                ..Effects::default()
            },
        ),
        (JobCommand::LeaseExpired, s) => {
            return Err(refuse(format!(
                "job is {s}; only a running job holds a lease that can expire"
            )))
        }
        (JobCommand::Release, s) => {
            return Err(refuse(format!(
                "job is {s}; only a running job is held by a worker that can give it back"
            )))
        }
    };

    Ok(Transition {
        from: *state,
        to: next,
        effects,
    })
}

/// Effects of leaving `running` for a terminal status.
fn finish(base: Effects) -> Effects {
    Effects {
        set_completed_at: true,
        lease: LeaseEffect::Release,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_COMMANDS: [JobCommand; 12] = [
        JobCommand::Claim,
        JobCommand::RequestCancel,
        JobCommand::Retry,
        JobCommand::Progress(ProgressKind::Update),
        JobCommand::Progress(ProgressKind::End),
        JobCommand::Progress(ProgressKind::Error),
        JobCommand::RuntimeProgress(ProgressKind::Update),
        JobCommand::RuntimeProgress(ProgressKind::End),
        JobCommand::RuntimeProgress(ProgressKind::Error),
        JobCommand::RunnerStopped,
        JobCommand::LeaseExpired,
        JobCommand::Release,
    ];

    fn state(status: JobStatus) -> JobState {
        JobState {
            status,
            cancel_requested: false,
            attempt: 1,
        }
    }

    fn running(cancel_requested: bool) -> JobState {
        JobState {
            status: JobStatus::Running,
            cancel_requested,
            attempt: 2,
        }
    }

    fn ok(s: JobState, cmd: JobCommand) -> Transition {
        decide(&s, &cmd).unwrap_or_else(|e| panic!("{cmd} from {s:?} refused: {e}"))
    }

    fn err(s: JobState, cmd: JobCommand) -> TransitionError {
        match decide(&s, &cmd) {
            Ok(t) => panic!("{cmd} from {s:?} should be refused, got {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn statuses_round_trip_through_strings_and_serde() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        let e = "done".parse::<JobStatus>().unwrap_err();
        assert!(e.to_string().contains("`done`"));
        assert!(e.to_string().contains("queued, running, completed"));
    }

    #[test]
    fn only_completed_failed_and_cancelled_are_terminal() {
        let terminal: Vec<_> = JobStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                JobStatus::Completed,
                JobStatus::Failed,
                JobStatus::Cancelled
            ]
        );
    }

    #[test]
    fn a_new_job_is_queued_at_attempt_one() {
        assert_eq!(JobState::new_job(), state(JobStatus::Queued));
    }

    #[test]
    fn claiming_a_queued_job_starts_it_and_takes_the_lease() {
        let t = ok(state(JobStatus::Queued), JobCommand::Claim);
        assert_eq!(t.to, state(JobStatus::Running));
        assert!(t.effects.set_started_at);
        assert_eq!(t.effects.lease, LeaseEffect::Acquire);
        assert!(!t.effects.set_completed_at);
    }

    #[test]
    fn claiming_a_legacy_pending_job_works_like_queued() {
        let t = ok(state(JobStatus::Pending), JobCommand::Claim);
        assert_eq!(t.to.status, JobStatus::Running);
    }

    #[test]
    fn claiming_a_running_or_finished_job_is_refused() {
        let e = err(state(JobStatus::Running), JobCommand::Claim);
        assert_eq!(e.from, JobStatus::Running);
        assert_eq!(e.command, "claim");
        assert_eq!(
            e.to_string(),
            "job is already running; only a queued job can be claimed"
        );
        for s in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            assert_eq!(
                err(state(s), JobCommand::Claim).detail,
                format!("job is {s}; only a queued job can be claimed")
            );
        }
    }

    #[test]
    fn cancelling_a_queued_job_ends_it_immediately() {
        let t = ok(state(JobStatus::Queued), JobCommand::RequestCancel);
        assert_eq!(t.to.status, JobStatus::Cancelled);
        assert!(t.effects.set_completed_at);
        assert!(t.effects.set_cancel_requested_at);
        assert_eq!(t.effects.lease, LeaseEffect::Keep);
        assert_eq!(
            ok(state(JobStatus::Pending), JobCommand::RequestCancel)
                .to
                .status,
            JobStatus::Cancelled
        );
    }

    #[test]
    fn cancelling_a_running_job_only_records_the_request() {
        let t = ok(running(false), JobCommand::RequestCancel);
        assert_eq!(t.to, running(true));
        assert_eq!(
            t.effects,
            Effects {
                set_cancel_requested_at: true,
                ..Effects::default()
            }
        );
    }

    #[test]
    fn cancelling_a_running_job_twice_is_an_idempotent_no_op() {
        let t = ok(running(true), JobCommand::RequestCancel);
        assert_eq!(t.to, running(true));
        assert!(t.is_noop());
    }

    #[test]
    fn cancelling_a_terminal_job_is_refused() {
        for s in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let e = err(state(s), JobCommand::RequestCancel);
            assert_eq!(e.from, s);
            assert_eq!(e.command, "cancel");
            assert_eq!(
                e.detail,
                format!("job is already {s}; a finished job cannot be cancelled")
            );
        }
    }

    #[test]
    fn retrying_a_finished_job_requeues_it_as_the_next_attempt_with_evidence_cleared() {
        for s in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            let from = JobState {
                status: s,
                cancel_requested: s == JobStatus::Cancelled,
                attempt: 3,
            };
            let t = ok(from, JobCommand::Retry);
            assert_eq!(t.to, JobState::new_job_at(4));
            assert!(t.effects.clear_evidence);
            assert!(t.effects.archive_attempt);
            assert!(t.effects.clear_run_times);
            assert_eq!(t.effects.clear_cancel_requested, from.cancel_requested);
            assert!(!t.effects.set_started_at && !t.effects.set_completed_at);
        }
    }

    #[test]
    fn retrying_an_unfinished_job_is_refused() {
        for s in [JobStatus::Pending, JobStatus::Queued, JobStatus::Running] {
            let e = err(state(s), JobCommand::Retry);
            assert_eq!(
                e.detail,
                format!("only a finished job can be retried; this job is {s}")
            );
        }
    }

    #[test]
    fn retrying_at_the_highest_attempt_number_is_refused_instead_of_wrapping() {
        let s = JobState {
            attempt: u32::MAX,
            ..state(JobStatus::Failed)
        };
        assert!(err(s, JobCommand::Retry).detail.contains("highest attempt"));
    }

    #[test]
    fn a_progress_update_keeps_the_job_running_and_renews_the_lease() {
        let t = ok(running(false), JobCommand::Progress(ProgressKind::Update));
        assert_eq!(t.to, running(false));
        assert_eq!(t.effects.lease, LeaseEffect::Renew);
        assert!(t.effects.set_last_event_at);
    }

    #[test]
    fn optimization_end_completes_the_job() {
        let t = ok(running(false), JobCommand::Progress(ProgressKind::End));
        assert_eq!(t.to.status, JobStatus::Completed);
        assert!(t.effects.set_completed_at && t.effects.set_last_event_at);
        assert_eq!(t.effects.lease, LeaseEffect::Release);
    }

    #[test]
    fn optimization_error_fails_the_job() {
        let t = ok(running(false), JobCommand::Progress(ProgressKind::Error));
        assert_eq!(t.to.status, JobStatus::Failed);
        assert!(t.effects.set_completed_at);
        assert_eq!(t.effects.lease, LeaseEffect::Release);
    }

    #[test]
    fn a_terminal_event_after_a_cancel_request_still_reports_what_the_run_did() {
        let t = ok(running(true), JobCommand::Progress(ProgressKind::End));
        assert_eq!(t.to.status, JobStatus::Completed);
        assert!(t.to.cancel_requested, "the request stays on the record");
    }

    #[test]
    fn an_outside_runtime_ending_after_a_cancel_request_ends_the_job_cancelled() {
        for kind in [ProgressKind::End, ProgressKind::Error] {
            let t = ok(running(true), JobCommand::RuntimeProgress(kind));
            assert_eq!(t.to.status, JobStatus::Cancelled);
            assert_eq!(t.effects.lease, LeaseEffect::Release);
            assert!(t.effects.set_completed_at);
        }
        // Without a cancel request its events mean what gepard's own runner's mean.
        let end = ok(
            running(false),
            JobCommand::RuntimeProgress(ProgressKind::End),
        );
        assert_eq!(end.to.status, JobStatus::Completed);
        let error = ok(
            running(false),
            JobCommand::RuntimeProgress(ProgressKind::Error),
        );
        assert_eq!(error.to.status, JobStatus::Failed);
        let update = ok(
            running(true),
            JobCommand::RuntimeProgress(ProgressKind::Update),
        );
        assert_eq!(update.to, running(true));
    }

    #[test]
    fn progress_for_a_job_that_is_not_running_is_refused() {
        for s in [
            JobStatus::Pending,
            JobStatus::Queued,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            for kind in [ProgressKind::Update, ProgressKind::End, ProgressKind::Error] {
                let e = err(state(s), JobCommand::Progress(kind));
                let expected = if s.is_terminal() {
                    format!("job is already {s}; a finished job takes no more progress")
                } else {
                    format!("job is {s}; progress is accepted only while it is running")
                };
                assert_eq!(e.detail, expected);
                assert_eq!(
                    err(state(s), JobCommand::RuntimeProgress(kind)).detail,
                    expected
                );
            }
        }
    }

    #[test]
    fn a_runner_that_stops_after_a_cancel_request_leaves_the_job_cancelled() {
        let t = ok(running(true), JobCommand::RunnerStopped);
        assert_eq!(t.to.status, JobStatus::Cancelled);
        assert!(t.effects.set_completed_at);
        assert_eq!(t.effects.lease, LeaseEffect::Release);
        assert!(!t.effects.clear_evidence, "the best result so far is kept");
    }

    #[test]
    fn a_runner_that_stops_on_its_own_without_a_terminal_event_fails_the_job() {
        let t = ok(running(false), JobCommand::RunnerStopped);
        assert_eq!(t.to.status, JobStatus::Failed);
        assert!(t.effects.set_completed_at);
    }

    #[test]
    fn a_runner_stopping_when_the_job_is_not_running_is_refused() {
        for s in [
            JobStatus::Queued,
            JobStatus::Completed,
            JobStatus::Cancelled,
        ] {
            let e = err(state(s), JobCommand::RunnerStopped);
            assert_eq!(e.command, "runner_stopped");
            assert!(e.detail.starts_with(&format!("job is {s};")));
        }
    }

    #[test]
    fn an_expired_lease_requeues_the_job_for_resume_at_the_same_attempt() {
        let t = ok(running(false), JobCommand::LeaseExpired);
        assert_eq!(
            t.to,
            JobState {
                status: JobStatus::Queued,
                cancel_requested: false,
                attempt: 2
            }
        );
        assert_eq!(
            t.effects,
            Effects {
                lease: LeaseEffect::Release,
                ..Effects::default()
            },
            "evidence and started_at are kept so the next worker resumes"
        );
        // The resumed claim keeps the first start time (set only when null).
        assert!(ok(t.to, JobCommand::Claim).effects.set_started_at);
    }

    #[test]
    fn an_expired_lease_after_a_cancel_request_ends_the_job_cancelled() {
        let t = ok(running(true), JobCommand::LeaseExpired);
        assert_eq!(t.to.status, JobStatus::Cancelled);
        assert!(t.effects.set_completed_at);
        assert!(!t.effects.clear_evidence);
    }

    #[test]
    fn an_expired_lease_on_a_job_that_is_not_running_is_refused() {
        for s in [JobStatus::Queued, JobStatus::Failed] {
            let e = err(state(s), JobCommand::LeaseExpired);
            assert_eq!(
                e.detail,
                format!("job is {s}; only a running job holds a lease that can expire")
            );
        }
    }

    #[test]
    fn a_job_given_back_by_its_worker_is_requeued_like_an_expired_lease() {
        for cancel_requested in [false, true] {
            let released = ok(running(cancel_requested), JobCommand::Release);
            let expired = ok(running(cancel_requested), JobCommand::LeaseExpired);
            assert_eq!(released.to, expired.to);
            assert_eq!(released.effects, expired.effects);
        }
        assert_eq!(
            ok(running(false), JobCommand::Release).to.status,
            JobStatus::Queued
        );
        let e = err(state(JobStatus::Queued), JobCommand::Release);
        assert_eq!(e.command, "release");
        assert_eq!(
            e.detail,
            "job is queued; only a running job is held by a worker that can give it back"
        );
    }

    #[test]
    fn terminal_jobs_refuse_everything_but_retry() {
        for s in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
        ] {
            for cmd in ALL_COMMANDS {
                assert_eq!(
                    decide(&state(s), &cmd).is_ok(),
                    cmd == JobCommand::Retry,
                    "{cmd} on {s}"
                );
            }
        }
    }

    impl JobState {
        fn new_job_at(attempt: u32) -> Self {
            Self {
                attempt,
                ..Self::new_job()
            }
        }
    }

    fn any_command() -> impl Strategy<Value = JobCommand> {
        proptest::sample::select(ALL_COMMANDS.to_vec())
    }

    fn any_state() -> impl Strategy<Value = JobState> {
        (
            proptest::sample::select(JobStatus::ALL.to_vec()),
            any::<bool>(),
            1u32..1000,
        )
            .prop_map(|(status, cancel_requested, attempt)| JobState {
                status,
                cancel_requested,
                attempt,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Walks arbitrary command sequences from a new job, applying every accepted transition
        /// and checking the invariants after each step.
        #[test]
        fn command_sequences_from_queued_never_reach_an_illegal_state(
            cmds in proptest::collection::vec(any_command(), 0..64)
        ) {
            let mut s = JobState::new_job();
            for cmd in cmds {
                match decide(&s, &cmd) {
                    Err(e) => {
                        prop_assert_eq!(e.from, s.status);
                        prop_assert_eq!(e.command, cmd.name());
                        prop_assert!(!e.detail.is_empty());
                    }
                    Ok(t) => {
                        prop_assert_eq!(t.from, s);
                        let to = t.to;
                        // Pending is legacy: the machine never produces it.
                        prop_assert_ne!(to.status, JobStatus::Pending);
                        // A waiting job never carries a cancel request.
                        prop_assert!(!(to.status.is_waiting() && to.cancel_requested));
                        // A cancel request appears only by RequestCancel.
                        if to.cancel_requested && !s.cancel_requested {
                            prop_assert_eq!(cmd, JobCommand::RequestCancel);
                        }
                        // Attempt grows by exactly one on retry and never changes otherwise.
                        if cmd == JobCommand::Retry {
                            prop_assert_eq!(to.attempt, s.attempt + 1);
                        } else {
                            prop_assert_eq!(to.attempt, s.attempt);
                        }
                        // Terminal states absorb everything except retry.
                        if s.status.is_terminal() {
                            prop_assert_eq!(cmd, JobCommand::Retry);
                        }
                        // A running job ends only through a terminal event, its runner
                        // stopping, or its lease expiring after a cancel request.
                        if s.status == JobStatus::Running && to.status.is_terminal() {
                            let allowed = matches!(
                                cmd,
                                JobCommand::Progress(ProgressKind::End | ProgressKind::Error)
                                    | JobCommand::RuntimeProgress(ProgressKind::End | ProgressKind::Error)
                                    | JobCommand::RunnerStopped
                            ) || (matches!(cmd, JobCommand::LeaseExpired | JobCommand::Release)
                                && s.cancel_requested);
                            // Cancelled only after a cancel request, by whatever ended it.
                            if to.status == JobStatus::Cancelled {
                                prop_assert!(s.cancel_requested, "{} cancelled unasked", cmd);
                            }
                            prop_assert!(allowed, "{} ended a running job", cmd);
                        }
                        if s.status.is_waiting() && cmd == JobCommand::RequestCancel {
                            prop_assert_eq!(to.status, JobStatus::Cancelled);
                        }
                        s = to;
                    }
                }
            }
        }

        /// The effects always agree with the status change they accompany.
        #[test]
        fn effects_match_the_status_change(s in any_state(), cmd in any_command()) {
            let Ok(t) = decide(&s, &cmd) else { return Ok(()) };
            let (a, b) = (t.from.status, t.to.status);
            prop_assert_eq!(t.effects.set_completed_at, !a.is_terminal() && b.is_terminal());
            prop_assert_eq!(
                t.effects.lease == LeaseEffect::Acquire,
                a != JobStatus::Running && b == JobStatus::Running
            );
            prop_assert_eq!(
                t.effects.lease == LeaseEffect::Release,
                a == JobStatus::Running && b != JobStatus::Running
            );
            prop_assert_eq!(t.effects.clear_evidence, cmd == JobCommand::Retry);
            prop_assert_eq!(t.effects.archive_attempt, cmd == JobCommand::Retry);
            prop_assert_eq!(t.effects.clear_cancel_requested, t.from.cancel_requested && !t.to.cancel_requested);
            prop_assert!(!(t.effects.set_cancel_requested_at && t.from.cancel_requested));
        }

        /// Exactly the documented (status, command) pairs are legal, whatever the other fields.
        #[test]
        fn legality_depends_only_on_status_and_command(s in any_state(), cmd in any_command()) {
            let legal = match cmd {
                JobCommand::Claim => s.status.is_waiting(),
                JobCommand::RequestCancel => !s.status.is_terminal(),
                JobCommand::Retry => s.status.is_terminal(),
                JobCommand::Progress(_)
                | JobCommand::RuntimeProgress(_)
                | JobCommand::RunnerStopped
                | JobCommand::LeaseExpired
                | JobCommand::Release => s.status == JobStatus::Running,
            };
            prop_assert_eq!(decide(&s, &cmd).is_ok(), legal);
        }
    }
}
