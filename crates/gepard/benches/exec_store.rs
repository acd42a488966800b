//! Execution benchmarks of the control plane's store and API, everything real and on one
//! SQLite file (the in-process test server of `tests/common`: the real router on a 127.0.0.1
//! port over a bootstrapped store):
//!
//! 1. **Claims.** N queued jobs (created over HTTP), drained by 1 or 4 claimers calling
//!    `Store::claim_next` exactly as `Worker::run_once` does (which also moves the job to
//!    `running` under a lease): as tasks sharing one store (the embedded workers of
//!    `gepard serve --workers 4`) and as 4 separate processes with their own connections to
//!    the same file (four `gepard worker` processes; this binary re-runs itself as the
//!    claimer). Jobs claimed per second and the latency of each successful claim.
//! 2. **Progress ingestion.** A runner's event mix (iteration starts, budget updates with
//!    metric points, rejected / accepted candidates, validation results with summary patches,
//!    frontier updates) posted to `POST …/progress` with a runner key, and the same events
//!    through `Store::ingest_progress` directly, so the HTTP share is visible; one writer on
//!    one job, and one writer per job on several jobs at once. Events per second overall and
//!    per block of events (a job's metric series grow as it runs).
//!
//! Run: `cargo bench -p gepard --bench exec_store`. Knobs (environment): `EXEC_BENCH`
//! (sections, default `claims,progress`), `EXEC_CLAIM_JOBS` (1000), `EXEC_CLAIMERS` (claimer
//! counts, `p` for processes, default `1,4,4p`), `EXEC_DATABASES` (`sqlite`, `postgres` or
//! both, comma-separated; PostgreSQL claims run on a fresh database made through
//! `GEPARD_TEST_POSTGRES_URL`, see `gepard_store::testing`), `EXEC_PROGRESS_EVENTS` (events per job,
//! 2000), `EXEC_PROGRESS_JOBS` (concurrent jobs, 4). Prints markdown tables.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gepard_client::Client;
use gepard_core::progress::{LogLevel, MetricPoint, ProgressEvent, ProgressEventType};
use gepard_store::{Backend, LocalNotifier, Notifier, Store};
use serde_json::{json, Value};
use support::{env_or, Stats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

/// Set in a claimer child process: the database URL it drains.
const CLAIMER_ENV: &str = "EXEC_BENCH_CLAIMER_DB";
/// The lease a claim takes (the worker's default).
const LEASE: Duration = Duration::from_secs(30);

fn job_body() -> Value {
    json!({
        "model": "openai/fake", "capability_ref": {"name": "sentiment", "version": "1.0.0"},
        "dataset_ref": {"name": "sentiment-train", "version": "1.0.0"},
        "val_dataset_ref": {"name": "sentiment-val", "version": "1.0.0"},
        "reward_recipe": {"name": "exact_match_v1", "params": {}},
        "config": {"seed": 0, "max_metric_calls": 1000, "concurrency": 4}
    })
}

/// Creates `n` queued jobs over HTTP.
async fn create_jobs(client: &Client, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    let body = job_body();
    for _ in 0..n {
        let (_, job) = client
            .create_job("local", "default", &body, None)
            .await
            .expect("create job");
        ids.push(job.id);
    }
    ids
}

/// One claimer: claims until the queue is empty; the latency of each successful claim and
/// the ids it got.
async fn drain(
    store: Store,
    notifier: Arc<dyn Notifier>,
    name: String,
) -> (Vec<Duration>, Vec<Uuid>) {
    let (mut lat, mut ids) = (Vec::new(), Vec::new());
    loop {
        let t0 = Instant::now();
        match store
            .claim_next(notifier.as_ref(), &name, LEASE)
            .await
            .expect("claim_next")
        {
            Some(c) => {
                lat.push(t0.elapsed());
                ids.push(c.job.id);
            }
            None => return (lat, ids),
        }
    }
}

/// The body of a claimer child process: connect, say `ready`, wait for `go`, drain, print the
/// latencies (µs) and ids as one JSON line.
async fn claimer_child(url: String) {
    let store = Store::connect(&url).await.expect("connect");
    let notifier: Arc<dyn Notifier> = Arc::new(LocalNotifier::default());
    // Open the pool's connections before the clock starts, as a running worker has them.
    store.ping().await.expect("ping");
    println!("ready");
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .expect("join")
        .expect("go");
    let name = format!("proc-{}", std::process::id());
    let (lat, ids) = drain(store, notifier, name).await;
    let us: Vec<u128> = lat.iter().map(Duration::as_micros).collect();
    println!("{}", json!({"latency_us": us, "ids": ids}));
}

struct ClaimRow {
    database: &'static str,
    mode: &'static str,
    claimers: usize,
    jobs: usize,
    wall: Duration,
    /// CPU time of this process and its claimer children while draining.
    cpu: Duration,
    stats: Stats,
    load: String,
}

/// Drains `n` fresh queued jobs with `k` claimers, as tasks or as processes, on a fresh
/// database of `backend`.
async fn claims(n: usize, k: usize, processes: bool, backend: Backend) -> ClaimRow {
    let server = common::spawn_server_on(backend, "exec_store_claims")
        .await
        .expect("PostgreSQL claims need GEPARD_TEST_POSTGRES_URL");
    server.publish_examples().await;
    let created = create_jobs(&server.client(), n).await;
    let cpu0 = own_cpu();
    let (wall, results) = if processes {
        let url = match &server.database {
            Some(db) => db.url().to_owned(),
            None => format!("sqlite://{}", server.dir.path().join("g.db").display()),
        };
        let exe = std::env::current_exe().expect("this bench binary");
        let mut children = Vec::new();
        for _ in 0..k {
            let mut child = tokio::process::Command::new(&exe)
                .env(CLAIMER_ENV, &url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn a claimer");
            let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let ready = out.next_line().await.expect("claimer output");
            assert_eq!(ready.as_deref(), Some("ready"));
            children.push((child, out));
        }
        let t0 = Instant::now();
        for (child, _) in &mut children {
            let stdin = child.stdin.as_mut().expect("stdin");
            stdin.write_all(b"go\n").await.expect("go");
        }
        let mut results = Vec::new();
        for (mut child, mut out) in children {
            let line = out
                .next_line()
                .await
                .expect("result")
                .expect("a result line");
            let v: Value = serde_json::from_str(&line).expect("result JSON");
            let lat = v["latency_us"]
                .as_array()
                .expect("latencies")
                .iter()
                .map(|u| Duration::from_micros(u.as_u64().unwrap_or(0)))
                .collect();
            let ids = serde_json::from_value(v["ids"].clone()).expect("ids");
            results.push((lat, ids));
            child.wait().await.expect("claimer exit");
        }
        (t0.elapsed(), results)
    } else {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..k)
            .map(|i| {
                tokio::spawn(drain(
                    server.store.clone(),
                    server.notifier.clone(),
                    format!("task-{i}"),
                ))
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("claimer task"));
        }
        (t0.elapsed(), results)
    };
    let cpu = own_cpu().saturating_sub(cpu0);
    let mut lat = Vec::new();
    let mut seen = HashSet::new();
    for (l, ids) in results {
        lat.extend(l);
        for id in ids {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(
        seen.len(),
        created.len(),
        "every job is claimed exactly once"
    );
    ClaimRow {
        database: match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        },
        mode: if processes { "processes" } else { "tasks" },
        claimers: k,
        jobs: n,
        wall,
        cpu,
        stats: Stats::of(&lat),
        load: support::load_average(),
    }
}

/// CPU time of this process and the children it has reaped.
fn own_cpu() -> Duration {
    let c = support::cpu(std::process::id()).expect("own CPU time");
    c.own + c.children
}

fn point(value: f64, step: i64) -> Vec<MetricPoint> {
    vec![MetricPoint {
        value,
        step,
        timestamp: None,
    }]
}

/// The `i`-th event of a runner's stream, shaped like `gepard run-job`'s: every third
/// iteration is accepted (7 events, with summary patches), the others rejected (4 events).
fn runner_event(i: usize) -> ProgressEvent {
    const VAL: usize = 40;
    let (iteration, k, accepted) = {
        // 15 events per three iterations: 4 + 4 + 7.
        let (round, r) = (i / 15, i % 15);
        let (it, k) = match r {
            0..=3 => (0, r),
            4..=7 => (1, r - 4),
            _ => (2, r - 8),
        };
        (round * 3 + it + 1, k, it == 2)
    };
    let it = i64::try_from(iteration).unwrap_or(i64::MAX);
    let calls = (iteration * 20) as f64;
    let budget = |e: &mut ProgressEvent| {
        e.level = LogLevel::Debug;
        e.message = Some(format!("metric calls used: {calls}"));
        e.metrics
            .insert("metric_calls_used".into(), point(calls, it));
        e.metrics
            .insert("metric_calls_remaining".into(), point(1000.0 - calls, it));
    };
    let score = (iteration % 10) as f64 / 10.0;
    let mut e;
    match (k, accepted) {
        (0, _) => {
            e = ProgressEvent::new(ProgressEventType::IterationStart);
            e.level = LogLevel::Debug;
            e.message = Some(format!(
                "iteration {iteration}: parent 0 (val {score:.3}), minibatch [3, 17, 42]"
            ));
            e.data = json!({"parent": 0, "minibatch": [3, 17, 42]});
        }
        (1 | 2, _) | (6, true) => {
            e = ProgressEvent::new(ProgressEventType::BudgetUpdated);
            budget(&mut e);
        }
        (3, false) => {
            e = ProgressEvent::new(ProgressEventType::CandidateRejected);
            e.message = Some(format!(
                "iteration {iteration}: child rejected (minibatch 0.667 → 0.333)"
            ));
            e.metrics.insert("rejected_score".into(), point(0.333, it));
            e.data = json!({"parent": 0, "parent_scores": [1.0, 1.0, 0.0], "child_scores": [0.0, 1.0, 0.0]});
        }
        (3, true) => {
            e = ProgressEvent::new(ProgressEventType::CandidateAccepted);
            e.message = Some(format!(
                "iteration {iteration}: candidate {} accepted (minibatch 0.333 → 1.000)",
                iteration / 3
            ));
            e.metrics.insert("accepted_score".into(), point(1.0, it));
            e.data = json!({"parent": 0, "candidate": iteration / 3, "parent_scores": [1.0, 0.0, 0.0], "child_scores": [1.0, 1.0, 1.0]});
        }
        (4, true) => {
            e = ProgressEvent::new(ProgressEventType::ValsetEvaluated);
            e.message = Some(format!(
                "candidate {}: validation {score:.3}",
                iteration / 3
            ));
            e.metrics.insert("val_score".into(), point(score, it));
            e.metrics.insert("best_score".into(), point(score, it));
            let scores: serde_json::Map<String, Value> = (0..VAL)
                .map(|v| (v.to_string(), json!(f64::from(u8::from(v % 3 != 0)))))
                .collect();
            e.summary = Some(json!({
                "best_score": score,
                "best_scores": scores,
                "best_candidate": {"instructions": "Classify the sentiment of the text. Rule 1: weigh the cue words carefully. Rule 2: negation flips the sentiment. Answer with exactly one lowercase word."},
            }));
            e.data = json!({"candidate": iteration / 3, "best_candidate": iteration / 3});
        }
        _ => {
            e = ProgressEvent::new(ProgressEventType::ParetoFrontUpdated);
            e.level = LogLevel::Debug;
            e.message = Some("frontier: 3 candidate(s), together 0.950".into());
            e.metrics.insert("frontier_size".into(), point(3.0, it));
            e.metrics
                .insert("frontier_best_score".into(), point(0.95, it));
            e.summary = Some(json!({"frontier_size": 3}));
            e.data = json!({"frontier": [0, 1, 2]});
        }
    }
    e.iteration = Some(it);
    e
}

struct ProgressRow {
    path: &'static str,
    jobs: usize,
    events: usize,
    wall: Duration,
    /// CPU time of this process (server, store and writers) while ingesting.
    cpu: Duration,
    stats: Stats,
    /// Events per second in each quarter of every job's stream.
    quarters: Vec<f64>,
    load: String,
}

/// One writer's stream to one job: the latency of each event.
async fn write_stream(
    http: Option<Client>,
    store: Store,
    notifier: Arc<dyn Notifier>,
    job: Uuid,
    lease_token: Option<i64>,
    events: usize,
) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(events);
    let id = job.to_string();
    for i in 0..events {
        let e = runner_event(i);
        let t0 = Instant::now();
        match &http {
            Some(client) => {
                let body = serde_json::to_value(&e).expect("event JSON");
                client
                    .job_progress("local", "default", &id, &body)
                    .await
                    .expect("progress accepted");
            }
            None => {
                store
                    .ingest_progress(notifier.as_ref(), job, &e, lease_token)
                    .await
                    .expect("progress ingested");
            }
        }
        lat.push(t0.elapsed());
    }
    lat
}

/// Ingests `events` runner events into each of `jobs` fresh running jobs at once.
async fn progress(
    server: &common::TestServer,
    runner: &str,
    http: bool,
    jobs: usize,
    events: usize,
) -> ProgressRow {
    let ids = create_jobs(&server.client(), jobs).await;
    // The store path writes as a worker does, with its lease token. The HTTP path plays an
    // outside runtime, whose jobs no worker of this deployment holds (a worker-held job
    // refuses reports from elsewhere), so its jobs are started without a worker.
    let mut tokens = std::collections::HashMap::new();
    for &id in &ids {
        if http {
            server
                .store
                .job_command(
                    server.notifier.as_ref(),
                    server.ws,
                    id,
                    &gepard_core::job::JobCommand::Claim,
                )
                .await
                .expect("start");
        } else {
            let claimed = server
                .store
                .claim_next(server.notifier.as_ref(), "bench", LEASE)
                .await
                .expect("claim")
                .expect("a queued job");
            tokens.insert(claimed.job.id, claimed.lease_token);
        }
    }
    let cpu0 = own_cpu();
    let t0 = Instant::now();
    let writers: Vec<_> = ids
        .iter()
        .map(|&id| {
            let client = http.then(|| Client::new(&server.url, Some(runner.to_owned())));
            tokio::spawn(write_stream(
                client,
                server.store.clone(),
                server.notifier.clone(),
                id,
                tokens.get(&id).copied(),
                events,
            ))
        })
        .collect();
    let mut all = Vec::new();
    // Time the writers spent on each quarter of their streams, summed over writers.
    let mut per_quarter = [Duration::ZERO; 4];
    for w in writers {
        let lat = w.await.expect("writer");
        for (i, d) in lat.iter().enumerate() {
            per_quarter[(i * 4 / events).min(3)] += *d;
        }
        all.extend(lat);
    }
    let wall = t0.elapsed();
    let cpu = own_cpu().saturating_sub(cpu0);
    // The writers run side by side, so a quarter took (summed time / writers) of wall time.
    let quarters = per_quarter
        .iter()
        .map(|d| (events / 4 * jobs) as f64 / (d.as_secs_f64() / jobs as f64))
        .collect();
    ProgressRow {
        path: if http {
            "HTTP POST …/progress"
        } else {
            "Store::ingest_progress"
        },
        jobs,
        events,
        wall,
        cpu,
        stats: Stats::of(&all),
        quarters,
        load: support::load_average(),
    }
}

async fn run_all(sections: &[String]) {
    println!("exec_store: {}", support::machine());
    if sections.iter().any(|s| s == "claims") {
        let n: usize = env_or("EXEC_CLAIM_JOBS", 1000);
        let mut rows = Vec::new();
        let configs: Vec<(usize, bool)> = std::env::var("EXEC_CLAIMERS")
            .unwrap_or_else(|_| "1,4,4p".into())
            .split(',')
            .filter_map(|c| {
                let c = c.trim();
                let k = c.trim_end_matches('p').parse().ok()?;
                Some((k, c.ends_with('p')))
            })
            .collect();
        let backends: Vec<Backend> = std::env::var("EXEC_DATABASES")
            .unwrap_or_else(|_| "sqlite".into())
            .split(',')
            .map(|d| match d.trim() {
                "postgres" => Backend::Postgres,
                "sqlite" => Backend::Sqlite,
                other => panic!("EXEC_DATABASES: unknown database {other:?} (sqlite or postgres)"),
            })
            .collect();
        for backend in backends {
            for &(k, processes) in &configs {
                let row = claims(n, k, processes, backend).await;
                eprintln!("claims: {} {k} {} done", row.database, row.mode);
                rows.push(row);
            }
        }
        println!();
        println!("| database | claimers | as | jobs | wall s | jobs claimed/s | claim p50 ms | p95 ms | p99 ms | max ms | CPU ms / claim | load avg |");
        println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &rows {
            #[allow(clippy::cast_precision_loss)]
            let rate = r.jobs as f64 / r.wall.as_secs_f64();
            println!(
                "| {} | {} | {} | {} | {:.2} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                r.database,
                r.claimers,
                r.mode,
                r.jobs,
                r.wall.as_secs_f64(),
                r.stats.p50,
                r.stats.p95,
                r.stats.p99,
                r.stats.max,
                r.cpu.as_secs_f64() * 1e3 / r.jobs as f64,
                r.load
            );
        }
    }
    if sections.iter().any(|s| s == "progress") {
        let events: usize = env_or("EXEC_PROGRESS_EVENTS", 2000);
        let jobs: usize = env_or("EXEC_PROGRESS_JOBS", 4);
        let server = common::spawn_server().await;
        let runner = server.publish_examples().await;
        let mut rows = Vec::new();
        for (http, k) in [(true, 1), (false, 1), (true, jobs), (false, jobs)] {
            let row = progress(&server, &runner, http, k, events).await;
            eprintln!("progress: {} × {k} done", row.path);
            rows.push(row);
        }
        println!();
        println!("| path | jobs × events | wall s | events/s | latency p50 ms | p95 ms | p99 ms | max ms | events/s in quarters 1 / 2 / 3 / 4 | CPU ms / event | load avg |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|");
        for r in &rows {
            #[allow(clippy::cast_precision_loss)]
            let rate = (r.jobs * r.events) as f64 / r.wall.as_secs_f64();
            let q: Vec<String> = r.quarters.iter().map(|v| format!("{v:.0}")).collect();
            println!(
                "| {} | {} × {} | {:.2} | {rate:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} |",
                r.path,
                r.jobs,
                r.events,
                r.wall.as_secs_f64(),
                r.stats.p50,
                r.stats.p95,
                r.stats.p99,
                r.stats.max,
                q.join(" / "),
                r.cpu.as_secs_f64() * 1e3 / (r.jobs * r.events) as f64,
                r.load
            );
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Ok(url) = std::env::var(CLAIMER_ENV) {
        rt.block_on(claimer_child(url));
        return;
    }
    let sections: Vec<String> = std::env::var("EXEC_BENCH")
        .unwrap_or_else(|_| "claims,progress".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    rt.block_on(run_all(&sections));
    rt.shutdown_timeout(Duration::from_secs(1));
}
