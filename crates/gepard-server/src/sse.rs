//! The per-watcher task behind `GET …/events`.
//!
//! One task per connection: it sends the snapshot and the backlog, then forwards the
//! notifier's notices for its job. A notice carries the job and its new log entries, so a
//! watcher normally never reads the database after connecting; only when it lags behind the
//! broadcast buffer does it re-read, which batches updates but loses none. Two writers'
//! notices can arrive in the opposite order of their commits: a notice whose log entries
//! leave a gap waits briefly for the one with the missing entries, and only if that does not
//! come are they read from the store. (On SQLite, whose
//! notifier does not cross processes, it also looks for new log entries every second, so a
//! separate `gepard worker` process's changes arrive too.) The task ends when
//! the client goes away (a send fails) or after the job's terminal events.
//!
//! A notice is serialized once, by the first watcher that handles it, and the JSON is shared
//! with every other watcher of the job ([`encoded`]): with a thousand watchers, re-encoding
//! the job record per watcher was a large part of the fan-out's cost.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use axum::response::sse::Event;
use gepard_core::model::{Job, SequencedLog};
use gepard_store::JobNotice;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::AppState;

/// An SSE event with a JSON payload; the id is a log sequence number.
pub(crate) fn event(kind: &str, id: i64, data: &impl serde::Serialize) -> Event {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
    Event::default().event(kind).id(id.to_string()).data(data)
}

/// The wire form of one notice, shared by all watchers of its job.
struct Encoded {
    /// The notice this encodes; a weak reference keeps its address from being reused, so
    /// pointer identity is a sound key.
    notice: Weak<JobNotice>,
    /// A complete `log` event per entry, with its sequence number.
    logs: Vec<(i64, Event)>,
    /// The job as JSON: its event's id is each watcher's own last sequence number.
    job: String,
}

/// Notices encoded most recently, newest last; a few, for several busy jobs at once.
static ENCODED: Mutex<VecDeque<Arc<Encoded>>> = Mutex::new(VecDeque::new());
/// How many encoded notices [`ENCODED`] keeps.
const ENCODED_KEEP: usize = 16;

/// The wire form of `notice`: serialized by the first watcher that asks, shared afterwards.
fn encoded(notice: &Arc<JobNotice>) -> Arc<Encoded> {
    let key = Arc::downgrade(notice);
    let find = |cache: &VecDeque<Arc<Encoded>>| {
        cache
            .iter()
            .rev()
            .find(|e| Weak::ptr_eq(&e.notice, &key))
            .cloned()
    };
    if let Some(e) = find(&ENCODED.lock().unwrap_or_else(PoisonError::into_inner)) {
        return e;
    }
    // Encode outside the lock; two watchers racing here both encode, which is harmless.
    let fresh = Arc::new(Encoded {
        notice: key.clone(),
        logs: notice
            .logs
            .iter()
            .map(|log| (log.seq, event("log", log.seq, log)))
            .collect(),
        job: serde_json::to_string(&*notice.job).unwrap_or_else(|_| "{}".to_owned()),
    });
    let mut cache = ENCODED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = find(&cache) {
        return e;
    }
    if cache.len() >= ENCODED_KEEP {
        cache.pop_front();
    }
    cache.push_back(fresh.clone());
    fresh
}

/// How often a watcher looks for changes when the notifier does not cross processes.
const POLL: Duration = Duration::from_secs(1);

/// Log entries read per query while catching up.
const BACKLOG_PAGE: i64 = 1000;

/// How long a watcher holds a notice whose log entries leave a gap, waiting for the notice
/// with the missing ones, before it reads them from the store. Notices arrive out of order by
/// a few milliseconds (two writers publishing, or another process's notice coming through
/// `NOTIFY` and a re-read), so waiting nearly always spares every watcher a read.
const GAP_WAIT: Duration = Duration::from_millis(250);

struct Watcher {
    tx: mpsc::Sender<Result<Event, Infallible>>,
    /// Highest log sequence number sent; also the id of job events.
    last_seq: i64,
    /// Revision of the last job sent: a job with no higher one is older or the same, and is
    /// not sent (notices of two writers can arrive in the opposite order of their commits).
    shown: i64,
    /// `updated_at` of the last job sent. A change written by a process of an earlier
    /// version (during a rolling upgrade) keeps the revision; it still shows by this.
    shown_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the last job sent had finished.
    finished: bool,
    /// Notices held back because their log entries leave a gap after `last_seq`.
    held: Vec<Arc<JobNotice>>,
    /// When to stop waiting for the missing notice and read the store instead.
    gap_deadline: Option<tokio::time::Instant>,
}

impl Watcher {
    async fn send(&self, e: Event) -> bool {
        self.tx.send(Ok(e)).await.is_ok()
    }

    async fn send_logs(&mut self, logs: &[SequencedLog]) -> bool {
        for log in logs {
            if log.seq <= self.last_seq {
                continue;
            }
            self.last_seq = log.seq;
            if !self.send(event("log", log.seq, log)).await {
                return false;
            }
        }
        true
    }

    /// The sequence number of `notice`'s first log entry not sent yet.
    fn first_new(&self, notice: &JobNotice) -> Option<i64> {
        notice
            .logs
            .iter()
            .map(|l| l.seq)
            .find(|seq| *seq > self.last_seq)
    }

    /// Whether `notice`'s first new log entry leaves a gap after the last one sent.
    fn leaves_gap(&self, notice: &JobNotice) -> bool {
        self.first_new(notice)
            .is_some_and(|seq| seq > self.last_seq + 1)
    }

    /// Sends a notice, or holds it while its log entries leave a gap. Each writer publishes
    /// after its commit, so two writers' notices can arrive in the opposite order: entries 5
    /// and 6 committed in turn, and the notice with 6 alone came first. Sending 6 would make
    /// 5 look sent, for good (a resume after 6 skips it too), so the notice waits for the one
    /// with 5 ([`GAP_WAIT`] at most; then the store is read: the entries are committed).
    async fn take(&mut self, notice: Arc<JobNotice>) -> bool {
        if self.leaves_gap(&notice) {
            self.held.push(notice);
            self.gap_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + GAP_WAIT);
            return true;
        }
        self.send_notice(&notice).await && self.release().await
    }

    /// Sends the held notices that no longer leave a gap, oldest entries first.
    async fn release(&mut self) -> bool {
        loop {
            let mut held = std::mem::take(&mut self.held);
            held.sort_by_key(|n| self.first_new(n));
            self.held = held;
            let Some(i) = self.held.iter().position(|n| !self.leaves_gap(n)) else {
                break;
            };
            let notice = self.held.remove(i);
            if !self.send_notice(&notice).await {
                return false;
            }
        }
        if self.held.is_empty() {
            self.gap_deadline = None;
        }
        true
    }

    /// The missing notice did not come: reads the missing entries, then sends what was held.
    async fn fill_gap(&mut self, state: &AppState, job_id: Uuid) -> bool {
        self.catch_up(state, job_id).await.is_some() && self.release().await
    }

    /// [`Watcher::send_logs`] then [`Watcher::send_job`] for a notice, from its shared encoding.
    async fn send_notice(&mut self, notice: &Arc<JobNotice>) -> bool {
        let enc = encoded(notice);
        for (seq, e) in &enc.logs {
            if *seq <= self.last_seq {
                continue;
            }
            self.last_seq = *seq;
            if !self.send(e.clone()).await {
                return false;
            }
        }
        if !self.newer(notice.revision, &notice.job) {
            return true;
        }
        let e = Event::default()
            .event("job")
            .id(self.last_seq.to_string())
            .data(&enc.job);
        self.send(e).await
    }

    /// Sends a job read from the store at `revision`, unless one as new was sent.
    async fn send_job(&mut self, job: &Job, revision: i64) -> bool {
        if !self.newer(revision, job) {
            return true;
        }
        self.send(event("job", self.last_seq, job)).await
    }

    /// Whether `job` at `revision` is newer than what was shown (a higher revision, or the same
    /// one changed by a writer that does not count revisions); if so it counts as shown.
    fn newer(&mut self, revision: i64, job: &Job) -> bool {
        let same = revision == self.shown && self.shown_at == Some(job.updated_at);
        if revision < self.shown || same {
            return false;
        }
        self.shown = revision;
        self.shown_at = Some(job.updated_at);
        self.finished = job.status.is_terminal();
        true
    }

    /// Reads and sends every log entry after `last_seq`.
    async fn catch_up(&mut self, state: &AppState, job_id: Uuid) -> Option<()> {
        loop {
            let logs = state
                .store
                .job_logs(job_id, self.last_seq, BACKLOG_PAGE)
                .await
                .ok()?;
            let done = (logs.len() as i64) < BACKLOG_PAGE;
            if !self.send_logs(&logs).await {
                return None;
            }
            if done {
                return Some(());
            }
        }
    }
}

/// Sleeps until `deadline` (never returns without one).
async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Streams one job's events into `tx` until the client leaves, the job has finished or the key
/// `(org id, key id)` that opened the stream is revoked.
#[allow(clippy::too_many_arguments)]
pub async fn stream_job(
    state: AppState,
    workspace_id: Uuid,
    job_id: Uuid,
    (org_id, key_id): (Uuid, Uuid),
    resume_after: i64,
    mut rx: broadcast::Receiver<Arc<JobNotice>>,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    heartbeat: Duration,
) {
    let mut w = Watcher {
        tx,
        last_seq: resume_after,
        shown: -1,
        shown_at: None,
        finished: false,
        held: Vec::new(),
        gap_deadline: None,
    };
    let Ok(Some((job, revision))) = state.store.job_with_revision(workspace_id, job_id).await
    else {
        return;
    };
    w.newer(revision, &job);
    if !w.send(event("snapshot", w.last_seq, &job)).await
        || w.catch_up(&state, job_id).await.is_none()
    {
        return;
    }
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    // Without a notifier that crosses processes (SQLite), a separate `gepard worker` process
    // writes changes nobody announces here: look for new log entries now and then. Every
    // change appends one, so a new entry is the sign to re-read the job.
    let polls = !state.notifier.sees_other_processes();
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The key was checked once, when the stream opened; a stream can stay open for the whole
    // of a long job, and revoking a key must cut it off too.
    let every = state.key_recheck;
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !w.finished {
        tokio::select! {
            notice = rx.recv() => match notice {
                Ok(n) if n.job.id == job_id => {
                    if !w.take(n).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Fell behind the buffer: re-read instead of guessing what was missed.
                    let Ok(Some((job, revision))) = state.store.job_with_revision(workspace_id, job_id).await else { return };
                    if !w.fill_gap(&state, job_id).await || !w.send_job(&job, revision).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // The client left: stop now rather than at the next send, so the task and its
            // count in `/metrics` go away with the connection.
            () = w.tx.closed() => return,
            // The server is shutting down: end the stream so the connection can close.
            () = state.shutdown.cancelled() => return,
            () = sleep_until_deadline(w.gap_deadline), if w.gap_deadline.is_some() => {
                if !w.fill_gap(&state, job_id).await {
                    return;
                }
            }
            _ = poll.tick(), if polls => {
                let seen = w.last_seq;
                if !w.fill_gap(&state, job_id).await {
                    return;
                }
                if w.last_seq != seen {
                    let Ok(Some((job, revision))) = state.store.job_with_revision(workspace_id, job_id).await else { return };
                    if !w.send_job(&job, revision).await {
                        return;
                    }
                }
            }
            _ = recheck.tick() => match state.store.api_key(org_id, key_id).await {
                Ok(Some(key)) if key.revoked_at.is_none() => {}
                // Revoked (or gone): end the stream; reconnecting answers 401.
                Ok(_) => return,
                // A database hiccup is not a revocation: check again next time.
                Err(e) => tracing::warn!(error = %e, "could not re-check an event stream's key"),
            },
            _ = beat.tick() => {
                if !w.send(Event::default().event("heartbeat").id(w.last_seq.to_string()).data("{}")).await {
                    return;
                }
            }
        }
    }
    // A terminal job: make sure the very last entries are out before the stream ends.
    let _ = w.catch_up(&state, job_id).await;
}
