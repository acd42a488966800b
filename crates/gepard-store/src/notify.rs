//! Live job updates for watchers (SSE).
//!
//! Writers publish a [`JobNotice`] after each committed change; watchers subscribe and filter
//! by job. The notice carries the new job record and its new log entries, so a thousand
//! watchers do not each go back to the database. A watcher that falls behind (broadcast lag)
//! re-reads from the store, so nothing is lost, only batched.
//!
//! [`LocalNotifier`] is in-process (one server). A cross-process notifier (PostgreSQL
//! `LISTEN/NOTIFY`) implements the same trait.

use std::sync::Arc;

use gepard_core::model::{Job, SequencedLog};
use tokio::sync::broadcast;

/// One committed change of a job.
#[derive(Debug, Clone)]
pub struct JobNotice {
    /// The job after the change.
    pub job: Arc<Job>,
    /// Log entries the change appended, oldest first.
    pub logs: Vec<SequencedLog>,
}

/// Publishes job changes to watchers.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// Announces a committed change. Never blocks; with no watchers it is dropped.
    fn publish(&self, notice: JobNotice);
    /// A receiver of every change from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<JobNotice>>;
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
