//! Execution benchmarks of whole runs: the real `gepard serve` (this package's release binary,
//! SQLite, embedded workers) as a child process, each job run by a real `gepard run-job`
//! grandchild, against a fake OpenAI-compatible model served by this process on 127.0.0.1
//! (`tests/common`'s fake with a deterministic answer function: reflection answers are fenced
//! and add a numbered rule, and the more rules an instruction has, the more task answers are
//! right, so runs propose, accept and reject candidates like a real one).
//!
//! 1. **Overhead per metric call.** A 1,000-metric-call job on a zero-latency fake: the job's
//!    wall time from claim to end (`started_at` → `completed_at`, server clock) against the
//!    same engine run in-process by `gepard optimize local` with the same settings and seed
//!    (which must end with the same metric calls and scores), divided by the metric calls;
//!    and the CPU time of the server process (`/proc/<pid>/stat` utime + stime) and of its
//!    reaped run-job child (cutime + cstime) per metric call.
//! 2. **Peak memory with 8 running jobs.** `gepard serve --workers 8`, 8 jobs at once on a
//!    fake with some latency; `VmHWM` / `VmRSS` of the server and of each run-job child,
//!    sampled from `/proc` every 50 ms.
//! 3. **Cancel to stopped.** A running job whose model call hangs (the fake sleeps 60 s):
//!    time from `POST …/cancel` until `GET …/jobs/{id}` reads `cancelled`, and until the
//!    run-job child has exited.
//!
//! Run: `cargo bench -p gepard --bench exec_runs`. Knobs (environment): `EXEC_BENCH`
//! (sections, default `overhead,memory,cancel`), `EXEC_OVERHEAD_RUNS` (3),
//! `EXEC_METRIC_CALLS` (1000), `EXEC_MEMORY_DELAY_MS` (20), `EXEC_CANCEL_RUNS` (10).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gepard_agent::bundle::Bundle;
use gepard_client::Client;
use gepard_core::auth::ApiKeySecret;
use gepard_core::model::Job;
use serde_json::{json, Value};
use support::{env_or, Stats};

const BIN: &str = env!("CARGO_BIN_EXE_gepard");
/// Training and validation rows of the bench dataset.
const TRAIN_ROWS: usize = 60;
const VAL_ROWS: usize = 40;
/// Evaluations in flight per run (job config `concurrency`, `--concurrency`).
const CONCURRENCY: u64 = 4;
/// Longest any one wait may take; the run stops by itself.
const PATIENCE: Duration = Duration::from_secs(300);

fn stable_hash(parts: &[&str]) -> u64 {
    // SipHash with fixed keys: the same answer for the same request in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// The bench model. Reflection: the current instruction plus one numbered rule (its text
/// depends on the examples shown, so siblings differ). Task: the gold label with a
/// probability that grows with the rules in the instructions, else the wrong one.
fn answer(system: &str, user: &str) -> String {
    if let Some(current) = common::reflection_of(user) {
        let rule = current.matches("Rule ").count() + 1;
        let cue = stable_hash(&[user]) % 1000;
        return format!("Here is a better instruction:\n```\n{current}\nRule {rule}: weigh cue {cue} before answering.\n```");
    }
    let positive = user.contains(" good ");
    let skill = (15 + 12 * system.matches("Rule ").count()).min(95) as u64;
    let right = stable_hash(&[system, user]) % 100 < skill;
    if positive == right {
        "positive"
    } else {
        "negative"
    }
    .to_owned()
}

/// The bench capability and datasets, as directories (for `optimize local`) and bundles.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let write = |p: &str, text: String| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write(
            "cap/capability.yaml",
            "name: bench\nversion: 1.0.0\n".into(),
        );
        write(
            "cap/agents/classifier.md",
            "---\nname: classifier\n---\nClassify the sentiment of the text.\n".into(),
        );
        for (name, n) in [("train", TRAIN_ROWS), ("val", VAL_ROWS)] {
            let rows: String = (0..n)
                .map(|i| {
                    let (word, label) = if stable_hash(&[name, &i.to_string()]) % 2 == 0 {
                        ("good", "positive")
                    } else {
                        ("bad", "negative")
                    };
                    let goal = format!(
                        "{name} review {i}: the service was {word} and the food arrived on time."
                    );
                    format!("{}\n", json!({"goal": goal, "expected_output": label}))
                })
                .collect();
            write(
                &format!("{name}/dataset.yaml"),
                format!("name: bench-{name}\nversion: 1.0.0\n"),
            );
            write(&format!("{name}/rows.jsonl"), rows);
        }
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    async fn publish(&self, client: &Client) {
        let cap = Bundle::from_dir(&self.path("cap")).expect("capability");
        client
            .publish_capability("local", cap.to_tar_gz())
            .await
            .expect("publish capability");
        for ds in ["train", "val"] {
            let b = Bundle::from_dir(&self.path(ds)).expect("dataset");
            client
                .publish_dataset("local", b.to_tar_gz())
                .await
                .expect("publish dataset");
        }
    }

    fn job_body(seed: u64, metric_calls: u64) -> Value {
        json!({
            "model": "openai/fake", "capability_ref": {"name": "bench", "version": "1.0.0"},
            "dataset_ref": {"name": "bench-train", "version": "1.0.0"},
            "val_dataset_ref": {"name": "bench-val", "version": "1.0.0"},
            "reward_recipe": {"name": "exact_match_v1", "params": {}},
            "config": {"seed": seed, "max_metric_calls": metric_calls, "reflection_minibatch_size": 3, "concurrency": CONCURRENCY}
        })
    }
}

/// A `gepard serve` child process with its own data directory.
struct Server {
    child: tokio::process::Child,
    pid: u32,
    client: Client,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start(workers: u32, model_url: &str) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let key = ApiKeySecret::generate();
        let log = std::fs::File::create(data.path().join("serve.log")).expect("log file");
        let child = tokio::process::Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--data-dir")
            .arg(data.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GEPARD_ADMIN_KEY", key.expose())
            .env("OPENAI_BASE_URL", model_url)
            .env("OPENAI_API_KEY", "bench")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start gepard serve");
        let pid = child.id().expect("server pid");
        let client = Client::new(
            &format!("http://127.0.0.1:{port}"),
            Some(key.expose().to_owned()),
        );
        let t0 = Instant::now();
        while client.healthz().await.is_err() {
            assert!(t0.elapsed() < PATIENCE, "gepard serve did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            pid,
            client,
            _data: data,
        }
    }

    async fn submit(&self, body: &Value) -> Job {
        self.client
            .create_job("local", "default", body, None)
            .await
            .expect("create job")
            .1
    }

    async fn job(&self, id: uuid::Uuid) -> Job {
        self.client
            .job("local", "default", &id.to_string())
            .await
            .expect("get job")
    }

    /// Waits until the job is terminal, polling every `every`.
    async fn wait_terminal(&self, id: uuid::Uuid, every: Duration) -> Job {
        let t0 = Instant::now();
        loop {
            let j = self.job(id).await;
            if j.status.is_terminal() {
                return j;
            }
            assert!(t0.elapsed() < PATIENCE, "job {id} still {:?}", j.status);
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until the server has no child processes (every run-job reaped).
    async fn wait_childless(&self) {
        let t0 = Instant::now();
        while !support::children_of(self.pid).is_empty() {
            assert!(t0.elapsed() < PATIENCE, "a run-job child does not exit");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many log entries a job has (a page holds at most 1,000).
    async fn log_count(&self, id: &str) -> usize {
        let (mut n, mut after) = (0, 0);
        loop {
            let page = self
                .client
                .job_logs("local", "default", id, after, 1000)
                .await
                .expect("job logs");
            n += page.len();
            match page.last() {
                Some(last) if page.len() == 1000 => after = last.seq,
                _ => return n,
            }
        }
    }

    /// A job's status, error and last log lines, for a failure message.
    async fn explain(&self, id: uuid::Uuid) -> String {
        let j = self.job(id).await;
        let logs = self
            .client
            .job_logs("local", "default", &id.to_string(), 0, 1000)
            .await
            .unwrap_or_default();
        let tail: Vec<String> = logs[logs.len().saturating_sub(8)..]
            .iter()
            .map(|l| l.entry.message.clone())
            .collect();
        format!(
            "{:?} (error {:?}); last log lines: {tail:#?}",
            j.status, j.error
        )
    }

    async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// What `gepard optimize local --json` reported, and what it cost.
struct LocalRun {
    wall: Duration,
    cpu: Duration,
    metric_calls: u64,
    best: f64,
    seed_score: f64,
}

async fn local_run(inputs: &Inputs, model_url: &str, seed: u64, metric_calls: u64) -> LocalRun {
    let before = support::cpu(std::process::id()).expect("own CPU").children;
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["optimize", "local", "--capability"])
        .arg(inputs.path("cap"))
        .arg("--dataset")
        .arg(inputs.path("train/rows.jsonl"))
        .arg("--val-dataset")
        .arg(inputs.path("val/rows.jsonl"))
        .args([
            "--model",
            "openai/fake",
            "--reward-recipe",
            "exact_match_v1",
        ])
        .args(["--max-metric-calls", &metric_calls.to_string()])
        .args(["--seed", &seed.to_string()])
        .args([
            "--concurrency",
            &CONCURRENCY.to_string(),
            "--minibatch",
            "3",
            "--json",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GEPARD_DATA_DIR", inputs.path("local-data"))
        .env("OPENAI_BASE_URL", model_url)
        .env("OPENAI_API_KEY", "bench");
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run gepard optimize local");
    let wall = t0.elapsed();
    assert!(
        out.status.success(),
        "optimize local failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = support::cpu(std::process::id()).expect("own CPU").children;
    let v: Value = serde_json::from_slice(&out.stdout).expect("optimize local --json");
    LocalRun {
        wall,
        cpu: after.saturating_sub(before),
        metric_calls: v["metric_calls"].as_u64().unwrap_or(0),
        best: v["best_val_score"].as_f64().unwrap_or(f64::NAN),
        seed_score: v["seed_val_score"].as_f64().unwrap_or(f64::NAN),
    }
}

fn per_call_ms(d: Duration, calls: u64) -> f64 {
    d.as_secs_f64() * 1e3 / calls.max(1) as f64
}

async fn overhead() {
    let runs: u64 = env_or("EXEC_OVERHEAD_RUNS", 3);
    let budget: u64 = env_or("EXEC_METRIC_CALLS", 1000);
    let fake = common::fake_model(Duration::ZERO, answer).await;
    let inputs = Inputs::new();
    let server = Server::start(1, &fake.url).await;
    inputs.publish(&server.client).await;
    println!();
    println!("### Overhead per metric call ({budget}-call budget, zero-latency fake, concurrency {CONCURRENCY})");
    println!();
    println!("| seed | metric calls | val seed → best | log entries / metric points / candidates | `optimize local` wall s | job claim → end wall s | overhead ms / metric call | server CPU ms / call | run-job CPU ms / call | `optimize local` CPU ms / call | queue wait s | load avg |");
    println!("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut overheads = Vec::new();
    for seed in 0..runs {
        let local = local_run(&inputs, &fake.url, seed, budget).await;
        let cpu0 = support::cpu(server.pid).expect("server CPU");
        let job = server.submit(&Inputs::job_body(seed, budget)).await;
        let job = server
            .wait_terminal(job.id, Duration::from_millis(250))
            .await;
        server.wait_childless().await;
        let cpu1 = support::cpu(server.pid).expect("server CPU");
        let calls = u64::try_from(job.usage.metric_calls).unwrap_or(0);
        assert_eq!(
            job.status,
            gepard_core::job::JobStatus::Completed,
            "{:?}",
            job.error
        );
        assert_eq!(
            (calls, job.summary.best_score),
            (local.metric_calls, Some(local.best)),
            "the job and `optimize local` ran the same optimization"
        );
        // Server-side timestamps: the wait in the queue, and claim to end.
        let queued = job.started_at.map_or(Duration::ZERO, |s| {
            (s - job.created_at).to_std().unwrap_or_default()
        });
        let wall = match (job.started_at, job.completed_at) {
            (Some(s), Some(c)) => (c - s).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let over = (wall.as_secs_f64() - local.wall.as_secs_f64()) * 1e3 / calls.max(1) as f64;
        overheads.push(over);
        let id = job.id.to_string();
        let logs = server.log_count(&id).await;
        let points: usize = job.metrics.values().map(Vec::len).sum();
        let candidates = server
            .client
            .job_candidates("local", "default", &id)
            .await
            .expect("candidates")
            .len();
        println!(
            "| {seed} | {calls} | {:.3} → {:.3} | {logs} / {points} / {candidates} | {:.3} | {:.3} | {over:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {} |",
            local.seed_score,
            local.best,
            local.wall.as_secs_f64(),
            wall.as_secs_f64(),
            per_call_ms(cpu1.own.saturating_sub(cpu0.own), calls),
            per_call_ms(cpu1.children.saturating_sub(cpu0.children), calls),
            per_call_ms(local.cpu, calls),
            queued.as_secs_f64(),
            support::load_average(),
        );
    }
    overheads.sort_by(f64::total_cmp);
    println!();
    println!(
        "median overhead: {:.3} ms per metric call",
        overheads[overheads.len() / 2]
    );
    server.stop().await;
}

async fn memory() {
    let delay = Duration::from_millis(env_or("EXEC_MEMORY_DELAY_MS", 20));
    let budget: u64 = env_or("EXEC_METRIC_CALLS", 1000);
    let fake = common::fake_model(delay, answer).await;
    let inputs = Inputs::new();
    let server = Server::start(8, &fake.url).await;
    inputs.publish(&server.client).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = support::memory(server.pid).expect("server memory");
    let mut ids = Vec::new();
    for seed in 0..8 {
        ids.push(server.submit(&Inputs::job_body(seed, budget)).await.id);
    }
    let (mut peak_children, mut peak_total, mut peak_server_rss) = (0usize, 0f64, 0f64);
    let mut child_hwm: HashMap<u32, f64> = HashMap::new();
    let mut last_check = Instant::now();
    let t0 = Instant::now();
    loop {
        let kids = support::children_of(server.pid);
        let server_mem = support::memory(server.pid).expect("server memory");
        let mut total = server_mem.rss;
        for &k in &kids {
            if let Some(m) = support::memory(k) {
                total += m.rss;
                let e = child_hwm.entry(k).or_default();
                *e = e.max(m.hwm);
            }
        }
        peak_children = peak_children.max(kids.len());
        peak_total = peak_total.max(total);
        peak_server_rss = peak_server_rss.max(server_mem.rss);
        if last_check.elapsed() > Duration::from_millis(500) {
            last_check = Instant::now();
            let mut done = true;
            for &id in &ids {
                done &= server.job(id).await.status.is_terminal();
            }
            if done {
                break;
            }
            assert!(t0.elapsed() < PATIENCE, "the 8 jobs did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = t0.elapsed();
    for &id in &ids {
        let j = server.job(id).await;
        assert_eq!(
            j.status,
            gepard_core::job::JobStatus::Completed,
            "{:?}",
            j.error
        );
    }
    server.wait_childless().await;
    let end = support::memory(server.pid).expect("server memory");
    let mut hwms: Vec<f64> = child_hwm.values().copied().collect();
    hwms.sort_by(f64::total_cmp);
    println!();
    println!("### Peak memory: `gepard serve --workers 8`, 8 jobs of {budget} metric calls at once, fake latency {} ms", delay.as_millis());
    println!();
    println!("| what | MiB |");
    println!("|---|---:|");
    println!(
        "| server VmHWM after start-up and publishing (idle) | {:.1} |",
        idle.hwm
    );
    println!(
        "| server VmHWM after the 8 jobs (peak over the whole run) | {:.1} |",
        end.hwm
    );
    println!("| server VmRSS, highest sample while running | {peak_server_rss:.1} |");
    println!(
        "| run-job child VmHWM, median of {} children | {:.1} |",
        hwms.len(),
        hwms.get(hwms.len() / 2).copied().unwrap_or(0.0)
    );
    println!(
        "| run-job child VmHWM, largest | {:.1} |",
        hwms.last().copied().unwrap_or(0.0)
    );
    println!("| server + children VmRSS, highest sample | {peak_total:.1} |");
    println!();
    println!(
        "run-job children alive at once: at most {peak_children}; all 8 jobs ended in {:.1} s; load avg {}",
        wall.as_secs_f64(),
        support::load_average()
    );
    server.stop().await;
}

async fn cancel() {
    let runs: usize = env_or("EXEC_CANCEL_RUNS", 10);
    let fake = common::fake_model(Duration::from_secs(60), answer).await;
    let inputs = Inputs::new();
    let server = Server::start(1, &fake.url).await;
    inputs.publish(&server.client).await;
    let (mut to_cancelled, mut to_exited) = (Vec::new(), Vec::new());
    for seed in 0..runs {
        let before = fake.calls.load(std::sync::atomic::Ordering::SeqCst);
        let job = server.submit(&Inputs::job_body(seed as u64, 1000)).await;
        let t0 = Instant::now();
        while fake.calls.load(std::sync::atomic::Ordering::SeqCst) == before {
            assert!(t0.elapsed() < PATIENCE, "the job never called the model");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the run settle into waiting on its model calls, for a different time in each
        // run so the cancel lands at every phase of the worker's 250 ms cancel check.
        let settle = 300 + (seed as u64 * 97) % 250;
        tokio::time::sleep(Duration::from_millis(settle)).await;
        assert_eq!(
            server.job(job.id).await.status,
            gepard_core::job::JobStatus::Running
        );
        let id = job.id.to_string();
        let t0 = Instant::now();
        server
            .client
            .cancel_job("local", "default", &id)
            .await
            .expect("cancel");
        let (mut cancelled, mut exited) = (None, None);
        while cancelled.is_none() || exited.is_none() {
            if cancelled.is_none()
                && server.job(job.id).await.status == gepard_core::job::JobStatus::Cancelled
            {
                cancelled = Some(t0.elapsed());
            }
            if exited.is_none() && support::children_of(server.pid).is_empty() {
                exited = Some(t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "not stopped after 30 s: children {:?}, job {}",
                support::children_of(server.pid),
                server.explain(job.id).await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        to_cancelled.push(cancelled.unwrap_or_default());
        to_exited.push(exited.unwrap_or_default());
        eprintln!(
            "cancel {seed}: {} ms",
            support::ms(cancelled.unwrap_or_default())
        );
    }
    let (c, x) = (Stats::of(&to_cancelled), Stats::of(&to_exited));
    println!();
    println!(
        "### Cancel to stopped: a job whose model calls hang (the fake sleeps 60 s), {runs} runs"
    );
    println!();
    println!("| from `POST …/cancel` until | mean ms | p50 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `GET …/jobs/{{id}}` reads `cancelled` | {:.1} | {:.1} | {:.1} |",
        c.mean, c.p50, c.max
    );
    println!(
        "| the run-job child has exited | {:.1} | {:.1} | {:.1} |",
        x.mean, x.p50, x.max
    );
    println!();
    println!("load avg {}", support::load_average());
    server.stop().await;
}

fn main() {
    let sections: Vec<String> = std::env::var("EXEC_BENCH")
        .unwrap_or_else(|_| "overhead,memory,cancel".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("exec_runs: {}; gepard binary {BIN}", support::machine());
    rt.block_on(async {
        for s in &sections {
            match s.as_str() {
                "overhead" => overhead().await,
                "memory" => memory().await,
                "cancel" => cancel().await,
                other => eprintln!("unknown section `{other}`"),
            }
        }
    });
    // A fake call still sleeping in its handler dies with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
}
