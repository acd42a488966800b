//! Write-to-watcher latency of live job events (`GET …/events`) with 1, 100 and 1,000 watchers
//! of one running job.
//!
//! Everything is real and in this process: a SQLite file in a temp dir, the real router
//! served on a 127.0.0.1 TCP listener, N HTTP SSE connections with an API key, and a writer
//! posting `POST …/progress` with a runner key. For each event the clock starts just before the
//! writer sends its request and stops when a watcher has parsed the matching `log` event
//! (matched by its message, `fanout <i>`). Prints a markdown table.
//!
//! Run: `cargo bench -p gepard-server --bench sse_fanout`. Knobs (environment):
//! `SSE_FANOUT_WATCHERS` (default `1,100,1000`), `SSE_FANOUT_EVENTS` (default 40),
//! `SSE_FANOUT_PAUSE_MS` (default 50). Every wait is bounded; the run stops by itself.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gepard_agent::bundle::Bundle;
use gepard_client::{Client, SseParser};
use gepard_core::auth::ApiKeySecret;
use gepard_core::job::JobCommand;
use gepard_server::{router, AppState};
use gepard_store::{Bootstrap, LocalNotifier, Notifier, Store};
use serde_json::{json, Value};
use support::{env_or, Stats};
use tokio::sync::Semaphore;

// The execution benches' statistics and knobs (standard library only), shared by path as the
// binary's benches share their test helpers: two benches of two crates need no support crate.
#[path = "../../gepard/benches/support/mod.rs"]
mod support;

/// Longest a watcher waits for its next chunk, and for everything to connect.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a whole run of one size may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// Watchers connecting at once (a burst of 1,000 connects only measures the accept queue).
const CONNECT_CONCURRENCY: usize = 50;

struct Server {
    url: String,
    admin: String,
    runner: String,
    job: String,
    _dir: tempfile::TempDir,
}

/// A bootstrapped server with the example capability and datasets, and one running job.
async fn server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("g.db").display()))
        .await
        .expect("sqlite store");
    let key = ApiKeySecret::generate();
    store
        .bootstrap(&Bootstrap::first_start(key.clone()))
        .await
        .expect("bootstrap");
    let notifier: Arc<dyn Notifier> = Arc::new(LocalNotifier::default());
    let app = router(AppState::with_notifier(store.clone(), notifier.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        gepard_server::serve(listener, app, std::future::pending())
            .await
            .expect("serve");
    });
    let admin = key.expose().to_owned();
    let client = Client::new(&url, Some(admin.clone()));
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let cap = Bundle::from_dir(&examples.join("capabilities/sentiment"))
        .expect("example capability")
        .to_tar_gz();
    client
        .publish_capability("local", cap)
        .await
        .expect("publish capability");
    for ds in ["sentiment-train", "sentiment-val"] {
        let b = Bundle::from_dir(&examples.join("datasets").join(ds))
            .expect("example dataset")
            .to_tar_gz();
        client
            .publish_dataset("local", b)
            .await
            .expect("publish dataset");
    }
    let runner = client
        .create_key("local", "runtime", &["runner".into()], None)
        .await
        .expect("runner key")
        .key;
    let body = json!({
        "name": "fanout", "backend": "gepa", "target_kind": "capability_agent", "model": "openai/gpt-4o-mini",
        "project": null, "run_ref": null, "capability_ref": {"name": "sentiment", "version": "1.0.0"},
        "agent_name": null, "dataset_ref": {"name": "sentiment-train", "version": "1.0.0"},
        "val_dataset_ref": {"name": "sentiment-val", "version": "1.0.0"},
        "reward_recipe": {"name": "exact_match_v1", "params": {}}, "components": ["instructions"],
        "objective": null, "tags": [], "config": {"seed": 0, "max_metric_calls": 100, "concurrency": 1, "max_trials": null}
    });
    let (_, job) = client
        .create_job("local", "default", &body, None)
        .await
        .expect("create job");
    let org = store.org_by_key("local").await.expect("org").expect("org");
    let ws = store
        .workspace_by_key(org.id, "default")
        .await
        .expect("workspace")
        .expect("workspace");
    // Claimed the way a worker does, so the job is running before anyone watches.
    store
        .job_command(notifier.as_ref(), ws.id, job.id, &JobCommand::Claim)
        .await
        .expect("claim");
    Server {
        url,
        admin,
        runner,
        job: job.id.to_string(),
        _dir: dir,
    }
}

/// One watcher: follows the stream and notes when it parsed each `fanout <i>` log entry.
/// Returns after all `events` arrived, the stream ended, or a step timed out.
async fn watch(
    http: reqwest::Client,
    url: String,
    key: String,
    events: usize,
    ready: Arc<AtomicUsize>,
    connect: Arc<Semaphore>,
) -> Vec<Option<Instant>> {
    let mut seen: Vec<Option<Instant>> = vec![None; events];
    let permit = connect.acquire_owned().await.expect("semaphore");
    let resp =
        match tokio::time::timeout(STEP_TIMEOUT, http.get(&url).header("X-API-Key", key).send())
            .await
        {
            Ok(Ok(r)) if r.status().is_success() => r,
            Ok(Ok(r)) => panic!("GET events: {}", r.status()),
            Ok(Err(e)) => panic!("GET events: {e}"),
            Err(_) => panic!("GET events: no response within {STEP_TIMEOUT:?}"),
        };
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut permit = Some(permit);
    let mut left = events;
    while left > 0 {
        let chunk = match tokio::time::timeout(STEP_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(Some(Err(e))) => {
                eprintln!("watcher: stream error: {e}");
                break;
            }
            Ok(None) | Err(_) => break,
        };
        for ev in parser.feed(&String::from_utf8_lossy(&chunk)) {
            match ev.event.as_str() {
                "snapshot" => {
                    // Connected and subscribed: let the next watcher in.
                    permit.take();
                    ready.fetch_add(1, Ordering::SeqCst);
                }
                "log" => {
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                        continue;
                    };
                    let i = v["message"]
                        .as_str()
                        .and_then(|m| m.strip_prefix("fanout "))
                        .and_then(|n| n.parse::<usize>().ok());
                    if let Some(slot) = i.and_then(|i| seen.get_mut(i)) {
                        if slot.is_none() {
                            *slot = Some(Instant::now());
                            left -= 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    seen
}

struct Row {
    watchers: usize,
    events: usize,
    pairs: usize,
    missed: usize,
    /// Over all (event, watcher) pairs.
    latency: Stats,
    /// Per event, until the last watcher had it.
    slowest: Stats,
    /// The writer's progress requests.
    writes: Stats,
}

async fn run(n: usize, events: usize, pause: Duration) -> Row {
    let s = server().await;
    let path = format!(
        "{}/api/v1/org/local/ws/default/optimization/jobs/{}/events",
        s.url, s.job
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let ready = Arc::new(AtomicUsize::new(0));
    let connect = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let watchers: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(watch(
                http.clone(),
                path.clone(),
                s.admin.clone(),
                events,
                ready.clone(),
                connect.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + STEP_TIMEOUT;
    while ready.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} watchers connected within {STEP_TIMEOUT:?}",
            ready.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the backlogs drain before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let writer = Client::new(&s.url, Some(s.runner.clone()));
    let mut sent = Vec::with_capacity(events);
    let mut writes = Vec::with_capacity(events);
    for i in 0..events {
        let event = json!({"event_type": "iteration_start", "message": format!("fanout {i}"), "iteration": i + 1});
        let t0 = Instant::now();
        tokio::time::timeout(
            STEP_TIMEOUT,
            writer.job_progress("local", "default", &s.job, &event),
        )
        .await
        .expect("progress within the timeout")
        .expect("progress accepted");
        writes.push(t0.elapsed());
        sent.push(t0);
        tokio::time::sleep(pause).await;
    }

    let mut lat = Vec::with_capacity(n * events);
    let mut slowest = vec![Duration::ZERO; events];
    let mut missed = 0;
    for w in watchers {
        let seen = w.await.expect("watcher task");
        for (i, at) in seen.into_iter().enumerate() {
            match at {
                Some(at) => {
                    let d = at.saturating_duration_since(sent[i]);
                    slowest[i] = slowest[i].max(d);
                    lat.push(d);
                }
                None => missed += 1,
            }
        }
    }
    // End the job the way a runtime does; the server closes the remaining streams.
    let _ = tokio::time::timeout(
        STEP_TIMEOUT,
        writer.job_progress(
            "local",
            "default",
            &s.job,
            &json!({"event_type": "optimization_end", "message": "done"}),
        ),
    )
    .await;
    Row {
        watchers: n,
        events,
        pairs: lat.len(),
        missed,
        latency: Stats::of(&lat),
        slowest: Stats::of(&slowest),
        writes: Stats::of(&writes),
    }
}

/// The soft open-file limit (Linux), to check 1,000 connections (two sockets each) fit.
fn open_file_limit() -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_owned)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SSE_FANOUT_WATCHERS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let events: usize = env_or("SSE_FANOUT_EVENTS", 40);
    let pause = Duration::from_millis(env_or("SSE_FANOUT_PAUSE_MS", 50));
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let nofile = open_file_limit().unwrap_or_else(|| "unknown".into());
    println!(
        "sse_fanout: {cores} cores, open-file limit {nofile}, {events} events per size, {} ms apart",
        pause.as_millis()
    );
    if let Ok(limit) = nofile.parse::<usize>() {
        let need = 2 * sizes.iter().copied().max().unwrap_or(0) + 64;
        if limit < need {
            eprintln!(
                "warning: open-file limit {limit} < {need}; raise it with `ulimit -n {need}`"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut rows = Vec::new();
    for &n in &sizes {
        let row = rt
            .block_on(async { tokio::time::timeout(RUN_TIMEOUT, run(n, events, pause)).await })
            .unwrap_or_else(|_| panic!("{n} watchers: no result within {RUN_TIMEOUT:?}"));
        eprintln!("{n} watchers done");
        rows.push(row);
    }
    // Leftover server tasks die with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    println!();
    println!("| watchers | events | (event, watcher) pairs | missed | p50 ms | p99 ms | max ms | all watchers p50 ms | write p50 ms | write p99 ms | write max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.watchers,
            r.events,
            r.pairs,
            r.missed,
            r.latency.p50,
            r.latency.p99,
            r.latency.max,
            r.slowest.p50,
            r.writes.p50,
            r.writes.p99,
            r.writes.max,
        );
    }
}
