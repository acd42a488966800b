//! Live updates across processes: on PostgreSQL, a change one store and notifier write (a
//! worker process, another server) reaches the watchers of another store and notifier on the
//! same database, once, with its new log lines. SQLite is one process; its notifier is local.

use std::sync::Arc;
use std::time::Duration;

use gepard_core::job::{JobCommand, JobStatus};
use gepard_core::model::JobSpec;
use gepard_store::notify::for_store;
use gepard_store::testing::TestDatabase;
use gepard_store::{Created, JobNotice, NewJob, Store};
use serde_json::json;
use support::first_start;
use tokio::sync::broadcast;
use uuid::Uuid;

mod support;

async fn submit(store: &Store) -> (Uuid, Uuid) {
    let (org, ws, project) = first_start(store).await;
    let spec: JobSpec = serde_json::from_value(json!({
        "dataset_ref": {"name": "train", "version": "1.0.0"}, "val_dataset_ref": null,
        "capability": {"artifact_id": Uuid::new_v4(), "name": "c", "version": "1.0.0", "runtime_digest": "x"},
        "agent_name": "a", "reward_recipe": {"name": "exact_match_v1"}, "components": ["instructions"],
        "config": {}, "tags": [],
    }))
    .unwrap();
    let new = NewJob {
        org_id: org,
        workspace_id: ws,
        project_id: project,
        name: None,
        backend: "gepa".into(),
        target_kind: "capability_agent".into(),
        model: "openai/m".into(),
        run_ref: None,
        objective: None,
        spec,
        created_by: None,
    };
    match store.create_job(new, None).await.unwrap() {
        Created::New(job) => (ws, job.id),
        Created::Replayed(_) => unreachable!(),
    }
}

async fn next(rx: &mut broadcast::Receiver<Arc<JobNotice>>) -> Arc<JobNotice> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notice within 10 s")
        .unwrap()
}

/// Nothing more arrives (in particular no echo of the process's own change).
async fn quiet(rx: &mut broadcast::Receiver<Arc<JobNotice>>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)),
        "one notice per change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_change_written_by_one_process_reaches_the_watchers_of_another_once() {
    let test =
        "notify::postgres_a_change_written_by_one_process_reaches_the_watchers_of_another_once";
    let Some(db) = TestDatabase::postgres(test).await else {
        return;
    };
    let (server, worker) = (db.store().await, db.store().await);
    let server_notifier = for_store(&server, db.url()).await.unwrap();
    let worker_notifier = for_store(&worker, db.url()).await.unwrap();
    let mut server_watch = server_notifier.subscribe();
    let mut worker_watch = worker_notifier.subscribe();
    let (ws, id) = submit(&server).await;

    // The worker process claims: the server's watchers see the job running and its log line.
    worker
        .claim_next(worker_notifier.as_ref(), "w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let seen = next(&mut server_watch).await;
    assert_eq!((seen.job.id, seen.job.status), (id, JobStatus::Running));
    let lines: Vec<_> = seen.logs.iter().map(|l| l.entry.message.as_str()).collect();
    assert_eq!(lines, ["started"]);
    assert_eq!(next(&mut worker_watch).await.job.status, JobStatus::Running);
    quiet(&mut worker_watch).await;

    // The server records a cancel: the worker's watchers see it, with the new line only.
    server
        .job_command(server_notifier.as_ref(), ws, id, &JobCommand::RequestCancel)
        .await
        .unwrap();
    let seen = next(&mut worker_watch).await;
    assert!(seen.job.cancel_requested_at.is_some());
    let lines: Vec<_> = seen.logs.iter().map(|l| l.entry.message.as_str()).collect();
    assert_eq!(lines, ["cancel requested; waiting for the runtime to stop"]);
    assert_eq!(seen.logs[0].seq, 2);
    assert!(next(&mut server_watch)
        .await
        .job
        .cancel_requested_at
        .is_some());
    quiet(&mut server_watch).await;
    drop((server_notifier, worker_notifier));
}

#[tokio::test]
async fn sqlite_stores_use_the_in_process_notifier() {
    let db = TestDatabase::sqlite();
    let store = db.store().await;
    let notifier = for_store(&store, db.url()).await.unwrap();
    let mut watch = notifier.subscribe();
    let (ws, id) = submit(&store).await;
    store
        .job_command(notifier.as_ref(), ws, id, &JobCommand::RequestCancel)
        .await
        .unwrap();
    let seen = next(&mut watch).await;
    assert_eq!(seen.job.status, JobStatus::Cancelled);
    quiet(&mut watch).await;
}
