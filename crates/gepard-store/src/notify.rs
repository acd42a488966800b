//! Live job updates for watchers (SSE).
//!
//! Writers publish a [`JobNotice`] after each committed change; watchers subscribe and filter
//! by job. The notice carries the new job record and its new log entries, so a thousand
//! watchers do not each go back to the database. A watcher that falls behind (broadcast lag)
//! re-reads from the store, so nothing is lost, only batched.
//!
//! [`LocalNotifier`] is in-process (one server, SQLite). [`PgNotifier`] also crosses
//! processes over PostgreSQL `LISTEN/NOTIFY`, so a watcher on one server sees what another
//! server or a separate worker process wrote. [`for_store`] picks the one a store needs.

use std::sync::Arc;
use std::time::Duration;

use gepard_core::model::{Job, SequencedLog};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use crate::{Backend, Result, Store};

/// One committed change of a job.
#[derive(Debug, Clone)]
pub struct JobNotice {
    /// The job after the change (read after its commit, so possibly later changes too).
    pub job: Arc<Job>,
    /// The job's revision, read with it ([`Store::job_with_revision`]). Notices of two
    /// changes can arrive in the opposite order of their commits; a watcher shows a job only
    /// when its revision is higher than the one it showed last.
    pub revision: i64,
    /// Log entries the change appended (and any appended since), oldest first.
    pub logs: Vec<SequencedLog>,
}

/// Publishes job changes to watchers.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Announces a committed change. Never blocks; with no watchers it is dropped.
    fn publish(&self, notice: JobNotice);
    /// A receiver of every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<JobNotice>>;
    /// Whether changes written by other processes (a separate `gepard worker`) reach
    /// [`Notifier::subscribe`] too. When they do not, live watchers must also poll the store.
    fn sees_other_processes(&self) -> bool {
        false
    }
}

/// Watchers of one process share this broadcast channel.
#[derive(Debug, Clone)]
pub struct LocalNotifier {
    tx: broadcast::Sender<Arc<JobNotice>>,
}

/// Notices buffered per watcher before it counts as lagging (and re-reads the store).
const CAPACITY: usize = 1024;

impl Default for LocalNotifier {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Notifier for LocalNotifier {
    fn publish(&self, notice: JobNotice) {
        // An error only means nobody is watching right now.
        let _ = self.tx.send(Arc::new(notice));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<JobNotice>> {
        self.tx.subscribe()
    }
}

/// The notifier `store` needs: [`PgNotifier`] on PostgreSQL (other processes write to the same
/// database), [`LocalNotifier`] on SQLite. `url` is the URL the store was opened with.
pub async fn for_store(store: &Store, url: &str) -> Result<Arc<dyn Notifier>> {
    Ok(match store.backend() {
        Backend::Sqlite => Arc::new(LocalNotifier::default()),
        Backend::Postgres => Arc::new(PgNotifier::start(store, url).await?),
    })
}

/// The channel every gepard process of one PostgreSQL database notifies and listens on.
const CHANNEL: &str = "gepard_jobs";

/// What crosses processes: which job changed and where its new log entries start. A notice
/// itself could exceed NOTIFY's 8000-byte payload limit; the receiver re-reads the job.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The publishing notifier, which skips its own notifications (its watchers had them).
    origin: Uuid,
    job_id: Uuid,
    workspace_id: Uuid,
    /// Log entries after this sequence number are new; `None`: the change wrote none.
    logs_after: Option<i64>,
}

/// A [`Notifier`] across processes: publishes to this process's watchers at once and to the
/// other processes on the database with `NOTIFY`; what they publish arrives by `LISTEN`, is
/// re-read from the store (the job as it is now, its new log entries) and handed to this
/// process's watchers. A notification missed while the listening connection reconnects is
/// lost, which watchers already survive: they re-read the store when they fall behind.
#[derive(Debug)]
pub struct PgNotifier {
    local: LocalNotifier,
    origin: Uuid,
    outbox: mpsc::UnboundedSender<String>,
    listener: tokio::task::JoinHandle<()>,
}

impl PgNotifier {
    /// Starts listening on the database at `url` (the store's own) and returns the notifier.
    /// Must be called inside a Tokio runtime; its tasks end when it is dropped.
    pub async fn start(store: &Store, url: &str) -> Result<Self> {
        let origin = Uuid::new_v4();
        let local = LocalNotifier::default();
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;

        // One sending task keeps notifications in publish order and keeps `publish` from
        // waiting on the database.
        let (outbox, mut pending) = mpsc::unbounded_channel::<String>();
        let sender = store.clone();
        tokio::spawn(async move {
            while let Some(payload) = pending.recv().await {
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(payload)
                    .execute(&sender.pool)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "could not tell other processes about a job change");
                }
            }
        });

        let tx = local.tx.clone();
        let reader = store.clone();
        let listener = tokio::spawn(async move {
            loop {
                let wire = match listener.recv().await {
                    Ok(n) => match serde_json::from_str::<Wire>(n.payload()) {
                        Ok(wire) => wire,
                        Err(e) => {
                            tracing::debug!(error = %e, "ignoring a foreign notification");
                            continue;
                        }
                    },
                    Err(e) => {
                        // recv reconnects by itself after a lost connection; this is anything
                        // else: wait a little instead of spinning.
                        tracing::warn!(error = %e, "listening for job changes failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if wire.origin == origin || tx.receiver_count() == 0 {
                    continue;
                }
                match remote_notice(&reader, &wire).await {
                    Ok(Some(notice)) => {
                        let _ = tx.send(Arc::new(notice));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, job = %wire.job_id, "could not re-read a changed job");
                    }
                }
            }
        });
        Ok(Self {
            local,
            origin,
            outbox,
            listener,
        })
    }
}

/// The notice for a change another process announced, read back from the store.
async fn remote_notice(store: &Store, wire: &Wire) -> Result<Option<JobNotice>> {
    let Some((job, revision)) = store
        .job_with_revision(wire.workspace_id, wire.job_id)
        .await?
    else {
        return Ok(None);
    };
    let logs = match wire.logs_after {
        Some(after) => store.job_logs(wire.job_id, after, 10_000).await?,
        None => Vec::new(),
    };
    Ok(Some(JobNotice {
        job: Arc::new(job),
        revision,
        logs,
    }))
}

impl Notifier for PgNotifier {
    fn publish(&self, notice: JobNotice) {
        let wire = Wire {
            origin: self.origin,
            job_id: notice.job.id,
            workspace_id: notice.job.workspace_id,
            logs_after: notice.logs.first().map(|l| l.seq - 1),
        };
        self.local.publish(notice);
        if let Ok(payload) = serde_json::to_string(&wire) {
            // An error only means the sending task has ended (the runtime is shutting down).
            let _ = self.outbox.send(payload);
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<JobNotice>> {
        self.local.subscribe()
    }

    fn sees_other_processes(&self) -> bool {
        true
    }
}

impl Drop for PgNotifier {
    fn drop(&mut self) {
        // The sending task ends with the outbox; the listener would wait forever.
        self.listener.abort();
    }
}
