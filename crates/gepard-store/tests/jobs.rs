//! Part of the conformance suite (`sqlite::…` and `postgres::…`): jobs under concurrency, the
//! behaviour PostgreSQL's many servers and workers rely on and SQLite's single writer hides.
//! Claims with many claimers, lease fencing, the reaper, compare-and-set writes, idempotent
//! submission, concurrent promotions and publishes, and a concurrent first start.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gepard_core::auth::ApiKeySecret;
use gepard_core::job::{JobCommand, JobStatus};
use gepard_core::model::{ArtifactKind, Job, JobSpec, JobUsage};
use gepard_core::progress::ProgressEvent;
use gepard_store::{
    Bootstrap, Created, IdempotencyKey, LifecycleError, LocalNotifier, NewJob, Promoter,
    PromotionRequest, Store, StoreError,
};
use serde_json::json;
use support::{capability, first_start};
use uuid::Uuid;

mod support;

/// A lease that has run out by the time the test looks again.
const SHORT: Duration = Duration::from_millis(1);

const BEST: &str = "Classify the sentiment.\nAnswer with exactly one lowercase word.";

/// A bootstrapped store with capability sentiment@1.0.0 (agent classifier: "Classify.").
struct Fixture {
    store: Store,
    org: Uuid,
    ws: Uuid,
    project: Uuid,
    user: Uuid,
    cap_id: Uuid,
}

async fn fixture(store: Store) -> Fixture {
    let (org, ws, project) = first_start(&store).await;
    let user = store.list_api_keys(org).await.unwrap()[0].user_id;
    let cap_id = store
        .publish_capability(org, &capability("1.0.0", "Classify."), None)
        .await
        .unwrap()
        .into_inner()
        .id;
    Fixture {
        store,
        org,
        ws,
        project,
        user,
        cap_id,
    }
}

impl Fixture {
    fn new_job(&self, name: &str) -> NewJob {
        let spec: JobSpec = serde_json::from_value(json!({
            "dataset_ref": {"name": "train", "version": "1.0.0"},
            "val_dataset_ref": null,
            "capability": {"artifact_id": self.cap_id, "name": "sentiment", "version": "1.0.0", "runtime_digest": "sha256:0"},
            "agent_name": "classifier",
            "reward_recipe": {"name": "exact_match_v1", "params": {}},
            "components": ["instructions"],
            "config": {"seed": 0},
            "tags": [],
        }))
        .unwrap();
        NewJob {
            org_id: self.org,
            workspace_id: self.ws,
            project_id: self.project,
            name: Some(name.to_owned()),
            backend: "gepa".into(),
            target_kind: "capability_agent".into(),
            model: "openai/gpt-4o-mini".into(),
            run_ref: None,
            objective: None,
            spec,
            created_by: Some(self.user),
        }
    }

    async fn submit(&self, name: &str) -> Uuid {
        match self
            .store
            .create_job(self.new_job(name), None)
            .await
            .unwrap()
        {
            Created::New(job) => job.id,
            Created::Replayed(_) => panic!("no idempotency key, no replay"),
        }
    }

    /// Claims, stores a seed and a better candidate, reports both and ends the job completed.
    async fn completed_job(&self) -> Uuid {
        let id = self.submit("to promote").await;
        let n = LocalNotifier::default();
        let claimed = self
            .store
            .claim_next(&n, "w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.job.id, id);
        for (index, text, score) in [(0, "Classify.", 0.25), (1, BEST, 0.75)] {
            let candidate = json!({"index": index, "instructions": text, "val_score": score, "best": index == 1});
            assert!(self
                .store
                .save_candidate(id, 1, claimed.lease_token, index, &candidate)
                .await
                .unwrap());
        }
        for event in [
            json!({"event_type": "valset_evaluated", "iteration": 0,
                   "summary": {"seed_score": 0.25, "best_score": 0.25, "best_candidate": {"instructions": "Classify."}}}),
            json!({"event_type": "valset_evaluated", "iteration": 1,
                   "summary": {"best_score": 0.75, "best_candidate": {"instructions": BEST}}}),
            json!({"event_type": "optimization_end", "message": "done",
                   "artifacts": {"best_instructions": BEST, "best_candidate_index": 1}}),
        ] {
            let event: ProgressEvent = serde_json::from_value(event).unwrap();
            self.store
                .ingest_progress(&n, id, &event, Some(claimed.lease_token))
                .await
                .unwrap();
        }
        assert_eq!(
            self.store.job_by_id(id).await.unwrap().unwrap().status,
            JobStatus::Completed
        );
        id
    }

    fn promoter(&self) -> Promoter {
        Promoter {
            user_id: self.user,
            key_id: Uuid::new_v4(),
            key_name: "test".into(),
            key_prefix: "gpd_test".into(),
        }
    }
}

fn event(json: serde_json::Value) -> ProgressEvent {
    serde_json::from_value(json).unwrap()
}

gepard_store::conformance_tests! {
    async fn many_concurrent_claimers_each_get_a_different_job_and_every_job_is_claimed_once(db) {
        let f = Arc::new(fixture(db.store().await).await);
        let mut submitted = HashSet::new();
        for i in 0..24 {
            submitted.insert(f.submit(&format!("job {i}")).await);
        }
        // Two pools, as two worker processes would have, eight claimers each.
        let other = Arc::new(db.store().await);
        let claimers: Vec<_> = (0..16)
            .map(|c| {
                let store = if c % 2 == 0 { f.store.clone() } else { (*other).clone() };
                tokio::spawn(async move {
                    let n = LocalNotifier::default();
                    let mut mine = Vec::new();
                    while let Some(claimed) = store
                        .claim_next(&n, &format!("worker-{c}"), Duration::from_secs(60))
                        .await
                        .unwrap()
                    {
                        assert_eq!(claimed.job.status, JobStatus::Running);
                        mine.push((claimed.job.id, claimed.lease_token));
                    }
                    mine
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for c in claimers {
            claimed.extend(c.await.unwrap());
        }
        let distinct: HashSet<Uuid> = claimed.iter().map(|(id, _)| *id).collect();
        assert_eq!(claimed.len(), 24, "every job claimed exactly once: {claimed:?}");
        assert_eq!(distinct, submitted);
        for (id, token) in claimed {
            assert_eq!(token, 1, "a first claim takes the first token");
            let logs = f.store.job_logs(id, 0, 100).await.unwrap();
            let started = logs.iter().filter(|l| l.entry.message == "started").count();
            assert_eq!(started, 1, "one claim, one start line");
        }
    }

    async fn a_worker_attempt_that_starts_over_keeps_the_model_calls_its_lost_runner_paid_for(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("lost before its first checkpoint").await;
        let first = f.store.claim_next(&n, "old", SHORT).await.unwrap().unwrap();
        let paid = JobUsage { metric_calls: 4, model_calls: 5, input_tokens: 50, output_tokens: 7 };
        assert!(f.store.set_usage(id, first.lease_token, &paid).await.unwrap());
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), vec![id]);
        // No checkpoint: the next worker starts the attempt over, its budget from zero.
        let second = f.store.claim_next(&n, "new", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(
            second.job.usage,
            JobUsage { metric_calls: 0, ..paid },
            "the calls were paid for; only the run's budget restarts"
        );
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        assert!(logs.iter().any(|l| l.entry.message.starts_with("this attempt starts over")));
    }

    async fn a_stale_lease_token_changes_nothing(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("fenced").await;
        let first = f.store.claim_next(&n, "old", SHORT).await.unwrap().unwrap();
        // The old worker's lease expires; the reaper requeues the job and a new worker takes it.
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), vec![id]);
        let second = f.store.claim_next(&n, "new", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(second.job.id, id);
        assert!(second.lease_token > first.lease_token);

        let stale = first.lease_token;
        let err = f
            .store
            .ingest_progress(&n, id, &event(json!({"event_type": "optimization_end", "message": "from the stale worker"})), Some(stale))
            .await
            .unwrap_err();
        assert!(matches!(err, LifecycleError::Fenced(j) if j == id), "{err}");
        assert!(!f.store.renew_lease(id, stale, Duration::from_secs(60)).await.unwrap());
        assert!(!f.store.save_checkpoint(id, 1, stale, 3, Duration::from_secs(1), "stale").await.unwrap());
        assert!(!f.store.save_candidate(id, 1, stale, 0, &json!({"index": 0})).await.unwrap());
        assert!(!f.store.set_usage(id, stale, &Default::default()).await.unwrap());
        assert!(matches!(
            f.store.runner_command(&n, id, stale, &JobCommand::RunnerStopped).await,
            Err(LifecycleError::Fenced(_))
        ));
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running, "the new worker still runs it");
        assert!(f.store.checkpoint(id, 1).await.unwrap().is_none());
        assert!(f.store.candidates(id, 1).await.unwrap().is_empty());
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        assert!(logs.iter().all(|l| l.entry.message != "from the stale worker"));

        // The current holder's writes go through.
        let current = second.lease_token;
        assert!(f.store.renew_lease(id, current, Duration::from_secs(60)).await.unwrap());
        assert!(f.store.save_checkpoint(id, 1, current, 3, Duration::from_millis(2500), "fresh").await.unwrap());
        let saved = f.store.checkpoint(id, 1).await.unwrap().unwrap();
        assert_eq!(saved.data, "fresh");
        assert_eq!(saved.run_time, Some(Duration::from_millis(2500)), "the running time comes back");
        assert!(!f.store.rewind_metrics_to_checkpoint(id, 1, stale).await.unwrap());
    }

    async fn a_report_from_outside_is_refused_while_a_worker_holds_the_job(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("held").await;
        let claimed = f.store.claim_next(&n, "w1", Duration::from_secs(60)).await.unwrap().unwrap();
        let forged = event(json!({"event_type": "optimization_end", "message": "forged",
            "summary": {"best_score": 1.0, "best_candidate": {"instructions": "forged"}}}));
        let err = f.store.ingest_progress(&n, id, &forged, None).await.unwrap_err();
        assert!(
            matches!(&err, LifecycleError::HeldByWorker { job, worker } if *job == id && worker == "w1"),
            "{err}"
        );
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running, "the forged end changed nothing");
        assert_eq!(job.summary.best_score, None);
        // The worker's own report, with its token, goes through.
        let own = event(json!({"event_type": "iteration_start", "message": "from the worker"}));
        f.store.ingest_progress(&n, id, &own, Some(claimed.lease_token)).await.unwrap();
    }

    async fn a_runtime_claims_a_queued_job_with_its_first_report_and_only_it_reports_after(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("outside").await;
        let (a, b) = (gepard_store::runtime_owner(Uuid::new_v4()), gepard_store::runtime_owner(Uuid::new_v4()));
        let lease = Duration::from_secs(60);

        // A malformed first report claims nothing.
        let bad = event(json!({"event_type": "budget_updated", "summary": 5}));
        let err = f.store.ingest_runtime_progress(&n, id, &bad, &a, lease).await.unwrap_err();
        assert!(matches!(err, LifecycleError::Invalid(_)), "{err}");
        assert_eq!(f.store.job_by_id(id).await.unwrap().unwrap().status, JobStatus::Queued);

        let first = event(json!({"event_type": "optimization_start", "message": "runtime up",
            "summary": {"train_size": 60, "val_size": 60}}));
        let job = f.store.ingest_runtime_progress(&n, id, &first, &a, lease).await.unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert!(job.started_at.is_some());
        assert_eq!(job.summary.train_size, Some(60), "the claiming report is applied too");
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        let lines: Vec<_> = logs.iter().map(|l| l.entry.message.as_str()).collect();
        assert_eq!(lines, ["started", "runtime up"]);
        assert_eq!(logs[0].entry.data["runner"], a.as_str(), "the start line names the holder");

        // Another runtime's report, and a report without a lease (the old outside path), are
        // refused and change nothing; a worker finds nothing to claim.
        let forged = event(json!({"event_type": "optimization_end",
            "summary": {"best_score": 1.0, "best_candidate": {"instructions": "forged"}}}));
        let err = f.store.ingest_runtime_progress(&n, id, &forged, &b, lease).await.unwrap_err();
        assert!(matches!(&err, LifecycleError::HeldByWorker { worker, .. } if *worker == a), "{err}");
        assert!(err.to_string().contains("the runtime using API key"), "{err}");
        let err = f.store.ingest_progress(&n, id, &forged, None).await.unwrap_err();
        assert!(matches!(err, LifecycleError::HeldByWorker { .. }), "{err}");
        assert!(f.store.claim_next(&n, "w", lease).await.unwrap().is_none());
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!((job.status, job.summary.best_score), (JobStatus::Running, None));

        // The holder ends it.
        let end = event(json!({"event_type": "optimization_end", "summary": {"best_score": 0.75}}));
        let job = f.store.ingest_runtime_progress(&n, id, &end, &a, lease).await.unwrap();
        assert_eq!((job.status, job.summary.best_score), (JobStatus::Completed, Some(0.75)));
        let late = event(json!({"event_type": "budget_updated"}));
        let err = f.store.ingest_runtime_progress(&n, id, &late, &a, lease).await.unwrap_err();
        assert!(matches!(err, LifecycleError::Illegal(_)), "a finished job takes no more: {err}");
    }

    async fn a_runtime_cannot_take_or_report_for_a_job_a_worker_holds(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("worker's").await;
        f.store.claim_next(&n, "w1", Duration::from_secs(60)).await.unwrap().unwrap();
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let report = event(json!({"event_type": "optimization_start"}));
        let err = f.store.ingest_runtime_progress(&n, id, &report, &runtime, Duration::from_secs(60)).await.unwrap_err();
        assert!(matches!(&err, LifecycleError::HeldByWorker { worker, .. } if worker == "w1"), "{err}");
        assert!(err.to_string().contains("worker `w1`"), "{err}");
    }

    async fn only_optimization_start_claims_a_queued_job(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("broken at start").await;
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let lease = Duration::from_secs(60);
        let error = event(json!({"event_type": "optimization_error", "error": "sandbox image not found"}));
        let err = f.store.ingest_runtime_progress(&n, id, &error, &runtime, lease).await.unwrap_err();
        assert!(err.to_string().contains("starts it with `optimization_start`"), "{err}");
        assert_eq!(f.store.job_by_id(id).await.unwrap().unwrap().status, JobStatus::Queued);
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_start"})), &runtime, lease).await.unwrap();
        let job = f.store.ingest_runtime_progress(&n, id, &error, &runtime, lease).await.unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error.as_deref(), Some("sandbox image not found"));
        assert!(f.store.reap_expired_leases(&n).await.unwrap().is_empty(), "a finished job holds no lease");
    }

    async fn a_second_start_under_the_same_key_is_refused_so_one_job_never_runs_twice(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("one run").await;
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let start = event(json!({"event_type": "optimization_start"}));
        let lease = Duration::from_secs(60);
        f.store.ingest_runtime_progress(&n, id, &start, &runtime, lease).await.unwrap();
        let err = f.store.ingest_runtime_progress(&n, id, &start, &runtime, lease).await.unwrap_err();
        assert!(err.to_string().contains("already running under this key"), "{err}");
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        assert_eq!(logs.iter().filter(|l| l.entry.message == "started").count(), 1);
        // Its other reports go on.
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "iteration_start"})), &runtime, lease).await.unwrap();
    }

    async fn a_runtime_that_lost_its_job_cannot_write_into_the_next_run(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("lost").await;
        let (stale, fresh) = (gepard_store::runtime_owner(Uuid::new_v4()), gepard_store::runtime_owner(Uuid::new_v4()));
        let lease = Duration::from_secs(60);
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_start", "attempt": 1})), &stale, SHORT).await.unwrap();
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "valset_evaluated", "attempt": 1,
            "summary": {"best_score": 0.7, "best_candidate": {"instructions": "stale"}},
            "metrics": {"val_score": [{"value": 0.7, "step": 1}]}})), &stale, SHORT).await.unwrap();
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), [id]);

        // Back in the queue, the lost run's reports claim nothing.
        let late = event(json!({"event_type": "candidate_accepted", "summary": {"best_score": 0.9, "best_candidate": {"instructions": "late"}}}));
        let err = f.store.ingest_runtime_progress(&n, id, &late, &stale, lease).await.unwrap_err();
        assert!(matches!(err, LifecycleError::Illegal(_)), "{err}");
        // A new runtime starts the attempt over: the lost run's results are gone.
        let job = f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_start"})), &fresh, lease).await.unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.summary.best_score, None, "{:?}", job.summary);
        assert!(job.metrics.is_empty(), "{:?}", job.metrics);
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        assert!(logs.iter().any(|l| l.entry.message.starts_with("this attempt starts over")));
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "valset_evaluated",
            "metrics": {"val_score": [{"value": 0.4, "step": 0}]}})), &fresh, lease).await.unwrap();
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        let steps: Vec<i64> = job.metrics["val_score"].iter().map(|p| p.step).collect();
        assert_eq!(steps, [0], "the new run's series only");

        // After a cancel and a retry, a report naming the old attempt is refused even with
        // the holder's key.
        f.store.job_command(&n, f.ws, id, &JobCommand::RequestCancel).await.unwrap();
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_end"})), &fresh, lease).await.unwrap();
        f.store.job_command(&n, f.ws, id, &JobCommand::Retry).await.unwrap();
        let old = event(json!({"event_type": "optimization_start", "attempt": 1}));
        let err = f.store.ingest_runtime_progress(&n, id, &old, &fresh, lease).await.unwrap_err();
        assert!(err.to_string().contains("about attempt 1, but job"), "{err}");
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!((job.status, job.attempt), (JobStatus::Queued, 2));
        let current = event(json!({"event_type": "optimization_start", "attempt": 2}));
        assert_eq!(f.store.ingest_runtime_progress(&n, id, &current, &fresh, lease).await.unwrap().status, JobStatus::Running);
    }

    async fn a_runtime_ending_its_run_after_a_cancel_request_ends_the_job_cancelled_with_its_best(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("cancelled outside").await;
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let lease = Duration::from_secs(60);
        f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_start"})), &runtime, lease).await.unwrap();
        let job = f.store.job_command(&n, f.ws, id, &JobCommand::RequestCancel).await.unwrap();
        assert_eq!(job.status, JobStatus::Running);
        let end = event(json!({"event_type": "optimization_end", "message": "stopped as asked",
            "summary": {"best_score": 0.6, "best_candidate": {"instructions": "best so far"}}}));
        let job = f.store.ingest_runtime_progress(&n, id, &end, &runtime, lease).await.unwrap();
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(job.summary.best_score, Some(0.6), "the best result so far is kept");
        assert!(job.completed_at.is_some());
    }

    async fn each_runtime_report_renews_its_lease_and_a_silent_runtime_loses_the_job(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("silent").await;
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let start = event(json!({"event_type": "optimization_start"}));
        let report = event(json!({"event_type": "iteration_start"}));
        f.store.ingest_runtime_progress(&n, id, &start, &runtime, SHORT).await.unwrap();
        let_short_leases_expire().await;
        // A report renews the lease by the runtime's length, whatever it was before.
        f.store.ingest_runtime_progress(&n, id, &report, &runtime, Duration::from_secs(60)).await.unwrap();
        assert!(f.store.reap_expired_leases(&n).await.unwrap().is_empty(), "renewed by the report");
        // Silence: the lease runs out and the job is queued again for anyone to take.
        f.store.ingest_runtime_progress(&n, id, &report, &runtime, SHORT).await.unwrap();
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), [id]);
        assert_eq!(f.store.job_by_id(id).await.unwrap().unwrap().status, JobStatus::Queued);
        // The runtime comes back and starts again: it claims the job anew.
        let job = f.store.ingest_runtime_progress(&n, id, &start, &runtime, Duration::from_secs(60)).await.unwrap();
        assert_eq!(job.status, JobStatus::Running);
        // After a cancel request, silence ends the job cancelled.
        f.store.job_command(&n, f.ws, id, &JobCommand::RequestCancel).await.unwrap();
        f.store.ingest_runtime_progress(&n, id, &report, &runtime, SHORT).await.unwrap();
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), [id]);
        assert_eq!(f.store.job_by_id(id).await.unwrap().unwrap().status, JobStatus::Cancelled);
    }

    async fn a_runtime_report_after_the_time_limit_ends_the_run_failed_keeping_its_result(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let mut job = f.new_job("slow outside");
        job.spec.config["max_runtime_sec"] = json!(1);
        let Created::New(job) = f.store.create_job(job, None).await.unwrap() else { panic!("new") };
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let lease = Duration::from_secs(60);
        let start = event(json!({"event_type": "optimization_start"}));
        assert_eq!(f.store.ingest_runtime_progress(&n, job.id, &start, &runtime, lease).await.unwrap().status, JobStatus::Running);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let late = event(json!({"event_type": "valset_evaluated",
            "summary": {"best_score": 0.6, "best_candidate": {"instructions": "good enough"}}}));
        let ended = f.store.ingest_runtime_progress(&n, job.id, &late, &runtime, lease).await.unwrap();
        assert_eq!(ended.status, JobStatus::Failed);
        assert_eq!(ended.error.as_deref(), Some("exceeded max_runtime_sec of 1 s"));
        assert_eq!(ended.summary.best_score, Some(0.6), "the report's result is kept");
        let logs = f.store.job_logs(job.id, 0, 100).await.unwrap();
        assert!(logs.last().unwrap().entry.message.contains("valset_evaluated report came after the limit"));

        // The clock runs from the attempt's first start: a job re-queued after its time was
        // used up fails at its restart.
        let mut job = f.new_job("restarted late");
        job.spec.config["max_runtime_sec"] = json!(1);
        let Created::New(job) = f.store.create_job(job, None).await.unwrap() else { panic!("new") };
        f.store.ingest_runtime_progress(&n, job.id, &start, &runtime, SHORT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), [job.id]);
        let other = gepard_store::runtime_owner(Uuid::new_v4());
        let restarted = f.store.ingest_runtime_progress(&n, job.id, &start, &other, lease).await.unwrap();
        assert_eq!(restarted.status, JobStatus::Failed);
        assert_eq!(restarted.error.as_deref(), Some("exceeded max_runtime_sec of 1 s"));
    }

    async fn a_runtime_end_racing_a_cancel_request_never_ends_the_job_completed_once_the_cancel_landed(db) {
        let f = fixture(db.store().await).await;
        let other = db.store().await;
        let lease = Duration::from_secs(60);
        for round in 0..12 {
            let id = f.submit(&format!("race {round}")).await;
            let runtime = gepard_store::runtime_owner(Uuid::new_v4());
            let n = LocalNotifier::default();
            f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_start"})), &runtime, lease).await.unwrap();
            let (store, ws) = (other.clone(), f.ws);
            let cancel = tokio::spawn(async move {
                store.job_command(&LocalNotifier::default(), ws, id, &JobCommand::RequestCancel).await
            });
            let end = f.store.ingest_runtime_progress(&n, id, &event(json!({"event_type": "optimization_end"})), &runtime, lease).await;
            let cancel = cancel.await.unwrap();
            let job = f.store.job_by_id(id).await.unwrap().unwrap();
            // Either the end came first (completed; the cancel then finds a finished job), or
            // the cancel did and the end says the runtime stopped (cancelled).
            match job.status {
                JobStatus::Completed => assert!(cancel.is_err() && job.cancel_requested_at.is_none(), "round {round}: {cancel:?}"),
                JobStatus::Cancelled => assert!(cancel.is_ok() && end.is_ok(), "round {round}"),
                other => panic!("round {round}: {other:?}"),
            }
        }
    }

    async fn a_worker_taking_over_an_attempt_with_no_checkpoint_starts_it_over(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("crashed early").await;
        let first = f.store.claim_next(&n, "dead", SHORT).await.unwrap().unwrap();
        let seed = event(json!({"event_type": "valset_evaluated", "summary": {"best_score": 0.2, "best_candidate": {"instructions": "seed"}},
            "metrics": {"val_score": [{"value": 0.2, "step": 0}]}}));
        f.store.ingest_progress(&n, id, &seed, Some(first.lease_token)).await.unwrap();
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), [id]);
        // It died before its first checkpoint: the next worker runs the seed again, and the
        // series must hold that run's points only.
        let second = f.store.claim_next(&n, "alive", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(second.job.summary.best_score, None);
        assert!(second.job.metrics.is_empty(), "{:?}", second.job.metrics);
        f.store.ingest_progress(&n, id, &seed, Some(second.lease_token)).await.unwrap();
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!(job.metrics["val_score"].len(), 1);
    }

    async fn runtimes_racing_for_one_queued_job_leave_exactly_one_holder(db) {
        let f = fixture(db.store().await).await;
        let id = f.submit("contested").await;
        let other = db.store().await;
        let racers: Vec<_> = (0..8)
            .map(|r| {
                let store = if r % 2 == 0 { f.store.clone() } else { other.clone() };
                let owner = gepard_store::runtime_owner(Uuid::new_v4());
                tokio::spawn(async move {
                    let report = event(json!({"event_type": "optimization_start", "message": owner}));
                    let got = store
                        .ingest_runtime_progress(&LocalNotifier::default(), id, &report, &owner, Duration::from_secs(60))
                        .await;
                    (owner, got)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for r in racers {
            let (owner, got) = r.await.unwrap();
            match got {
                Ok(job) => {
                    assert_eq!(job.status, JobStatus::Running);
                    winners.push(owner);
                }
                Err(LifecycleError::HeldByWorker { worker, .. }) => assert_ne!(worker, owner),
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        let lines: Vec<_> = logs.iter().map(|l| l.entry.message.as_str()).collect();
        assert_eq!(lines, ["started", winners[0].as_str()], "one start, and only the winner's report");
    }

    async fn a_submission_note_lands_even_when_a_worker_claimed_the_job_first(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let Created::New(created) = f.store.create_job(f.new_job("noted"), None).await.unwrap() else { panic!("new") };
        // The server notes what the submission resolved after the insert committed, and a
        // worker polling the queue can claim the job in between.
        f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap();
        let note = "max_metric_calls 40 covers the seed evaluation only".to_owned();
        let job = f.store.note_job(&n, &created, std::slice::from_ref(&note)).await.unwrap();
        assert_eq!(job.status, JobStatus::Running, "the note changed nothing else");
        let logs = f.store.job_logs(job.id, 0, 100).await.unwrap();
        let lines: Vec<_> = logs.iter().map(|l| l.entry.message.as_str()).collect();
        assert_eq!(lines, ["started", note.as_str()]);
    }

    async fn a_jobs_revision_grows_with_every_change_a_watcher_can_see(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("revised").await;
        let revision = || async { f.store.job_with_revision(f.ws, id).await.unwrap().unwrap().1 };
        let mut seen = vec![revision().await];
        let claimed = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap();
        seen.push(revision().await);
        let report = event(json!({"event_type": "valset_evaluated", "summary": {"best_score": 0.5}}));
        f.store.ingest_progress(&n, id, &report, Some(claimed.lease_token)).await.unwrap();
        seen.push(revision().await);
        let usage = gepard_core::model::JobUsage { metric_calls: 3, ..Default::default() };
        assert!(f.store.set_usage(id, claimed.lease_token, &usage).await.unwrap());
        seen.push(revision().await);
        f.store.job_command(&n, f.ws, id, &JobCommand::RequestCancel).await.unwrap();
        seen.push(revision().await);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        // A renewal changes nothing the job record shows.
        assert!(f.store.renew_lease(id, claimed.lease_token, Duration::from_secs(60)).await.unwrap());
        assert_eq!(revision().await, *seen.last().unwrap());
    }

    async fn a_series_reported_out_of_step_order_reads_in_step_order_alone_and_in_a_listing(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("parallel points").await;
        let claimed = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap();
        for step in [3, 1, 2] {
            let report = event(json!({"event_type": "budget_updated",
                "metrics": {"metric_calls_used": [{"value": step, "step": step}]}}));
            f.store.ingest_progress(&n, id, &report, Some(claimed.lease_token)).await.unwrap();
        }
        let steps = |job: &Job| job.metrics["metric_calls_used"].iter().map(|p| p.step).collect::<Vec<_>>();
        assert_eq!(steps(&f.store.job_by_id(id).await.unwrap().unwrap()), [1, 2, 3]);
        let listed = f.store.list_jobs(f.ws, &Default::default(), gepard_core::PageRequest::new(None, None).unwrap()).await.unwrap();
        let job = listed.items.iter().find(|j| j.id == id).unwrap();
        assert_eq!(steps(job), [1, 2, 3]);
    }

    async fn an_outside_runtimes_report_that_would_take_an_attempt_beyond_its_metric_point_limit_is_refused_whole(db) {
        let f = fixture(db.store().await.with_max_metric_points_per_attempt(5)).await;
        let n = LocalNotifier::default();
        let report = |steps: std::ops::Range<i64>| event(json!({"event_type": "budget_updated",
            "message": "points", "metrics": {"metric_calls_used":
                steps.map(|s| json!({"value": s, "step": s})).collect::<Vec<_>>()}}));
        let points = |job: Job| job.metrics["metric_calls_used"].len();
        // An outside runtime (a runner key) is held to the limit.
        let id = f.submit("many points").await;
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let lease = Duration::from_secs(60);
        let start = event(json!({"event_type": "optimization_start"}));
        f.store.ingest_runtime_progress(&n, id, &start, &runtime, lease).await.unwrap();
        f.store.ingest_runtime_progress(&n, id, &report(0..3), &runtime, lease).await.unwrap();
        let logs_before = f.store.log_seq(id).await.unwrap();
        let err = f.store.ingest_runtime_progress(&n, id, &report(3..6), &runtime, lease).await.unwrap_err();
        match err {
            gepard_store::LifecycleError::Invalid(errors) => {
                assert_eq!(errors[0].loc, ["body", "metrics"]);
                assert!(errors[0].msg.contains("already holds 3 metric points") && errors[0].msg.contains("at most 5"), "{}", errors[0].msg);
            }
            other => panic!("{other:?}"),
        }
        // Nothing of the refused report was stored: neither its points nor its log entry.
        assert_eq!(points(f.store.job_by_id(id).await.unwrap().unwrap()), 3);
        assert_eq!(f.store.log_seq(id).await.unwrap(), logs_before);
        // Up to the limit is fine.
        f.store.ingest_runtime_progress(&n, id, &report(3..5), &runtime, lease).await.unwrap();
        assert_eq!(points(f.store.job_by_id(id).await.unwrap().unwrap()), 5);
        // gepard's own runner is not: a long run with a budget the API accepts may go past it,
        // and its reports carry the log and the summary.
        let own = f.submit("own runner").await;
        let claimed = f.store.claim_next(&n, "w", lease).await.unwrap().unwrap();
        assert_eq!(claimed.job.id, own);
        for steps in [0..4, 4..8] {
            f.store.ingest_progress(&n, own, &report(steps), Some(claimed.lease_token)).await.unwrap();
        }
        assert_eq!(points(f.store.job_by_id(own).await.unwrap().unwrap()), 8);
    }

    async fn concurrent_reports_from_one_runtime_each_keep_their_summary_fields(db) {
        let f = fixture(db.store().await).await;
        let id = f.submit("parallel reports").await;
        let other = db.store().await;
        let runtime = gepard_store::runtime_owner(Uuid::new_v4());
        let lease = Duration::from_secs(60);
        let start = event(json!({"event_type": "optimization_start"}));
        f.store.ingest_runtime_progress(&LocalNotifier::default(), id, &start, &runtime, lease).await.unwrap();
        // Each report patches a field of its own; two that read the same summary must not
        // both write it, or the later write drops the earlier one's field. More reports at
        // once than a writer retries a lost compare-and-set: none may fail for that.
        let reports: Vec<_> = (0..24)
            .map(|r| {
                let store = if r % 2 == 0 { f.store.clone() } else { other.clone() };
                let runtime = runtime.clone();
                tokio::spawn(async move {
                    let report = event(json!({"event_type": "budget_updated", "message": format!("report {r}"),
                        "summary": {"metadata": {format!("r{r}"): r}}}));
                    store.ingest_runtime_progress(&LocalNotifier::default(), id, &report, &runtime, lease).await
                })
            })
            .collect();
        for r in reports {
            r.await.unwrap().unwrap();
        }
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        let kept: Vec<i64> = (0..24).filter(|r| job.summary.metadata.get(format!("r{r}")).is_some()).collect();
        assert_eq!(kept, (0..24).collect::<Vec<_>>(), "{}", job.summary.metadata);
        assert_eq!(f.store.job_logs(id, 0, 100).await.unwrap().len(), 26, "a start line and one line per report");
    }

    async fn a_resume_drops_the_metric_points_written_after_the_checkpoint(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("resumed").await;
        let token = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap().lease_token;
        let point = |calls: u64| {
            event(json!({"event_type": "budget_updated", "metrics": {"metric_calls_used": [{"value": calls, "step": calls}]}}))
        };
        for calls in [10, 20] {
            f.store.ingest_progress(&n, id, &point(calls), Some(token)).await.unwrap();
        }
        assert!(f.store.save_checkpoint(id, 1, token, 1, Duration::ZERO, "{}").await.unwrap());
        // The runner goes on, then dies: these two points belong to work the resume redoes.
        for calls in [23, 26] {
            f.store.ingest_progress(&n, id, &point(calls), Some(token)).await.unwrap();
        }
        assert!(f.store.rewind_metrics_to_checkpoint(id, 1, token).await.unwrap());
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        let kept: Vec<f64> = job.metrics["metric_calls_used"].iter().map(|p| p.value).collect();
        assert_eq!(kept, [10.0, 20.0]);
        // Redone work appends after the kept points.
        f.store.ingest_progress(&n, id, &point(23), Some(token)).await.unwrap();
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!(job.metrics["metric_calls_used"].len(), 3);
    }

    async fn a_resume_drops_candidates_found_after_the_checkpoint_and_a_number_keeps_one_text(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("resumed with candidates").await;
        let token = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap().lease_token;
        let candidate = |index: i64, iteration: i64, text: &str| {
            json!({"index": index, "iteration": iteration, "instructions": text, "parents": [], "val_score": 0.5})
        };
        for (index, iteration, text) in [(0, 0, "seed"), (1, 1, "first child")] {
            assert!(f.store.save_candidate(id, 1, token, index, &candidate(index, iteration, text)).await.unwrap());
        }
        assert!(f.store.save_checkpoint(id, 1, token, 1, Duration::ZERO, "{}").await.unwrap());
        // Found in iteration 2, stored, and then the runner died before its checkpoint.
        assert!(f.store.save_candidate(id, 1, token, 2, &candidate(2, 2, "lost child")).await.unwrap());
        // The same candidate again is accepted; another text under its number is not.
        assert!(f.store.save_candidate(id, 1, token, 1, &candidate(1, 1, "first child")).await.unwrap());
        let err = f.store.save_candidate(id, 1, token, 1, &candidate(1, 1, "rewritten")).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("candidate 1 of attempt 1 was already reported with other instructions"), "{err}");

        assert!(f.store.rewind_metrics_to_checkpoint(id, 1, token).await.unwrap());
        let texts = |cs: Vec<serde_json::Value>| -> Vec<String> {
            cs.iter().map(|c| c["instructions"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(texts(f.store.candidates(id, 1).await.unwrap()), ["seed", "first child"]);
        // The resumed run finds its own candidate 2.
        assert!(f.store.save_candidate(id, 1, token, 2, &candidate(2, 2, "resumed child")).await.unwrap());
        assert_eq!(texts(f.store.candidates(id, 1).await.unwrap()), ["seed", "first child", "resumed child"]);
    }

    async fn a_store_that_read_a_series_sees_it_rewound_and_rewritten_by_another_process(db) {
        // `reader` is a server watching the job; the worker's store writes, and after a crash
        // another worker rewinds to the checkpoint and redoes the work with new values, taking
        // the same point sequence numbers again.
        let f = fixture(db.store().await).await;
        let reader = db.store().await;
        let n = LocalNotifier::default();
        let id = f.submit("watched").await;
        let token = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap().lease_token;
        let point = |calls: u64| {
            event(json!({"event_type": "budget_updated", "metrics": {"metric_calls_used": [{"value": calls, "step": calls}]}}))
        };
        let series = |job: Job| -> Vec<f64> { job.metrics["metric_calls_used"].iter().map(|p| p.value).collect() };
        // Read after every write, as a live page does: each read extends the last one.
        let mut written = Vec::new();
        for calls in 1..=30 {
            f.store.ingest_progress(&n, id, &point(calls), Some(token)).await.unwrap();
            written.push(calls as f64);
            assert_eq!(series(reader.job_by_id(id).await.unwrap().unwrap()), written);
        }
        assert!(f.store.save_checkpoint(id, 1, token, 1, Duration::ZERO, "{}").await.unwrap());
        for calls in [31, 32] {
            f.store.ingest_progress(&n, id, &point(calls), Some(token)).await.unwrap();
        }
        assert_eq!(series(reader.job_by_id(id).await.unwrap().unwrap()).len(), 32);
        assert!(f.store.rewind_metrics_to_checkpoint(id, 1, token).await.unwrap());
        for calls in [131, 132] {
            f.store.ingest_progress(&n, id, &point(calls), Some(token)).await.unwrap();
        }
        let mut expected: Vec<f64> = (1..=30).map(f64::from).collect();
        expected.extend([131.0, 132.0]);
        assert_eq!(series(reader.job_by_id(id).await.unwrap().unwrap()), expected, "not the points the rewind removed");
        assert_eq!(series(db.store().await.job_by_id(id).await.unwrap().unwrap()), expected);
        assert_eq!(series(f.store.job_by_id(id).await.unwrap().unwrap()), expected);
    }

    async fn concurrent_reapers_requeue_an_expired_job_once(db) {
        let f = Arc::new(fixture(db.store().await).await);
        let n = LocalNotifier::default();
        let ids = [f.submit("a").await, f.submit("b").await, f.submit("c").await];
        for _ in ids {
            f.store.claim_next(&n, "dead", SHORT).await.unwrap().unwrap();
        }
        let_short_leases_expire().await;
        let other = db.store().await;
        let reapers: Vec<_> = (0..6)
            .map(|r| {
                let store = if r % 2 == 0 { f.store.clone() } else { other.clone() };
                tokio::spawn(async move {
                    store.reap_expired_leases(&LocalNotifier::default()).await.unwrap()
                })
            })
            .collect();
        let mut reaped = Vec::new();
        for r in reapers {
            reaped.extend(r.await.unwrap());
        }
        reaped.sort();
        let mut expected = ids.to_vec();
        expected.sort();
        assert_eq!(reaped, expected, "each expired job reaped exactly once");
        for id in ids {
            let job = f.store.job_by_id(id).await.unwrap().unwrap();
            assert_eq!(job.status, JobStatus::Queued);
            let logs = f.store.job_logs(id, 0, 100).await.unwrap();
            let requeued = logs.iter().filter(|l| l.entry.message.contains("lease expired")).count();
            assert_eq!(requeued, 1);
        }
    }

    async fn the_log_says_whether_a_lost_or_returned_job_was_queued_again_or_cancelled(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let last_log = |id| {
            let store = f.store.clone();
            async move {
                let logs = store.job_logs(id, 0, 100).await.unwrap();
                logs.last().unwrap().entry.message.clone()
            }
        };

        // A lease that expires after a cancel request ends the job cancelled, and says so.
        let expired = f.submit("expired").await;
        f.store.claim_next(&n, "dead", SHORT).await.unwrap().unwrap();
        f.store.job_command(&n, f.ws, expired, &JobCommand::RequestCancel).await.unwrap();
        let_short_leases_expire().await;
        assert_eq!(f.store.reap_expired_leases(&n).await.unwrap(), [expired]);
        assert_eq!(f.store.job_by_id(expired).await.unwrap().unwrap().status, JobStatus::Cancelled);
        assert_eq!(last_log(expired).await, "cancelled: the lease expired after the cancel request (its worker or runtime went silent)");

        // A worker giving its job back requeues it with its own line, not a lease expiry.
        let given = f.submit("given back").await;
        let token = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap().lease_token;
        f.store.runner_command(&n, given, token, &JobCommand::Release).await.unwrap();
        assert_eq!(f.store.job_by_id(given).await.unwrap().unwrap().status, JobStatus::Queued);
        let line = last_log(given).await;
        assert_eq!(line, "the worker gave the job back; it is queued again to resume from its last checkpoint");
        // With a cancel pending, giving it back ends it cancelled.
        let token = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap().lease_token;
        f.store.job_command(&n, f.ws, given, &JobCommand::RequestCancel).await.unwrap();
        f.store.runner_command(&n, given, token, &JobCommand::Release).await.unwrap();
        assert_eq!(f.store.job_by_id(given).await.unwrap().unwrap().status, JobStatus::Cancelled);
        assert_eq!(last_log(given).await, "cancelled: the worker stopped the runtime after the cancel request");
    }

    async fn a_renewed_lease_is_not_reaped(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("alive").await;
        let claimed = f.store.claim_next(&n, "w", SHORT).await.unwrap().unwrap();
        let_short_leases_expire().await;
        assert!(f.store.renew_lease(id, claimed.lease_token, Duration::from_secs(60)).await.unwrap());
        assert!(f.store.reap_expired_leases(&n).await.unwrap().is_empty());
        assert_eq!(f.store.job_by_id(id).await.unwrap().unwrap().status, JobStatus::Running);
    }

    async fn concurrent_commands_on_one_job_apply_in_some_order_and_never_both_from_one_state(db) {
        let f = Arc::new(fixture(db.store().await).await);
        let id = f.submit("raced").await;
        // Cancel (queued → cancelled) races claims (queued → running): either the job is
        // cancelled and nobody holds it, or exactly one worker holds it with a cancel pending.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let f = f.clone();
                tokio::spawn(async move {
                    let n = LocalNotifier::default();
                    if i % 2 == 0 {
                        f.store.job_command(&n, f.ws, id, &JobCommand::RequestCancel).await.map(|_| None)
                    } else {
                        f.store
                            .claim_next(&n, &format!("w{i}"), Duration::from_secs(60))
                            .await
                            .map(|c| c.map(|c| c.lease_token))
                    }
                })
            })
            .collect();
        let mut claims = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(Some(_)) => claims += 1,
                Ok(None) | Err(LifecycleError::Illegal(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        match job.status {
            JobStatus::Cancelled => assert_eq!(claims, 0, "a cancelled queued job is never claimed"),
            JobStatus::Running => {
                assert_eq!(claims, 1);
                assert!(job.cancel_requested_at.is_some(), "the cancel after the claim is recorded");
            }
            other => panic!("unexpected {other:?}"),
        }
        let logs = f.store.job_logs(id, 0, 100).await.unwrap();
        let seqs: Vec<i64> = logs.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, (1..=logs.len() as i64).collect::<Vec<_>>(), "log sequence has no gaps or repeats");
    }

    async fn concurrent_submits_with_one_idempotency_key_create_one_job(db) {
        let f = Arc::new(fixture(db.store().await).await);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move {
                    let key = IdempotencyKey { key: "k-1".into(), request_hash: "h".into() };
                    f.store.create_job(f.new_job("once"), Some(key)).await.unwrap()
                })
            })
            .collect();
        let mut ids = HashSet::new();
        let mut new = 0;
        for t in tasks {
            match t.await.unwrap() {
                Created::New(job) => {
                    new += 1;
                    ids.insert(job.id);
                }
                Created::Replayed(job) => {
                    ids.insert(job.id);
                }
            }
        }
        assert_eq!((new, ids.len()), (1, 1), "one job, the rest replays of it");
        let key = IdempotencyKey { key: "k-1".into(), request_hash: "other".into() };
        assert!(matches!(
            f.store.create_job(f.new_job("other"), Some(key)).await,
            Err(StoreError::Conflict(m)) if m.contains("different request body")
        ));
    }

    async fn concurrent_promotions_of_one_job_write_exactly_one_version(db) {
        let f = Arc::new(fixture(db.store().await).await);
        let id = f.completed_job().await;
        let other = db.store().await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let f = f.clone();
                let store = if i % 2 == 0 { f.store.clone() } else { other.clone() };
                tokio::spawn(async move {
                    let req = PromotionRequest { org_id: f.org, workspace_id: f.ws, job_id: id, name: None, version: None };
                    store.promote_job(&LocalNotifier::default(), &req, &f.promoter()).await
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(v) => {
                    created += 1;
                    assert_eq!(v.version, "1.0.1");
                    assert_eq!(v.agents[0].instructions, BEST);
                }
                Err(StoreError::Conflict(m)) => {
                    assert_eq!(m, format!("job {id} was already promoted to sentiment@1.0.1"));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(created, 1);
        let versions = f.store.list_versions(f.org, ArtifactKind::Capability, "sentiment").await.unwrap().unwrap();
        let listed: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(listed, ["1.0.1", "1.0.0"]);
        let audit = f.store.audit_log(f.org, None, gepard_core::PageRequest::new(None, None).unwrap()).await.unwrap();
        assert_eq!(audit.total, 1);
        let page = || gepard_core::PageRequest::new(None, None).unwrap();
        let own = f.store.audit_log(f.org, Some(f.ws), page()).await.unwrap();
        assert_eq!(own.total, 1, "the promoting workspace sees its entry");
        assert_eq!(own.items.len(), 1);
        let other = f.store.audit_log(f.org, Some(Uuid::new_v4()), page()).await.unwrap();
        assert_eq!((other.total, other.items.len()), (0, 0), "another workspace sees nothing");
        let job = f.store.job_by_id(id).await.unwrap().unwrap();
        assert_eq!(job.artifacts["promoted_versions"].as_array().unwrap().len(), 1);
    }

    async fn concurrent_publishes_of_new_versions_all_land_and_the_highest_is_latest(db) {
        let f = Arc::new(fixture(db.store().await).await);
        let tasks: Vec<_> = (1..=8)
            .map(|minor| {
                let f = f.clone();
                tokio::spawn(async move {
                    let cap = capability(&format!("1.{minor}.0"), &format!("Version {minor}."));
                    f.store.publish_capability(f.org, &cap, None).await.unwrap().is_created()
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        let summary = f.store.artifact(f.org, ArtifactKind::Capability, "sentiment").await.unwrap().unwrap();
        assert_eq!((summary.latest_version.as_str(), summary.version_count), ("1.8.0", 9));
    }

    async fn concurrent_first_publishes_of_one_bundle_create_it_once(db) {
        let store = db.store().await;
        store.bootstrap(&Bootstrap::first_start(ApiKeySecret::generate())).await.unwrap();
        let org = store.org_by_key("local").await.unwrap().unwrap().id;
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.publish_capability(org, &capability("2.0.0", "Same."), None).await.unwrap()
                })
            })
            .collect();
        let mut created = 0;
        let mut ids = HashSet::new();
        for t in tasks {
            let published = t.await.unwrap();
            created += usize::from(published.is_created());
            ids.insert(published.into_inner().id);
        }
        assert_eq!((created, ids.len()), (1, 1));
    }

    async fn servers_starting_together_bootstrap_the_database_once(db) {
        let stores = [db.store().await, db.store().await, db.store().await, db.store().await];
        let tasks: Vec<_> = stores
            .iter()
            .cloned()
            .map(|store| {
                tokio::spawn(async move {
                    store.bootstrap(&Bootstrap::first_start(ApiKeySecret::generate())).await.unwrap()
                })
            })
            .collect();
        let mut firsts = 0;
        for t in tasks {
            firsts += usize::from(t.await.unwrap());
        }
        assert_eq!(firsts, 1);
        let org = stores[0].org_by_key("local").await.unwrap().unwrap();
        assert_eq!(stores[0].list_api_keys(org.id).await.unwrap().len(), 1);
    }

    async fn log_prefix_counts_ignore_case_on_every_backend(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        let id = f.submit("logs").await;
        let claimed = f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap();
        for message in ["Crash: one", "crash: two", "no crash", "CRASH_x"] {
            f.store
                .ingest_progress(&n, id, &event(json!({"event_type": "iteration_start", "iteration": 1, "message": message})), Some(claimed.lease_token))
                .await
                .unwrap();
        }
        assert_eq!(f.store.count_logs_starting_with(id, 1, "crash:").await.unwrap(), 2);
        assert_eq!(f.store.count_logs_starting_with(id, 1, "crash_").await.unwrap(), 1, "`_` is literal");
    }

    async fn job_counts_by_status_group_every_job_by_its_current_status(db) {
        let f = fixture(db.store().await).await;
        let n = LocalNotifier::default();
        assert!(f.store.job_counts_by_status().await.unwrap().is_empty(), "no jobs, no rows");
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(f.submit(&format!("job {i}")).await);
        }
        f.store.job_command(&n, f.ws, ids[0], &JobCommand::RequestCancel).await.unwrap();
        f.store.claim_next(&n, "w", Duration::from_secs(60)).await.unwrap().unwrap();
        let counts = f.store.job_counts_by_status().await.unwrap();
        assert_eq!(
            counts,
            vec![(JobStatus::Cancelled, 1), (JobStatus::Queued, 2), (JobStatus::Running, 1)],
        );
    }
}

/// Longer than the short leases below, so they have expired when the test looks.
async fn let_short_leases_expire() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}
