//! Pins job execution end to end: real workers running real `gepard run-job` child processes
//! against a deterministic fake OpenAI-compatible model on 127.0.0.1, with the real store on a
//! SQLite file: completion with summary, metrics and logs; cancel; a killed sandbox and a dead
//! worker resuming from the checkpoint with the same result; many jobs on several workers each
//! run once; fencing; the runtime limit; a runner that prints garbage; retry from scratch.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gepard_agent::bundle::{Bundle, BundleFile};
use gepard_client::Client;
use gepard_core::job::JobStatus;
use gepard_core::model::Job;
use gepard_store::{Backend, Notifier, Store};
use gepard_worker::{Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_gepard");
const MAGIC: &str = "Answer with exactly one lowercase word.";

/// The fake model: reflection adds the magic sentence; task calls answer correctly only when
/// the system prompt has it. Everything is a function of the request, so runs are repeatable.
/// Gold labels of known goals come from the example datasets; other goals are labelled by
/// their first word.
async fn fake_model(delay: Duration) -> common::FakeModel {
    let mut labels = std::collections::HashMap::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/datasets");
    for split in ["sentiment-train", "sentiment-val"] {
        let text = std::fs::read_to_string(examples.join(split).join("rows.jsonl")).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            labels.insert(
                row["goal"].as_str().unwrap().to_owned(),
                row["expected_output"].as_str().unwrap().to_owned(),
            );
        }
    }
    common::fake_model(delay, move |system, user| {
        if let Some(current) = common::reflection_of(user) {
            if current.contains(MAGIC) {
                format!("```\n{current} Be brief.\n```")
            } else {
                format!("```\n{current} {MAGIC}\n```")
            }
        } else if system.contains(MAGIC) {
            match labels.get(user) {
                Some(label) => label.clone(),
                None if user.starts_with("good") => "positive".into(),
                None => "negative".into(),
            }
        } else {
            "The sentiment is Positive.".to_owned()
        }
    })
    .await
}

struct Env {
    url: String,
    key: String,
    store: Store,
    notifier: Arc<dyn Notifier>,
    client: Client,
    fake: common::FakeModel,
    dir: tempfile::TempDir,
    _database: Option<gepard_store::testing::TestDatabase>,
}

fn files(list: &[(&str, String)]) -> Vec<u8> {
    Bundle::from_files(
        list.iter()
            .map(|(p, t)| BundleFile::new(*p, t.clone().into_bytes()))
            .collect(),
    )
    .to_tar_gz()
}

async fn env(delay: Duration) -> Env {
    env_on(Backend::Sqlite, delay, "")
        .await
        .expect("SQLite is always available")
}

/// [`env`] on `backend`; `None` when the PostgreSQL variant of `test` is skipped.
async fn env_on(backend: Backend, delay: Duration, test: &str) -> Option<Env> {
    let server = common::spawn_server_on(backend, test).await?;
    let client = server.client();
    let cap = files(&[
        (
            "capability.yaml",
            "name: sentiment\nversion: 1.0.0\n".into(),
        ),
        (
            "agents/classifier.md",
            "---\nname: classifier\n---\nClassify the sentiment of the text.\n".into(),
        ),
    ]);
    client.publish_capability("local", cap).await.unwrap();
    for (name, n) in [("train", 9), ("val", 6)] {
        let rows: String = (0..n)
            .map(|i| {
                let (goal, label) = if i % 2 == 0 {
                    (format!("good {name} {i}"), "positive")
                } else {
                    (format!("bad {name} {i}"), "negative")
                };
                format!("{}\n", json!({"goal": goal, "expected_output": label}))
            })
            .collect();
        client
            .publish_dataset(
                "local",
                files(&[
                    ("dataset.yaml", format!("name: {name}\nversion: 1.0.0\n")),
                    ("rows.jsonl", rows),
                ]),
            )
            .await
            .unwrap();
    }
    let fake = fake_model(delay).await;
    Some(Env {
        url: server.url,
        key: server.key,
        store: server.store,
        notifier: server.notifier,
        client,
        fake,
        dir: server.dir,
        _database: server.database,
    })
}

impl Env {
    /// Submits a job with `config`, runs it to its end on a fresh worker and returns it with
    /// its result: what a resumed run of the same config must reproduce.
    async fn uninterrupted_run(&self, config: Value) -> (Job, (Option<f64>, Value, usize)) {
        let job = self.submit(config).await;
        self.worker("ref", Duration::from_secs(10))
            .run_once(&CancellationToken::new())
            .await
            .unwrap();
        let result = final_result(self, job.id).await;
        (job, result)
    }

    /// Runs the queued job `id` on a fresh worker, which must complete it; the job as it ends.
    async fn completes_on_a_fresh_worker(&self, id: Uuid) -> Job {
        self.worker("w2", Duration::from_secs(10))
            .run_once(&CancellationToken::new())
            .await
            .unwrap();
        let j = self.job(id).await;
        assert_eq!(j.status, JobStatus::Completed, "{:?}", self.logs(id).await);
        j
    }

    /// Waits (bounded) until the first attempt of `id` has a checkpoint.
    async fn first_checkpoint(&self, id: Uuid) {
        for _ in 0..600 {
            if self.store.checkpoint(id, 1).await.unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A worker (lease 2 s) whose runners carry `GEPARD_TEST_MARK=mark`, so that a test can
    /// find and kill them ([`child_with_mark`]).
    fn marked_worker(&self, name: &str, mark: &str) -> Worker {
        let mut c = self.worker_config(name, Duration::from_secs(2));
        c.extra_env
            .push(("GEPARD_TEST_MARK".into(), mark.to_owned()));
        Worker::new(self.store.clone(), self.notifier.clone(), c)
    }

    fn worker(&self, name: &str, lease: Duration) -> Worker {
        Worker::new(
            self.store.clone(),
            self.notifier.clone(),
            self.worker_config(name, lease),
        )
    }

    /// A worker's settings against this environment's data directory and fake model.
    fn worker_config(&self, name: &str, lease: Duration) -> WorkerConfig {
        let mut c = WorkerConfig::new(name, PathBuf::from(BIN), self.dir.path().join("runs"));
        c.lease = lease;
        c.poll = Duration::from_millis(50);
        c.grace = Duration::from_secs(2);
        c.data_dir = Some(self.dir.path().to_path_buf());
        c.extra_env = vec![
            ("OPENAI_BASE_URL".into(), self.fake.url.clone()),
            ("OPENAI_API_KEY".into(), "test".into()),
        ];
        c
    }

    async fn submit(&self, config: Value) -> Job {
        let body = json!({
            "model": "openai/fake", "capability_ref": {"name": "sentiment", "version": "1.0.0"},
            "dataset_ref": {"name": "train", "version": "1.0.0"}, "val_dataset_ref": {"name": "val", "version": "1.0.0"},
            "reward_recipe": {"name": "exact_match_v1", "params": {}}, "config": config
        });
        self.client
            .create_job("local", "default", &body, None)
            .await
            .unwrap()
            .1
    }

    async fn job(&self, id: Uuid) -> Job {
        self.store.job_by_id(id).await.unwrap().unwrap()
    }

    /// Claims the oldest queued job as worker `worker` would, with a lease of `lease`.
    async fn claim(&self, worker: &str, lease: Duration) -> gepard_store::Claimed {
        self.store
            .claim_next(self.notifier.as_ref(), worker, lease)
            .await
            .unwrap()
            .expect("a queued job to claim")
    }

    /// What `POST …/cancel` does to a running job: the store command, with its notice.
    async fn request_cancel(&self, id: Uuid) {
        let ws = self.job(id).await.workspace_id;
        self.store
            .job_command(
                self.notifier.as_ref(),
                ws,
                id,
                &gepard_core::job::JobCommand::RequestCancel,
            )
            .await
            .unwrap();
    }

    async fn logs(&self, id: Uuid) -> Vec<String> {
        self.store
            .job_logs(id, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.entry.message)
            .collect()
    }

    async fn wait_for(&self, id: Uuid, what: &str, pred: impl Fn(&Job) -> bool) -> Job {
        for _ in 0..600 {
            let j = self.job(id).await;
            if pred(&j) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}: {:?}",
            self.job(id).await.status
        );
    }
}

fn config(budget: u64) -> Value {
    json!({"seed": 3, "max_metric_calls": budget, "reflection_minibatch_size": 3, "concurrency": 2})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completed_with_summary_metrics_logs_and_candidates() {
    let e = env(Duration::ZERO).await;
    let job = e.submit(config(60)).await;
    let end = e
        .worker("w1", Duration::from_secs(10))
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    assert!(end.is_some());
    let job = e.job(job.id).await;
    assert_eq!(
        job.status,
        JobStatus::Completed,
        "{:?} {:?}",
        job.error,
        e.logs(job.id).await
    );
    assert_eq!(job.summary.seed_score, Some(0.0));
    assert_eq!(job.summary.best_score, Some(1.0));
    let best = job.summary.best_candidate.clone().unwrap();
    assert!(best["instructions"].as_str().unwrap().contains(MAGIC));
    assert!(job.metrics["val_score"].len() >= 2);
    assert!(job.metrics["metric_calls_used"].last().unwrap().value <= 60.0);
    assert!(job.usage.model_calls > 0 && job.usage.metric_calls > 0);
    assert!(job.artifacts["best_instructions"].is_string());
    let logs = e.logs(job.id).await;
    assert!(
        logs.iter()
            .any(|l| l.starts_with("optimizing the instructions of agent classifier")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l.starts_with("finished")), "{logs:?}");
    let candidates = e
        .client
        .job_candidates("local", "default", &job.id.to_string())
        .await
        .unwrap();
    assert!(candidates.len() >= 2, "{candidates:?}");
    assert_eq!(
        candidates[0]["instructions"],
        "Classify the sentiment of the text."
    );
    let best = candidates
        .iter()
        .find(|c| c["val_score"] == 1.0)
        .expect("the best candidate is listed");
    assert_eq!(best["on_frontier"], true);
    assert_eq!(best["parents"], json!([0]));
    let marked: Vec<&Value> = candidates.iter().filter(|c| c["best"] == true).collect();
    assert_eq!(marked, [best], "exactly the best is marked best");

    // Training beside validation: the parent's minibatch mean on every iteration (skipped ones
    // included), the child's wherever one was evaluated.
    let steps = |name: &str| -> Vec<i64> {
        job.metrics
            .get(name)
            .map(|s| s.iter().map(|p| p.step).collect())
            .unwrap_or_default()
    };
    let iterations = logs
        .iter()
        .filter(|l| l.starts_with("iteration ") && l.contains(": parent "))
        .count() as i64;
    assert!(iterations >= 2, "{logs:?}");
    assert_eq!(
        steps("train_parent_score"),
        (1..=iterations).collect::<Vec<_>>()
    );
    let mut evaluated = [steps("accepted_score"), steps("rejected_score")].concat();
    evaluated.sort_unstable();
    assert_eq!(steps("train_child_score"), evaluated);
    assert!(
        evaluated.len() < iterations as usize,
        "this run skips iterations whose parent is already perfect: {logs:?}"
    );
    let accepted = &job.metrics["accepted_score"];
    for p in accepted {
        let child = job.metrics["train_child_score"]
            .iter()
            .find(|c| c.step == p.step)
            .unwrap();
        assert_eq!(child.value, p.value);
        let parent = job.metrics["train_parent_score"]
            .iter()
            .find(|c| c.step == p.step)
            .unwrap();
        assert!(
            parent.value < child.value,
            "accepted children beat their parents"
        );
    }
    // The artifacts name what the job ran on.
    assert_eq!(job.artifacts["capability"]["name"], "sentiment");
    assert_eq!(job.artifacts["agent_name"], "classifier");
    assert_eq!(
        job.artifacts["dataset"],
        json!({"name": "train", "version": "1.0.0"})
    );
    assert_eq!(
        job.artifacts["val_dataset"],
        json!({"name": "val", "version": "1.0.0"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_job_is_promoted_from_the_cli_after_a_preview_and_shows_in_capability_show() {
    let e = env(Duration::ZERO).await;
    let job = e.submit(config(60)).await;
    e.worker("w1", Duration::from_secs(10))
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(e.job(job.id).await.status, JobStatus::Completed);
    let id = job.id.to_string();
    let cli = || common::cli(&e.url, &e.key, e.dir.path());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let dry = common::run_cli(cli(), &["optimize", "promote", &id, "--dry-run"]).await;
    let out = text(&dry.stdout);
    assert!(dry.status.success(), "{out}{}", text(&dry.stderr));
    for expected in [
        "source     sentiment@1.0.0 agent classifier".to_owned(),
        "target     sentiment@1.0.1".to_owned(),
        "validation seed 0.000 → best 1.000".to_owned(),
        "promotable yes".to_owned(),
        "--- sentiment@1.0.0 (classifier)".to_owned(),
        "-Classify the sentiment of the text.\n".to_owned(),
        format!("+Classify the sentiment of the text. {MAGIC}"),
    ] {
        assert!(out.contains(&expected), "{expected:?} in:\n{out}");
    }
    assert!(
        !out.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );

    let refused = common::run_cli(cli(), &["optimize", "promote", &id]).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a missing --yes is a usage error"
    );
    assert!(
        text(&refused.stderr).contains("without confirmation: pass --yes"),
        "{}",
        text(&refused.stderr)
    );
    let versions = e
        .client
        .versions(
            "local",
            gepard_core::model::ArtifactKind::Capability,
            "sentiment",
        )
        .await
        .unwrap();
    assert_eq!(versions.len(), 1, "nothing is written without confirmation");

    let done = common::run_cli(cli(), &["optimize", "promote", &id, "--yes"]).await;
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains(&format!("promoted job {id}: capability sentiment@1.0.1")),
        "{}",
        text(&done.stdout)
    );
    let shown = common::run_cli(cli(), &["capability", "show", "sentiment@1.0.1"]).await;
    let shown = text(&shown.stdout);
    assert!(shown.starts_with("sentiment@1.0.1"), "{shown}");
    assert!(
        shown.contains(&format!(
            "--- instructions ---\nClassify the sentiment of the text. {MAGIC}"
        )),
        "{shown}"
    );
    let json_show =
        common::run_cli(cli(), &["capability", "show", "sentiment@1.0.1", "--json"]).await;
    let detail: Value = serde_json::from_slice(&json_show.stdout).unwrap();
    assert_eq!(detail["provenance"]["job_id"], id.as_str());
    assert_eq!(detail["provenance"]["seed_score"], 0.0);
    assert_eq!(detail["provenance"]["best_score"], 1.0);
    let source = e
        .client
        .capability_version("local", "sentiment", "1.0.0")
        .await
        .unwrap();
    assert_eq!(
        source.agents[0].instructions, "Classify the sentiment of the text.",
        "the source version is untouched"
    );

    let again = common::run_cli(cli(), &["optimize", "promote", &id, "--yes"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains(&format!("job {id} was already promoted to sentiment@1.0.1")),
        "{}",
        text(&again.stderr)
    );
    let artifacts = e
        .client
        .job_artifacts("local", "default", &id)
        .await
        .unwrap();
    assert_eq!(
        artifacts["artifacts"]["promoted_versions"][0]["version"],
        "1.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_its_runner_and_keeps_the_best_so_far() {
    let e = env(Duration::from_millis(150)).await;
    let job = e.submit(config(400)).await;
    let worker = e.worker("w1", Duration::from_secs(10));
    let run = tokio::spawn(async move { worker.run_once(&CancellationToken::new()).await });
    e.wait_for(job.id, "the seed evaluation", |j| {
        j.summary.best_score.is_some()
    })
    .await;
    e.request_cancel(job.id).await;
    let started = std::time::Instant::now();
    run.await.unwrap().unwrap();
    let job = e.job(job.id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(
        job.summary.best_score.is_some(),
        "the best result so far is kept"
    );
    // Bounded by the grace period plus one model call, far inside the test's patience.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_whose_seed_evaluation_hangs_on_the_model_ends_it_cancelled() {
    let e = env(Duration::from_secs(60)).await;
    let job = e.submit(config(400)).await;
    let worker = e.worker("w1", Duration::from_secs(10));
    let run = tokio::spawn(async move { worker.run_once(&CancellationToken::new()).await });
    for _ in 0..600 {
        if e.fake.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        e.fake.calls.load(Ordering::SeqCst) > 0,
        "the seed evaluation is waiting on the model"
    );
    e.request_cancel(job.id).await;
    run.await.unwrap().unwrap();
    let job = e.job(job.id).await;
    let logs = e.logs(job.id).await;
    assert_eq!(job.status, JobStatus::Cancelled, "{:?} {logs:?}", job.error);
    assert_eq!(job.error, None);
    assert!(
        logs.iter()
            .any(|l| l == "stopped on request before the seed was evaluated"),
        "{logs:?}"
    );
}

/// `(parent pid, state)` of a live process, from `/proc/PID/stat`; `None` once it is gone.
fn proc_stat(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// A worker process killed by SIGKILL runs no cleanup. Its runner must die with it instead of
/// going on calling the model, orphaned, while the lease expires and another worker resumes
/// the job (the same work paid for twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_dies_with_its_worker_process_even_when_the_worker_is_killed() {
    let e = env(Duration::from_millis(300)).await;
    let job = e.submit(config(400)).await;
    let mut worker = KillOnDrop(
        std::process::Command::new(BIN)
            .args(["worker", "--database-url"])
            .arg(format!("sqlite://{}", e.dir.path().join("g.db").display()))
            .arg("--data-dir")
            .arg(e.dir.path())
            .env("OPENAI_BASE_URL", &e.fake.url)
            .env("OPENAI_API_KEY", "t")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let worker_pid = i32::try_from(worker.0.id()).unwrap();
    e.wait_for(job.id, "the worker to start the job", |j| {
        j.status == JobStatus::Running
    })
    .await;
    let mut runner = None;
    for _ in 0..600 {
        runner = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|d| d.file_name().to_string_lossy().parse::<i32>().ok())
            .find(|&pid| proc_stat(pid).is_some_and(|(ppid, _)| ppid == worker_pid));
        if runner.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runner = runner.expect("the worker started a runner");
    // Found as soon as it is forked; on a busy machine its first model call may come later.
    for _ in 0..600 {
        if e.fake.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        e.fake.calls.load(Ordering::SeqCst) > 0,
        "the runner is calling the model"
    );
    sigkill(worker_pid);
    worker.0.wait().unwrap();
    // Gone, or a zombie nobody reaps (in a container, pid 1 may not): either way, not running.
    let mut alive = true;
    for _ in 0..250 {
        alive = proc_stat(runner).is_some_and(|(_, state)| state != 'Z');
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = e.fake.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!alive, "runner {runner} outlived its killed worker");
    assert_eq!(
        e.fake.calls.load(Ordering::SeqCst),
        calls,
        "no model call after the worker died"
    );
}

/// A child process killed when the test lets go of it, so that a failed assertion before the
/// test's own kill does not leave a worker running (and calling the model) after the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already gone after the test's own kill; then both calls just fail.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills `pid` the way the OOM killer or `kill -9` would.
fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Finds the pid of the run-job child that carries `mark` in its environment.
fn child_with_mark(mark: &str) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            if env
                .split(|b| *b == 0)
                .any(|kv| kv == format!("GEPARD_TEST_MARK={mark}").as_bytes())
            {
                return Some(pid);
            }
        }
    }
    None
}

/// Every metric series of a job as (value, step) pairs: what two runs must agree on (their
/// timestamps differ).
fn metric_series(job: &Job) -> Vec<(String, Vec<(f64, i64)>)> {
    job.metrics
        .iter()
        .map(|(name, points)| {
            (
                name.clone(),
                points.iter().map(|p| (p.value, p.step)).collect(),
            )
        })
        .collect()
}

async fn final_result(e: &Env, id: Uuid) -> (Option<f64>, Value, usize) {
    let j = e.job(id).await;
    let n = e.store.candidates(id, j.attempt).await.unwrap().len();
    (
        j.summary.best_score,
        j.summary.best_candidate.clone().unwrap_or(Value::Null),
        n,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_is_resumed_from_its_checkpoint_with_the_same_result() {
    let e = env(Duration::from_millis(40)).await;
    let (reference, expected) = e.uninterrupted_run(config(90)).await;
    assert_eq!(e.job(reference.id).await.status, JobStatus::Completed);

    let job = e.submit(config(90)).await;
    let mark = Uuid::new_v4().to_string();
    let w = e.marked_worker("w1", &mark);
    let run = tokio::spawn(async move { w.run_once(&CancellationToken::new()).await });
    // Kill the sandbox in the middle of an iteration after its first checkpoint: once it has
    // reported metric calls beyond the checkpoint's, so there is lost work to redo.
    let calls_used = |job: &Job| {
        job.metrics
            .get("metric_calls_used")
            .and_then(|p| p.last())
            .map_or(0.0, |p| p.value)
    };
    for _ in 0..3000 {
        if let Some(cp) = e.store.checkpoint(job.id, 1).await.unwrap() {
            let at: Value = serde_json::from_str(&cp.data).unwrap();
            if calls_used(&e.job(job.id).await) > at["metric_calls"].as_f64().unwrap() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = child_with_mark(&mark).expect("the run-job child is running");
    sigkill(pid);
    run.await.unwrap().unwrap();
    assert_eq!(
        e.job(job.id).await.status,
        JobStatus::Queued,
        "a crashed sandbox puts the job back for a resume"
    );
    let j = e.completes_on_a_fresh_worker(job.id).await;
    assert_eq!(
        final_result(&e, job.id).await,
        expected,
        "the resumed run ends exactly like an uninterrupted one"
    );
    assert!(e
        .logs(job.id)
        .await
        .iter()
        .any(|l| l.starts_with("resuming")));
    // The killed runner's model calls were paid for: the usage keeps the ones it reported, so
    // it is at least the uninterrupted run's (the resumed runner alone made fewer).
    // The crashed runner's points after its checkpoint were dropped and redone: every series
    // reads exactly as the uninterrupted run's (values and steps; timestamps differ).
    let uninterrupted_job = e.job(reference.id).await;
    assert_eq!(metric_series(&j), metric_series(&uninterrupted_job));
    let (resumed, uninterrupted) = (j.usage, uninterrupted_job.usage);
    assert_eq!(resumed.metric_calls, uninterrupted.metric_calls);
    assert!(
        resumed.model_calls >= uninterrupted.model_calls
            && resumed.input_tokens >= uninterrupted.input_tokens,
        "{resumed:?} vs {uninterrupted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_killed_inside_a_batch_has_reported_the_model_calls_it_paid_for() {
    // One call at a time, 800 ms each: the seed's validation pass (6 rows) takes 4.8 s, a
    // single batch without a budget update inside it, and the runner's first usage report
    // comes about a second in, which leaves seconds to kill it mid-pass even on a loaded
    // machine. A budget of 6 covers only that pass: an uninterrupted run makes 6 model calls.
    let e = env(Duration::from_millis(800)).await;
    let job = e
        .submit(json!({"seed": 3, "max_metric_calls": 6, "concurrency": 1}))
        .await;
    let mark = Uuid::new_v4().to_string();
    let w = e.marked_worker("w1", &mark);
    let run = tokio::spawn(async move { w.run_once(&CancellationToken::new()).await });
    // Model calls show in the usage before the pass has ended (no budget point yet).
    let mid = e
        .wait_for(job.id, "a usage report inside the seed's pass", |j| {
            j.usage.model_calls > 0
        })
        .await;
    assert!(
        !mid.metrics.contains_key("metric_calls_used"),
        "reported inside the batch, not at its end: {:?}",
        mid.metrics
    );
    let pid = child_with_mark(&mark).expect("the run-job child is running");
    sigkill(pid);
    run.await.unwrap().unwrap();
    let j = e.completes_on_a_fresh_worker(job.id).await;
    assert!(e
        .logs(job.id)
        .await
        .iter()
        .any(|l| l.starts_with("this attempt starts over")));
    // The restarted run made the 6 calls of an uninterrupted one; the killed one's stay
    // counted, while the budget count is the run's own.
    assert_eq!(j.usage.metric_calls, 6);
    assert!(
        j.usage.model_calls >= 6 + mid.usage.model_calls && mid.usage.input_tokens > 0,
        "{:?} ({} before the kill)",
        j.usage,
        mid.usage.model_calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_runner_keeps_being_killed_fails_saying_it_ran_out_of_restarts() {
    let e = env(Duration::from_millis(200)).await;
    let job = e.submit(config(90)).await;
    let mark = Uuid::new_v4().to_string();
    for kill in 1..=4 {
        let w = e.marked_worker("w", &mark);
        let run = tokio::spawn(async move { w.run_once(&CancellationToken::new()).await });
        let mut pid = None;
        for _ in 0..400 {
            pid = child_with_mark(&mark);
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid = pid.unwrap_or_else(|| panic!("runner {kill} started"));
        sigkill(pid);
        run.await.unwrap().unwrap();
        let j = e.job(job.id).await;
        let expected = if kill < 4 {
            JobStatus::Queued
        } else {
            JobStatus::Failed
        };
        assert_eq!(j.status, expected, "after kill {kill}: {:?}", j.error);
    }
    let error = e.job(job.id).await.error.unwrap_or_default();
    assert_eq!(
        error,
        "the runner was killed by signal 9 again, after 3 restarts of this attempt (the most a \
         crashing attempt gets); retry the job to run it once more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_loses_its_lease_and_another_resumes_the_job() {
    let e = env(Duration::from_millis(20)).await;
    let (_, expected) = e.uninterrupted_run(config(90)).await;

    let job = e.submit(config(90)).await;
    let dying = e.worker("dying", Duration::from_secs(1));
    let run = tokio::spawn(async move { dying.run_once(&CancellationToken::new()).await });
    e.first_checkpoint(job.id).await;
    // The worker dies: its task is gone and its child is killed with it (kill_on_drop).
    run.abort();
    let _ = run.await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reaped = e
        .store
        .reap_expired_leases(e.notifier.as_ref())
        .await
        .unwrap();
    assert_eq!(reaped, vec![job.id]);
    e.worker("heir", Duration::from_secs(10))
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(e.job(job.id).await.status, JobStatus::Completed);
    assert_eq!(final_result(&e, job.id).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_charges_the_runtime_limit_for_the_run_so_far_not_for_the_wait_before_it() {
    let e = env(Duration::ZERO).await;
    let job = e.submit(config(90)).await;
    let claimed = e.claim("w", Duration::from_secs(10)).await;
    let limits = gepard_worker::spec::Limits::default();
    // No checkpoint yet: the time since the job first started.
    let fresh =
        gepard_worker::spec::build(&e.store, &claimed.job, limits, Duration::from_secs(3600))
            .await
            .unwrap();
    assert_eq!(fresh.elapsed_sec, 3600);
    // The runner that took the checkpoint had run 7 s; the job then waited an hour for its
    // dead worker's lease. A resume is charged the 7 s, as the uninterrupted run would be.
    assert!(e
        .store
        .save_checkpoint(
            job.id,
            1,
            claimed.lease_token,
            1,
            Duration::from_secs(7),
            "{}"
        )
        .await
        .unwrap());
    let resumed =
        gepard_worker::spec::build(&e.store, &claimed.job, limits, Duration::from_secs(3600))
            .await
            .unwrap();
    assert_eq!(resumed.elapsed_sec, 7);
    assert_eq!(resumed.resume.as_deref(), Some("{}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutting_down_gives_its_job_back_at_once_and_the_next_resumes_it() {
    let e = env(Duration::from_millis(20)).await;
    let (_, expected) = e.uninterrupted_run(config(90)).await;

    let job = e.submit(config(90)).await;
    let stop = CancellationToken::new();
    let leaving = e.worker("leaving", Duration::from_secs(3600));
    let run = {
        let stop = stop.clone();
        tokio::spawn(async move { leaving.run(stop).await })
    };
    e.first_checkpoint(job.id).await;
    stop.cancel();
    run.await.unwrap();
    // Queued again now, not after its hour-long lease: no reaping needed.
    assert_eq!(e.job(job.id).await.status, JobStatus::Queued);
    let logs = e.logs(job.id).await;
    let notice = logs
        .iter()
        .position(|l| l == "worker leaving is shutting down")
        .unwrap_or_else(|| panic!("no shutdown notice in {logs:?}"));
    assert_eq!(
        logs[notice + 1],
        "the worker gave the job back; it is queued again to resume from its last checkpoint",
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("lease expired")),
        "{logs:?}"
    );
    e.worker("heir", Duration::from_secs(10))
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(e.job(job.id).await.status, JobStatus::Completed);
    assert_eq!(final_result(&e, job.id).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_on_several_workers_each_run_exactly_once() {
    many_jobs_on_several_workers_each_run_exactly_once_on(env(Duration::ZERO).await).await;
}

async fn many_jobs_on_several_workers_each_run_exactly_once_on(e: Env) {
    let mut ids = vec![];
    for _ in 0..6 {
        ids.push(
            e.submit(json!({"seed": 1, "max_metric_calls": 6, "max_trials": 1}))
                .await
                .id,
        );
    }
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let w = e.worker(&format!("w{i}"), Duration::from_secs(10));
            let stop = stop.clone();
            tokio::spawn(async move { w.run(stop).await })
        })
        .collect();
    for id in &ids {
        e.wait_for(*id, "completion", |j| j.status.is_terminal())
            .await;
    }
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    for id in ids {
        let logs = e.logs(id).await;
        assert_eq!(
            logs.iter().filter(|l| *l == "started").count(),
            1,
            "{logs:?}"
        );
        assert_eq!(e.job(id).await.status, JobStatus::Completed, "{logs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_lease_token_changes_nothing() {
    a_stale_lease_token_changes_nothing_on(env(Duration::ZERO).await).await;
}

async fn a_stale_lease_token_changes_nothing_on(e: Env) {
    let job = e.submit(config(60)).await;
    let claimed = e.claim("a", Duration::from_millis(1)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.store
        .reap_expired_leases(e.notifier.as_ref())
        .await
        .unwrap();
    let again = e.claim("b", Duration::from_secs(10)).await;
    assert!(again.lease_token > claimed.lease_token);
    let mut ev = gepard_core::progress::ProgressEvent::new(
        gepard_core::progress::ProgressEventType::OptimizationEnd,
    );
    ev.message = Some("from the stale worker".into());
    let stale = e
        .store
        .ingest_progress(e.notifier.as_ref(), job.id, &ev, Some(claimed.lease_token))
        .await;
    assert!(
        matches!(stale, Err(gepard_store::LifecycleError::Fenced(_))),
        "{stale:?}"
    );
    assert!(!e
        .store
        .renew_lease(job.id, claimed.lease_token, Duration::from_secs(5))
        .await
        .unwrap());
    assert!(!e
        .store
        .save_checkpoint(job.id, 1, claimed.lease_token, 1, Duration::ZERO, "{}")
        .await
        .unwrap());
    assert_eq!(e.job(job.id).await.status, JobStatus::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_limit_fails_the_job_and_keeps_its_best_result() {
    let e = env(Duration::from_millis(300)).await;
    let job = e
        .submit(json!({"seed": 1, "max_metric_calls": 500, "max_runtime_sec": 3, "concurrency": 1}))
        .await;
    e.worker("w1", Duration::from_secs(10))
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    let j = e.job(job.id).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.as_deref(), Some("exceeded max_runtime_sec of 3 s"));
    assert!(
        j.summary.best_score.is_some(),
        "the best result so far is kept"
    );
    // ... and it can be promoted like a cancelled job's, when it beats the seed.
    let preview = e
        .store
        .promotion_preview(&gepard_store::PromotionRequest {
            org_id: j.organization_id,
            workspace_id: j.workspace_id,
            job_id: j.id,
            name: None,
            version: None,
        })
        .await
        .unwrap();
    assert!(
        !preview.reasons.iter().any(|r| r.contains("is failed")),
        "{:?}",
        preview.reasons
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_printing_garbage_fails_its_job_but_not_the_worker() {
    let e = env(Duration::ZERO).await;
    let job = e.submit(config(60)).await;
    let script = e.dir.path().join("garbage.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > /dev/null\necho 'hello, I am not JSON'\nsleep 5\n",
    )
    .unwrap();
    make_executable(&script);
    let mut c = WorkerConfig::new("w1", script, e.dir.path().join("runs"));
    c.args = vec![];
    let w = Worker::new(e.store.clone(), e.notifier.clone(), c);
    w.run_once(&CancellationToken::new()).await.unwrap();
    let j = e.job(job.id).await;
    assert_eq!(j.status, JobStatus::Failed);
    assert!(
        j.error.as_deref().unwrap().contains("not a progress event"),
        "{:?}",
        j.error
    );
    // The same worker goes on to the next job.
    let next = e.submit(config(60)).await;
    assert!(w
        .run_once(&CancellationToken::new())
        .await
        .unwrap()
        .is_some());
    assert!(e.job(next.id).await.status.is_terminal());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_exits_without_an_end_fails_the_job_and_retry_runs_again_from_scratch() {
    let e = env(Duration::ZERO).await;
    let job = e.submit(config(60)).await;
    let script = e.dir.path().join("quits.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > /dev/null\necho 'boom' >&2\nexit 3\n",
    )
    .unwrap();
    make_executable(&script);
    let mut c = WorkerConfig::new("w1", script, e.dir.path().join("runs"));
    c.args = vec![];
    Worker::new(e.store.clone(), e.notifier.clone(), c)
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    let j = e.job(job.id).await;
    assert_eq!(j.status, JobStatus::Failed);
    let err = j.error.unwrap();
    assert!(
        err.contains("without reporting an end") && err.contains("boom"),
        "{err}"
    );

    let ws = j.workspace_id;
    e.store
        .job_command(
            e.notifier.as_ref(),
            ws,
            job.id,
            &gepard_core::job::JobCommand::Retry,
        )
        .await
        .unwrap();
    e.worker("w2", Duration::from_secs(10))
        .run_once(&CancellationToken::new())
        .await
        .unwrap();
    let j = e.job(job.id).await;
    assert_eq!((j.status, j.attempt), (JobStatus::Completed, 2));
    assert_eq!(
        j.summary.seed_score,
        Some(0.0),
        "attempt 2 started from the seed, not a checkpoint"
    );
    assert!(e.fake.calls.load(Ordering::SeqCst) > 0);
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_a_real_job_and_prints_scores_and_the_diff() {
    let model_url = fake_model(Duration::ZERO).await.url;
    let dir = tempfile::tempdir().unwrap();
    let (code, text, err) = quickstart_signalled(&dir.path().join("qs"), &model_url, None).await;
    assert_eq!(code, Some(0), "{text}\n{err}");
    assert!(
        text.contains("validation score: seed 0.000 → best 1.000"),
        "{text}"
    );
    // Without a terminal the wait is not silent: a line per status or best-score change.
    assert!(
        err.lines()
            .any(|l| l.starts_with("completed: ") && l.ends_with("best 1.000")),
        "{err}"
    );
    assert!(
        !text.contains("/../"),
        "the examples path is shown resolved: {text}"
    );
    assert!(
        text.contains(&format!("+Classify the sentiment of the text. {MAGIC}")),
        "{text}"
    );
}

/// Runs `gepard quickstart` on `data_dir` against `model_url`; once its job is being
/// followed, sends `signal` (if any) to it. Returns the exit code, stdout and stderr.
async fn quickstart_signalled(
    data_dir: &Path,
    model_url: &str,
    signal: Option<&'static str>,
) -> (Option<i32>, String, String) {
    use std::io::{BufRead, BufReader};
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut cmd = std::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("GEPARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "quickstart",
        "--model",
        "openai/fake",
        "--max-metric-calls",
        "120",
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .arg("--examples")
    .arg(&examples)
    .env("OPENAI_BASE_URL", model_url)
    .env("OPENAI_API_KEY", "test")
    .env("GEPARD_DATA_DIR", data_dir)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().to_string();
    let stdout = child.stdout.take().unwrap();
    tokio::task::spawn_blocking(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(signal) = signal.filter(|_| line.contains("optimizing with")) {
                // The job is submitted and followed; let it start, then signal the quickstart.
                std::thread::sleep(Duration::from_millis(500));
                let kill = std::process::Command::new("kill")
                    .args([signal, &pid])
                    .status();
                assert!(kill.unwrap().success());
            }
        }
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status.code(), seen, err)
    })
    .await
    .unwrap()
}

async fn job_counts(data_dir: &Path) -> Vec<(JobStatus, i64)> {
    let url = format!("sqlite://{}", data_dir.join("gepard.db").display());
    let store = Store::connect(&url).await.unwrap();
    let counts = store.job_counts_by_status().await.unwrap();
    store.close().await;
    counts
}

/// Ctrl-C while the quickstart's job runs cancels the job (exit 130) instead of leaving it
/// running for the next quickstart's worker to resume first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_quickstart_cancels_its_job_and_exits_130() {
    let slow = fake_model(Duration::from_millis(300)).await.url;
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let (code, text, err) = quickstart_signalled(&qs, &slow, Some("-INT")).await;
    assert_eq!(code, Some(130), "{text}\n{err}");
    assert!(err.contains("interrupted: cancelling job"), "{err}");
    assert_eq!(job_counts(&qs).await, [(JobStatus::Cancelled, 1)], "{text}");
}

/// A quickstart killed outright leaves its job running; the next one cancels it and runs its
/// own job at once instead of waiting behind the resumed leftover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_quickstart_cancels_a_job_a_killed_one_left_running() {
    let slow = fake_model(Duration::from_millis(300)).await.url;
    let fast = fake_model(Duration::ZERO).await.url;
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let (code, ..) = quickstart_signalled(&qs, &slow, Some("-KILL")).await;
    assert_eq!(code, None, "killed by a signal");
    assert_eq!(job_counts(&qs).await, [(JobStatus::Running, 1)]);
    let (code, text, err) = quickstart_signalled(&qs, &fast, None).await;
    assert_eq!(code, Some(0), "{text}\n{err}");
    assert!(
        text.contains("left running by an earlier quickstart that was stopped"),
        "{text}"
    );
    assert!(text.contains("best 1.000"), "{text}");
}

/// `serve` started with a relative data directory and a relative `GEPARD_PROVIDERS` file runs
/// a job on the named provider: its runners work in a directory of their own, so both paths
/// must reach them made absolute, and the provider's `api_key_env` variable with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_relative_data_dir_and_provider_file_runs_a_job_on_a_named_provider() {
    let fake = fake_model(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/providers.yaml"),
        format!(
            "corp:\n  kind: openai\n  base_url: \"{}\"\n  api_key_env: CORP_KEY\n",
            fake.url
        ),
    )
    .unwrap();
    let key = gepard_core::auth::ApiKeySecret::generate()
        .expose()
        .to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = std::process::Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("GEPARD_") || k.starts_with("OPENAI_") {
            serve.env_remove(k);
        }
    }
    let mut serve = serve
        .current_dir(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", "reldata", "--workers", "1"])
        .env("GEPARD_PROVIDERS", "conf/providers.yaml")
        .env("GEPARD_ADMIN_KEY", &key)
        .env("GEPARD_LOG", "warn")
        .env("CORP_KEY", "corp-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(&url, Some(key.clone()));
    for _ in 0..200 {
        if client.healthz().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let cli = || {
        let mut c = common::cli(&url, &key, &dir.path().join("cli"));
        c.current_dir(dir.path());
        c
    };
    for (kind, path) in [
        ("capability", "capabilities/sentiment"),
        ("dataset", "datasets/sentiment-train"),
        ("dataset", "datasets/sentiment-val"),
    ] {
        let p = examples.join(path);
        let out = common::run_cli(cli(), &[kind, "push", p.to_str().unwrap()]).await;
        assert!(out.status.success(), "{out:?}");
    }
    let out = common::run_cli(
        cli(),
        &[
            "optimize",
            "submit",
            "--model",
            "corp/fake",
            "--capability",
            "sentiment@1.0.0",
            "--dataset",
            "sentiment-train@1.0.0",
            "--val-dataset",
            "sentiment-val@1.0.0",
            "--max-metric-calls",
            "70",
            "--wait",
            "--json",
        ],
    )
    .await;
    let _ = serve.kill();
    let _ = serve.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["summary"]["best_score"], 1.0, "{job}");
    assert!(fake.calls.load(Ordering::SeqCst) > 0);
    assert!(
        dir.path().join("reldata").is_dir(),
        "the data directory is relative to where serve started"
    );
}

/// The scale-out behaviour again, on PostgreSQL (skipped, printed, unless configured).
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_jobs_on_several_workers_each_run_exactly_once() {
        let test = "execution::postgres::many_jobs_on_several_workers_each_run_exactly_once";
        if let Some(e) = env_on(Backend::Postgres, Duration::ZERO, test).await {
            super::many_jobs_on_several_workers_each_run_exactly_once_on(e).await;
        }
    }

    /// The database refuses connections for a while mid-run (a restart, a failover): the
    /// worker's writes wait and retry instead of dropping runner lines, so the run ends with
    /// exactly the evidence of an uninterrupted one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_outage_mid_run_loses_no_progress() {
        use sqlx::{Connection, Executor};
        let test = "execution::postgres::a_database_outage_mid_run_loses_no_progress";
        let Some(e) = env_on(Backend::Postgres, Duration::from_millis(20), test).await else {
            return;
        };
        let reference = e.submit(config(90)).await;
        e.worker("ref", Duration::from_secs(30))
            .run_once(&CancellationToken::new())
            .await
            .unwrap();
        let expected = e.job(reference.id).await;
        assert_eq!(expected.status, JobStatus::Completed);

        let job = e.submit(config(90)).await;
        let worker = e.worker("w", Duration::from_secs(30));
        let run = tokio::spawn(async move { worker.run_once(&CancellationToken::new()).await });
        e.wait_for(job.id, "the run to report progress", |j| {
            j.metrics.contains_key("metric_calls_used")
        })
        .await;
        let url = e._database.as_ref().unwrap().url().to_owned();
        let name = url.rsplit('/').next().unwrap().to_owned();
        let mut admin = sqlx::PgConnection::connect(
            &std::env::var(gepard_store::testing::POSTGRES_URL_VAR).unwrap(),
        )
        .await
        .unwrap();
        admin
            .execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false").as_str())
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        admin
            .execute(format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true").as_str())
            .await
            .unwrap();
        run.await.unwrap().unwrap();
        let got = e.job(job.id).await;
        assert_eq!(
            got.status,
            JobStatus::Completed,
            "{:?}",
            e.logs(job.id).await
        );
        assert_eq!(metric_series(&got), metric_series(&expected));
        assert_eq!(
            final_result(&e, job.id).await,
            final_result(&e, reference.id).await
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_lease_token_changes_nothing() {
        let test = "execution::postgres::a_stale_lease_token_changes_nothing";
        if let Some(e) = env_on(Backend::Postgres, Duration::ZERO, test).await {
            super::a_stale_lease_token_changes_nothing_on(e).await;
        }
    }
}
