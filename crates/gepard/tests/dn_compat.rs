//! Drop-in compatibility with the Dreadnode client: every `dn optimize …` subcommand of the
//! PyPI package `dreadnode` (2.0.52) run unchanged against a real gepard server. The server
//! runs in this test process, so the test can play the runtime (claim through the store,
//! progress through the HTTP progress route with a runner key).
//!
//! Needs the `dn` program: `GEPARD_DN_BIN` names it, else `dn` on `PATH`; without it the test
//! is skipped (it says so). `scripts/dn-compat.sh` installs the client and runs this test.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gepard_client::Client;
use gepard_core::job::JobCommand;
use gepard_store::{Notifier, Store};
use serde_json::{json, Value};
use uuid::Uuid;

/// The `dn` program, or `None` (with the reason printed) when it is not installed.
fn dn_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GEPARD_DN_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "GEPARD_DN_BIN={} does not exist", p.display());
        return Some(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("dn"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!(
            "SKIPPED dn_compat: the dreadnode client `dn` is not installed \
             (set GEPARD_DN_BIN, or run scripts/dn-compat.sh)"
        );
    }
    found
}

struct Server {
    url: String,
    key: String,
    runner: String,
    store: Store,
    notifier: Arc<dyn Notifier>,
    ws: Uuid,
    dn: PathBuf,
    dir: tempfile::TempDir,
}

async fn server(dn: PathBuf) -> Server {
    let s = common::spawn_server().await;
    std::fs::create_dir(s.dir.path().join("home")).unwrap();
    let runner = s.publish_examples().await;
    Server {
        url: s.url,
        key: s.key,
        runner,
        store: s.store,
        notifier: s.notifier,
        ws: s.ws,
        dn,
        dir: s.dir,
    }
}

/// A finished `dn` run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }

    fn failed(&self) -> &Self {
        assert_eq!(self.code, Some(1), "{self}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self}"))
    }

    /// Both streams, as the user sees them.
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Server {
    /// `dn optimize ARGS` against this server, as a user with a fresh home directory runs it.
    async fn dn(&self, args: &[&str]) -> Run {
        let mut c = Command::new(&self.dn);
        for (k, _) in std::env::vars() {
            if k.starts_with("DREADNODE_") || k.starts_with("GEPARD_") {
                c.env_remove(k);
            }
        }
        c.arg("optimize")
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("DREADNODE_SERVER", &self.url)
            .env("DREADNODE_API_KEY", &self.key)
            .env("DREADNODE_ORGANIZATION", "local")
            .env("DREADNODE_WORKSPACE", "default")
            // Wide, plain output, so messages are not wrapped or colored.
            .env("COLUMNS", "500")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
            .into()
    }

    /// The id of the job named `name`, once a `dn` process has submitted it.
    async fn job_named(&self, name: &str) -> Uuid {
        for _ in 0..400 {
            let page = self
                .store
                .list_jobs(
                    self.ws,
                    &Default::default(),
                    gepard_core::PageRequest::new(None, Some(100)).unwrap(),
                )
                .await
                .unwrap();
            if let Some(j) = page.items.iter().find(|j| j.name.as_deref() == Some(name)) {
                return j.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dn never submitted the job {name}");
    }

    async fn command(&self, id: Uuid, command: JobCommand) {
        self.store
            .job_command(self.notifier.as_ref(), self.ws, id, &command)
            .await
            .unwrap();
    }

    async fn progress(&self, id: Uuid, event: Value) {
        Client::new(&self.url, Some(self.runner.clone()))
            .job_progress("local", "default", &id.to_string(), &event)
            .await
            .unwrap();
    }

    /// Plays a whole successful run: start, a validation, an accepted candidate, the end.
    async fn run_to_completion(&self, id: Uuid) {
        self.command(id, JobCommand::Claim).await;
        self.progress(
            id,
            json!({"event_type": "optimization_start", "message": "starting",
                   "summary": {"train_size": 60, "val_size": 30, "seed_score": 0.5}}),
        )
        .await;
        self.progress(
            id,
            json!({"event_type": "valset_evaluated", "iteration": 0,
                   "summary": {"best_score": 0.5, "best_scores": {"0": 1.0, "1": 0.0}},
                   "metrics": {"val_score": [{"value": 0.5, "step": 0}],
                               "metric_calls_used": [{"value": 30, "step": 0}]}}),
        )
        .await;
        self.progress(
            id,
            json!({"event_type": "candidate_accepted", "iteration": 1, "level": "warning",
                   "message": "a better candidate", "data": {"candidate": 1},
                   "summary": {"best_score": 0.8, "frontier_size": 2,
                               "best_candidate": {"instructions": "Answer positive or negative."}},
                   "metrics": {"best_score": [{"value": 0.8, "step": 1}]}}),
        )
        .await;
        self.progress(
            id,
            json!({"event_type": "optimization_end", "summary": {"best_score": 0.8},
                   "artifacts": {"best_instructions": "Answer positive or negative."}}),
        )
        .await;
    }
}

/// `dn optimize submit` with the optional flags a user would pass (values differ from
/// gepard's defaults so the test can see they arrive).
fn submit_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "submit",
        "--model",
        "openai/gpt-4o-mini",
        "--capability",
        "sentiment@1.0.0",
        "--dataset",
        "sentiment-train@1.0.0",
        "--val-dataset",
        "sentiment-val@1.0.0",
        "--reward-recipe",
        "exact_match_v1",
        "--name",
        name,
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dn_optimize_subcommand_works_against_gepard() {
    let Some(dn) = dn_bin() else { return };
    let s = server(dn).await;

    // submit, with the optional flags and the project (dn sends its id).
    let first = s
        .dn(&submit_args(
            "first",
            &[
                "--project",
                "default",
                "--objective",
                "be right",
                "--tag",
                "a",
                "--tag",
                "b",
                "--run-ref",
                "run-1",
                "--agent-name",
                "classifier",
                "--reward-params",
                "{}",
                "--seed",
                "7",
                "--max-metric-calls",
                "50",
                "--max-trials",
                "5",
                "--max-trials-without-improvement",
                "3",
                "--max-runtime-sec",
                "600",
                "--reflection-lm",
                "openai/gpt-4o",
                "--max-reflection-examples",
                "5",
                "--max-side-info-chars",
                "2000",
                "--concurrency",
                "2",
                "--track-best-outputs",
                "--no-capture-traces",
                "--dataset-input-mapping",
                r#"{"goal": "goal"}"#,
                "--json",
            ],
        ))
        .await;
    let job = first.ok().json();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["name"], "first");
    assert_eq!(job["project"], "default");
    assert_eq!(job["objective"], "be right");
    assert_eq!(job["run_ref"], "run-1");
    assert_eq!(job["tags"], json!(["a", "b"]));
    assert_eq!(job["agent_name"], "classifier");
    assert_eq!(job["capability"]["name"], "sentiment");
    assert_eq!(job["dataset_ref"]["name"], "sentiment-train");
    assert_eq!(job["val_dataset_ref"]["name"], "sentiment-val");
    assert_eq!(job["reward_recipe"]["name"], "exact_match_v1");
    let cfg = &job["config"];
    assert_eq!(cfg["seed"], 7);
    assert_eq!(cfg["max_metric_calls"], 50);
    assert_eq!(cfg["max_trials"], 5);
    assert_eq!(cfg["max_runtime_sec"], 600);
    assert_eq!(cfg["reflection_lm"], "openai/gpt-4o");
    assert_eq!(cfg["concurrency"], 2);
    assert_eq!(cfg["track_best_outputs"], true);
    assert_eq!(cfg["capture_traces"], false);
    assert_eq!(cfg["dataset_input_mapping"], json!({"goal": "goal"}));

    // list, get, logs, artifacts of a queued job.
    assert!(s.dn(&["list"]).await.ok().stdout.contains(&id));
    let rows = s
        .dn(&["list", "--page-size", "1", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    let queued = s.dn(&["list", "--status", "queued", "--json"]).await;
    assert_eq!(queued.ok().json()[0]["id"], id.as_str());
    let none = s.dn(&["list", "--status", "completed", "--json"]).await;
    assert_eq!(none.ok().json(), json!([]));
    assert!(s.dn(&["get", &id]).await.ok().stdout.contains(&id));
    assert_eq!(
        s.dn(&["get", &id, "--json"]).await.ok().json()["id"],
        id.as_str()
    );
    let logs = s.dn(&["logs", &id, "--json"]).await.ok().json();
    assert_eq!(logs["items"][0]["level"], "info");
    assert!(s.dn(&["logs", &id]).await.ok().stdout.contains("info"));
    let arts = s.dn(&["artifacts", &id, "--json"]).await.ok().json();
    assert_eq!(arts, json!({"artifacts": {}}));
    assert_eq!(s.dn(&["artifacts", &id]).await.ok().stdout.trim(), "{}");

    // wait gives up on a job nobody runs.
    let timed_out = s
        .dn(&[
            "wait",
            &id,
            "--timeout-sec",
            "1",
            "--poll-interval-sec",
            "0.2",
        ])
        .await;
    assert!(
        timed_out.failed().text().contains("Timed out"),
        "{timed_out}"
    );

    // cancel asks for --yes; a queued job is cancelled at once; twice is a conflict.
    let refused = s.dn(&["cancel", &id]).await;
    assert!(refused.failed().text().contains("--yes"), "{refused}");
    let cancelled = s.dn(&["cancel", &id, "--yes", "--json"]).await.ok().json();
    assert_eq!(cancelled["status"], "cancelled");
    let again = s.dn(&["cancel", &id, "--yes"]).await;
    assert!(again.failed().text().contains("409"), "{again}");

    // retry queues it again; a queued job cannot be retried.
    let retried = s.dn(&["retry", &id, "--json"]).await.ok().json();
    assert_eq!(retried["status"], "queued");
    assert!(s.dn(&["retry", &id]).await.failed().text().contains("409"));
    assert!(s.dn(&["logs", &id]).await.ok().stdout.contains("retry"));

    // The runtime runs it: get shows the live job, cancel of a running job is a request.
    let uid: Uuid = id.parse().unwrap();
    s.command(uid, JobCommand::Claim).await;
    s.progress(
        uid,
        json!({"event_type": "valset_evaluated", "level": "debug",
               "summary": {"best_score": 0.4, "best_scores": {"0": 0.4}},
               "metrics": {"val_score": [{"value": 0.4, "step": 0}]}}),
    )
    .await;
    let running = s.dn(&["get", &id, "--json"]).await.ok().json();
    assert_eq!(running["status"], "running");
    assert!(running["started_at"].is_string());
    assert_eq!(running["summary"]["best_score"], 0.4);
    assert_eq!(running["metrics"]["val_score"][0]["value"], 0.4);
    let requested = s.dn(&["cancel", &id, "--yes", "--json"]).await.ok().json();
    assert_eq!(requested["status"], "running");
    assert!(requested["cancel_requested_at"].is_string());
    s.command(uid, JobCommand::RunnerStopped).await;
    let stopped = s.dn(&["wait", &id, "--poll-interval-sec", "0.2"]).await;
    assert!(stopped.failed().text().contains("cancelled"), "{stopped}");

    // wait on a job that completes; its logs and artifacts afterwards.
    let second = s.dn(&submit_args("second", &["--json"])).await.ok().json();
    let id2 = second["id"].as_str().unwrap().to_owned();
    s.run_to_completion(id2.parse().unwrap()).await;
    let done = s
        .dn(&["wait", &id2, "--poll-interval-sec", "0.2", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["summary"]["best_score"], 0.8);
    assert_eq!(done["summary"]["train_size"], 60);
    assert_eq!(
        done["summary"]["best_candidate"]["instructions"],
        "Answer positive or negative."
    );
    let logs = s.dn(&["logs", &id2, "--json"]).await.ok().json();
    let levels: Vec<_> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["level"].as_str().unwrap().to_owned())
        .collect();
    assert!(levels.iter().any(|l| l == "warning"), "{logs}");
    assert!(logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["data"].is_object()));
    assert!(s
        .dn(&["logs", &id2])
        .await
        .ok()
        .stdout
        .contains("a better candidate"));
    let arts = s.dn(&["artifacts", &id2, "--json"]).await.ok().json();
    assert_eq!(
        arts["artifacts"]["best_instructions"],
        "Answer positive or negative."
    );
    let completed = s.dn(&["list", "--status", "completed", "--json"]).await;
    assert_eq!(completed.ok().json()[0]["id"], id2.as_str());

    // submit --wait: exit 0 when the job completes, 1 with the error when it fails.
    let waiting = {
        let s = &s;
        async move {
            s.dn(&submit_args(
                "third",
                &["--wait", "--poll-interval-sec", "0.2", "--json"],
            ))
            .await
        }
    };
    let play = async {
        let id3 = s.job_named("third").await;
        s.run_to_completion(id3).await;
    };
    let (third, ()) = tokio::join!(waiting, play);
    let third = third.ok().json();
    assert_eq!(third["status"], "completed");
    assert_eq!(third["summary"]["best_score"], 0.8);

    let waiting = {
        let s = &s;
        async move {
            s.dn(&submit_args(
                "fourth",
                &["--wait", "--poll-interval-sec", "0.2"],
            ))
            .await
        }
    };
    let play = async {
        let id4 = s.job_named("fourth").await;
        s.command(id4, JobCommand::Claim).await;
        s.progress(
            id4,
            json!({"event_type": "optimization_error", "error": "the model said no"}),
        )
        .await;
    };
    let (fourth, ()) = tokio::join!(waiting, play);
    assert!(
        fourth.failed().text().contains("the model said no"),
        "{fourth}"
    );

    // A submission gepard refuses fails with its reason.
    let missing = s
        .dn(&[
            "submit",
            "--model",
            "openai/gpt-4o-mini",
            "--capability",
            "nope@1.0.0",
            "--dataset",
            "sentiment-train@1.0.0",
            "--reward-recipe",
            "exact_match_v1",
        ])
        .await;
    assert!(missing.failed().text().contains("nope"), "{missing}");

    // Everything dn submitted is listed.
    let all = s
        .dn(&["list", "--page-size", "100", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(all.as_array().unwrap().len(), 4);
}
