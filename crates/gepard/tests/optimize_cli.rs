//! Pins `gepard optimize submit --wait` / `wait` / `logs` / `cancel` / `retry` as a user runs
//! them: the real CLI binary against a real server (in this test process, so the test can
//! play the runtime) whose job progress the test feeds through the progress route.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gepard_client::Client;
use gepard_core::job::JobCommand;
use gepard_store::{Notifier, Store};
use serde_json::{json, Value};

struct Server {
    url: String,
    key: String,
    runner: String,
    store: Store,
    notifier: Arc<dyn Notifier>,
    ws: uuid::Uuid,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let s = common::spawn_server().await;
    let runner = s.publish_examples().await;
    Server {
        url: s.url,
        key: s.key,
        runner,
        store: s.store,
        notifier: s.notifier,
        ws: s.ws,
        _dir: s.dir,
    }
}

impl Server {
    fn cli(&self) -> Command {
        common::cli(&self.url, &self.key, self._dir.path())
    }

    async fn run(&self, args: &[&str]) -> Output {
        common::run_cli(self.cli(), args).await
    }

    /// Submits the example job with the CLI (`--json`) and returns its id.
    async fn submit(&self) -> String {
        let out = self.run(&[SUBMIT, &["--json"]].concat()).await;
        assert_success(&out);
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// The newest job, once the CLI has submitted it.
    async fn wait_for_job(&self) -> uuid::Uuid {
        for _ in 0..200 {
            let page = self
                .store
                .list_jobs(
                    self.ws,
                    &Default::default(),
                    gepard_core::PageRequest::new(None, None).unwrap(),
                )
                .await
                .unwrap();
            if let Some(j) = page.items.first() {
                return j.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the CLI never submitted a job");
    }

    async fn claim(&self, id: uuid::Uuid) {
        self.store
            .job_command(self.notifier.as_ref(), self.ws, id, &JobCommand::Claim)
            .await
            .unwrap();
    }

    /// The oldest queued job, claimed as a worker of this deployment would.
    async fn claim_next(&self) -> gepard_store::Claimed {
        self.store
            .claim_next(self.notifier.as_ref(), "w", Duration::from_secs(60))
            .await
            .unwrap()
            .expect("a queued job")
    }

    async fn progress(&self, id: uuid::Uuid, event: Value) {
        let client = Client::new(&self.url, Some(self.runner.clone()));
        client
            .job_progress("local", "default", &id.to_string(), &event)
            .await
            .unwrap();
    }
}

/// Asserts exit code 0, showing what the command said on stderr otherwise.
fn assert_success(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SUBMIT: &[&str] = &[
    "optimize",
    "submit",
    "--model",
    "openai/gpt-4o-mini",
    "--capability",
    "sentiment@1.0.0",
    "--dataset",
    "sentiment-train@1.0.0",
    "--val-dataset",
    "sentiment-val@1.0.0",
    "--max-metric-calls",
    "200",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_prints_what_the_server_noted_such_as_a_budget_that_covers_only_the_seed() {
    let s = server().await;
    let mut args: Vec<&str> = SUBMIT[..SUBMIT.len() - 1].to_vec();
    args.push("40");
    let out = s.run(&args).await;
    assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("note: max_metric_calls 40 covers the seed evaluation"),
        "{err}"
    );
    // A budget with room for iterations draws no note.
    let out = s.run(SUBMIT).await;
    assert_success(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("note:"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_exits_0_when_the_job_completes() {
    let s = server().await;
    let mut args = SUBMIT.to_vec();
    args.extend(["--wait", "--json"]);
    let mut cmd = s.cli();
    cmd.args(&args).stdin(Stdio::null());
    let child = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    let id = s.wait_for_job().await;
    s.claim(id).await;
    s.progress(id, json!({"event_type": "valset_evaluated", "summary": {"best_score": 0.7}, "metrics": {"metric_calls_used": [{"value": 30, "step": 0}]}})).await;
    s.progress(
        id,
        json!({"event_type": "optimization_end", "summary": {"best_score": 0.8}}),
    )
    .await;
    let out = child.await.unwrap();
    assert_success(&out);
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["summary"]["best_score"], 0.8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_exits_1_when_the_job_fails_and_wait_times_out_with_1() {
    let s = server().await;
    let mut args = SUBMIT.to_vec();
    args.push("--wait");
    let mut cmd = s.cli();
    cmd.args(&args).stdin(Stdio::null());
    let child = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    let id = s.wait_for_job().await;
    s.claim(id).await;
    s.progress(
        id,
        json!({"event_type": "optimization_error", "error": "the model said no"}),
    )
    .await;
    let out = child.await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the model said no"));

    // A queued job that nobody runs: `wait --timeout` gives up with exit 1.
    let queued = s.run(SUBMIT).await;
    assert!(
        queued.status.success(),
        "{}",
        String::from_utf8_lossy(&queued.stderr)
    );
    let text = String::from_utf8_lossy(&queued.stdout).into_owned();
    let new_id = text.split_whitespace().nth(1).unwrap().to_owned();
    let waited = s
        .run(&["optimize", "wait", &new_id, "--timeout", "1"])
        .await;
    assert_eq!(waited.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&waited.stderr).contains("timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_asks_for_confirmation_and_retry_queues_a_new_attempt() {
    let s = server().await;
    let id = s.submit().await;
    let refused = s.run(&["optimize", "cancel", &id]).await;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a missing --yes is a usage error"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let cancelled = s.run(&["optimize", "cancel", &id, "--yes"]).await;
    assert!(String::from_utf8_lossy(&cancelled.stdout).contains("cancelled"));
    let again = s.run(&["optimize", "cancel", &id, "--yes"]).await;
    assert_eq!(
        again.status.code(),
        Some(1),
        "a finished job cannot be cancelled"
    );
    let retried = s.run(&["optimize", "retry", &id]).await;
    assert!(
        String::from_utf8_lossy(&retried.stdout).contains("queued attempt 2"),
        "{}",
        String::from_utf8_lossy(&retried.stdout)
    );
    let logs = s.run(&["optimize", "logs", &id]).await;
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        text.contains("cancelled while queued") && text.contains("retry: attempt 2"),
        "{text}"
    );
    let list = s.run(&["optimize", "list"]).await;
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
    let found = s.run(&["optimize", "list", "--search", &id[..8]]).await;
    let found = String::from_utf8_lossy(&found.stdout).into_owned();
    assert!(
        found.contains(&id) && found.contains("(1 of 1, page 1)"),
        "{found}"
    );
    let none = s
        .run(&["optimize", "list", "--search", "no-such-job"])
        .await;
    let none = String::from_utf8_lossy(&none.stdout).into_owned();
    assert!(
        !none.contains(&id) && none.contains("(0 of 0, page 1)"),
        "{none}"
    );
    let get = s.run(&["optimize", "get", &id]).await;
    let get = String::from_utf8_lossy(&get.stdout).into_owned();
    assert!(get.contains("attempt 2"), "{get}");
    assert!(
        get.contains("earlier    attempt 1: cancelled, no result, 0 metric calls"),
        "the earlier attempt's outcome is shown: {get}"
    );
    let bad = s
        .run(&[
            "optimize",
            "submit",
            "--model",
            "nope",
            "--capability",
            "sentiment@1.0.0",
            "--dataset",
            "sentiment-train@1.0.0",
        ])
        .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("provider/model"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_as_json_prints_one_log_object_per_line_and_nothing_else() {
    let s = server().await;
    let id = s.submit().await;
    let mut cmd = s.cli();
    cmd.args(["--json", "optimize", "logs", &id, "--follow"])
        .stdin(Stdio::null());
    let child = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    let uuid = id.parse().unwrap();
    s.claim(uuid).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.progress(
        uuid,
        json!({"event_type": "iteration_start", "message": "iteration 1 begins"}),
    )
    .await;
    s.progress(
        uuid,
        json!({"event_type": "optimization_end", "message": "all done", "summary": {"best_score": 0.9}}),
    )
    .await;
    let out = child.await.unwrap();
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let messages: Vec<String> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            v["message"].as_str().expect("a log entry").to_owned()
        })
        .collect();
    assert!(
        messages.iter().any(|m| m == "iteration 1 begins")
            && messages.iter().any(|m| m == "all done"),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_logs_of_a_finished_job_prints_its_log_lines_then_exits_with_its_code() {
    let s = server().await;
    let mut finished = Vec::new();
    for (end, last_words) in [
        (
            json!({"event_type": "optimization_end", "message": "all done"}),
            "all done",
        ),
        (
            json!({"event_type": "optimization_error", "message": "it broke", "error": "it broke"}),
            "it broke",
        ),
    ] {
        let id = s.submit().await;
        let uuid = id.parse().unwrap();
        s.claim(uuid).await;
        s.progress(
            uuid,
            json!({"event_type": "iteration_start", "message": "iteration 1 begins"}),
        )
        .await;
        s.progress(uuid, end).await;
        finished.push((id, last_words));
    }
    for ((id, last_words), code) in finished.iter().zip([0, 1]) {
        // The job is over before anyone follows it: the stream's snapshot is already terminal.
        let out = s.run(&["optimize", "logs", id, "--follow"]).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{text}");
        assert!(
            text.contains("iteration 1 begins") && text.contains(last_words),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_marks_only_the_current_best_in_json_and_in_the_table() {
    let s = server().await;
    let id = s.submit().await;
    let claimed = s.claim_next().await;
    // Each flagged best when it was recorded, as workers wrote them: only 2 still is.
    for (index, score) in [(0, 0.25), (1, 0.5), (2, 0.75), (3, 0.5)] {
        let c = json!({"index": index, "parents": [], "instructions": format!("text {index}"),
            "val_score": score, "val_subscores": [score], "best": index != 3});
        assert!(s
            .store
            .save_candidate(claimed.job.id, 1, claimed.lease_token, index, &c)
            .await
            .unwrap());
    }
    let out = s.run(&["--json", "optimize", "candidates", &id]).await;
    assert_success(&out);
    let items: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let best: Vec<&Value> = items
        .iter()
        .filter(|c| c["best"] == true)
        .map(|c| &c["index"])
        .collect();
    assert_eq!(best, [&json!(2)]);

    let out = s.run(&["optimize", "candidates", &id]).await;
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let column = text
        .lines()
        .next()
        .unwrap()
        .find("BEST")
        .expect("a BEST column");
    let starred: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| l.get(column..=column) == Some("*"))
        .collect();
    assert_eq!(starred.len(), 1, "{text}");
    assert!(starred[0].ends_with("text 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_what_the_running_attempt_has_consumed_once_it_used_anything() {
    let s = server().await;
    let id = s.submit().await;
    let get = s.run(&["optimize", "get", &id]).await;
    assert_success(&get);
    assert!(
        !String::from_utf8_lossy(&get.stdout).contains("usage"),
        "a queued job has used nothing"
    );
    let claimed = s.claim_next().await;
    let usage = gepard_core::model::JobUsage {
        metric_calls: 12,
        model_calls: 15,
        input_tokens: 4200,
        output_tokens: 310,
    };
    assert!(s
        .store
        .set_usage(claimed.job.id, claimed.lease_token, &usage)
        .await
        .unwrap());
    let get = s.run(&["optimize", "get", &id]).await;
    assert_success(&get);
    let text = String::from_utf8_lossy(&get.stdout);
    assert!(
        text.contains("usage      12 metric calls, 15 model calls, 4200 input + 310 output tokens"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_show_says_where_a_promoted_version_came_from() {
    let s = server().await;
    let id = s.submit().await;
    let uuid = id.parse().unwrap();
    s.claim(uuid).await;
    s.progress(
        uuid,
        json!({"event_type": "valset_evaluated",
        "summary": {"seed_score": 0.25, "best_score": 0.75,
                    "best_candidate": {"instructions": "Answer positive or negative."}}}),
    )
    .await;
    s.progress(uuid, json!({"event_type": "optimization_end"}))
        .await;
    let promoted = s.run(&["optimize", "promote", &id, "--yes"]).await;
    assert_success(&promoted);

    let show = s.run(&["capability", "show", "sentiment@1.0.1"]).await;
    assert_success(&show);
    let text = String::from_utf8_lossy(&show.stdout);
    for expected in [
        "== provenance ==".to_owned(),
        format!("job        {id}, attempt 1"),
        "source     sentiment@1.0.0 agent classifier".to_owned(),
        "validation seed 0.250 → best 0.750".to_owned(),
        "datasets   training sentiment-train@1.0.0, validation sentiment-val@1.0.0".to_owned(),
        "recipe     exact_match_v1".to_owned(),
        "model      openai/gpt-4o-mini".to_owned(),
        "by key bootstrap admin".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    // A version that was published, not promoted, has no provenance to show.
    let source = s.run(&["capability", "show", "sentiment@1.0.0"]).await;
    assert!(!String::from_utf8_lossy(&source.stdout).contains("provenance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_flag_values_are_usage_errors_that_name_the_flag() {
    let s = server().await;
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "optimize",
                "submit",
                "--model",
                "openai/m",
                "--capability",
                "sentiment",
                "--dataset",
                "d@1.0.0",
            ],
            "--capability",
        ),
        (
            &[
                "optimize",
                "submit",
                "--model",
                "openai/m",
                "--capability",
                "c@1.0.0",
                "--dataset",
                "d@1.0.0",
                "--reward-params",
                "notjson",
            ],
            "--reward-params",
        ),
        (
            &["keys", "create", "--name", "x", "--scope", "read,bogus"],
            "bogus",
        ),
        (
            &["keys", "create", "--name", "x", "--scope", ""],
            "at least one scope",
        ),
        (&["capability", "show", "sentiment"], "sentiment"),
        (&["--server", "notaurl", "capability", "list"], "--server"),
        (&["optimize", "list", "--status", "bogus"], "--status"),
    ];
    for (args, named) in cases {
        let out = s.run(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?} should name {named}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_piped_into_a_reader_that_went_away_ends_without_a_panic() {
    let s = server().await;
    assert!(s.run(SUBMIT).await.status.success());
    let mut cmd = s.cli();
    cmd.args(["optimize", "list"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take()); // the reader (`head`, `grep -q`) is gone before any output
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}
