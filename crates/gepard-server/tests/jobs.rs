//! Pins the optimization-job API over the real router on SQLite and PostgreSQL: submission and
//! each validation rule, project defaulting and runtime bootstrap, listing, every transition
//! (legal and illegal), retry history, idempotency, progress ingestion, live events (SSE) and
//! workspace isolation.

#[macro_use]
mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{app_with_registry_in, body, submit, TestApp, JOBS};
use gepard_core::job::JobCommand;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

fn with(mut b: Value, path: &[&str], v: Value) -> Value {
    let mut cur = &mut b;
    for p in &path[..path.len() - 1] {
        cur = cur.get_mut(*p).unwrap();
    }
    cur[path[path.len() - 1]] = v;
    b
}

async fn ws_id(app: &TestApp) -> Uuid {
    let org = app.store.org_by_key("local").await.unwrap().unwrap();
    app.store
        .workspace_by_key(org.id, "default")
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Moves a queued job to running the way a worker will.
async fn start(app: &TestApp, id: &str) {
    let ws = ws_id(app).await;
    let notifier = gepard_store::LocalNotifier::default();
    app.store
        .job_command(&notifier, ws, id.parse().unwrap(), &JobCommand::Claim)
        .await
        .unwrap();
}

async fn progress(app: &TestApp, key: &str, id: &str, event: Value) -> common::Reply {
    app.call(
        Method::POST,
        &format!("{JOBS}/{id}/progress"),
        Some(key),
        Some(event),
    )
    .await
}

/// Reads SSE events from a streaming response until `n` events or the stream ends.
async fn read_events(body: &mut Body, n: usize) -> Vec<(String, String, Value)> {
    let mut parser = gepard_client::SseParser::default();
    let mut out = vec![];
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s");
        let Some(frame) = frame else { break };
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            for ev in parser.feed(&String::from_utf8_lossy(data)) {
                out.push((
                    ev.event,
                    ev.id.unwrap_or_default(),
                    serde_json::from_str(&ev.data).unwrap_or(Value::Null),
                ));
            }
        }
    }
    out
}

/// A notice of a change of `job` at `revision`, as a writer publishes it.
fn notice(
    job: &gepard_core::model::Job,
    revision: i64,
    logs: Vec<gepard_core::model::SequencedLog>,
) -> gepard_store::JobNotice {
    gepard_store::JobNotice {
        job: std::sync::Arc::new(job.clone()),
        revision,
        logs,
    }
}

async fn open_events(app: &TestApp, id: &str, last_event_id: Option<&str>) -> Body {
    let mut req = Request::get(format!("{JOBS}/{id}/events")).header("x-api-key", &app.admin_key);
    if let Some(l) = last_event_id {
        req = req.header("last-event-id", l);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body()
}

on_both_databases! {
    app_with_registry_in;

    async fn a_valid_submission_is_queued_with_its_pinned_inputs_resolved(app) {
        let job = submit(&app, body()).await;
        assert_eq!(job["status"], "queued");
        assert_eq!(job["attempt"], 1);
        assert_eq!(
            job["agent_name"], "classifier",
            "omitted agent → the first agent"
        );
        assert_eq!(job["capability"]["name"], "sentiment");
        assert!(job["capability"]["runtime_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
        assert_eq!(
            job["project"], "default",
            "no project → the workspace default"
        );
        assert_eq!(
            job["config"]["max_reflection_examples"], 10,
            "defaults are filled in"
        );
        assert!(
            job["config"].get("max_trials").is_none(),
            "nulls mean default"
        );
        let projects = app
            .get("/api/v1/org/local/ws/default/projects/default")
            .await;
        assert_eq!(
            projects.body["runtime_count"], 1,
            "the project's first runtime is bootstrapped"
        );
        submit(&app, body()).await;
        assert_eq!(
            app.get("/api/v1/org/local/ws/default/projects/default")
                .await
                .body["runtime_count"],
            1
        );
    }

    async fn a_budget_out_of_range_is_reported_once(app) {
        let r = app.post(JOBS, with(body(), &["config", "max_metric_calls"], json!(0))).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            r.body["errors"],
            json!([{"loc": ["body", "config", "max_metric_calls"],
                    "msg": "must be an integer from 1 to 1000000", "type": "value_error"}])
        );
    }

    async fn each_validation_rule_names_the_wrong_field(app) {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                with(body(), &["capability_ref", "version"], json!("9.9.9")),
                vec!["body", "capability_ref"],
            ),
            (
                with(body(), &["capability_ref", "version"], json!("latest")),
                vec!["body", "capability_ref", "version"],
            ),
            (
                with(body(), &["capability_ref", "name"], json!("acme/sentiment")),
                vec!["body", "capability_ref", "name"],
            ),
            (
                with(body(), &["dataset_ref", "name"], json!("nope")),
                vec!["body", "dataset_ref"],
            ),
            (
                with(body(), &["dataset_ref"], Value::Null),
                vec!["body", "dataset_ref"],
            ),
            (
                with(body(), &["agent_name"], json!("ghost")),
                vec!["body", "agent_name"],
            ),
            (
                with(body(), &["reward_recipe", "name"], json!("magic_v9")),
                vec!["body", "reward_recipe", "name"],
            ),
            (
                with(
                    body(),
                    &["reward_recipe"],
                    json!({"name": "contains_v1", "params": {}}),
                ),
                vec!["body", "reward_recipe", "params", "needle"],
            ),
            (
                with(body(), &["components"], json!(["instructions", "tools"])),
                vec!["body", "components"],
            ),
            (
                with(body(), &["target_kind"], json!("capability_env")),
                vec!["body", "target_kind"],
            ),
            (
                with(body(), &["backend"], json!("dspy")),
                vec!["body", "backend"],
            ),
            (
                with(body(), &["model"], json!("gpt-4o")),
                vec!["body", "model"],
            ),
            (
                with(body(), &["config", "max_metric_calls"], json!(0)),
                vec!["body", "config", "max_metric_calls"],
            ),
            (
                with(body(), &["config", "max_metric_calls"], json!(5)),
                vec!["body", "config", "max_metric_calls"],
            ),
            (
                with(body(), &["config", "concurrency"], json!(1000)),
                vec!["body", "config", "concurrency"],
            ),
            (
                with(body(), &["config", "reflection_lm"], json!("nope")),
                vec!["body", "config", "reflection_lm"],
            ),
            (
                with(body(), &["config", "colour"], json!("red")),
                vec!["body", "config", "colour"],
            ),
            (
                with(
                    body(),
                    &["config", "candidate_selection_strategy"],
                    json!("random"),
                ),
                vec!["body", "config", "candidate_selection_strategy"],
            ),
            (
                with(body(), &["project"], json!("nope")),
                vec!["body", "project"],
            ),
            (with(body(), &["model"], json!(5)), vec!["body", "model"]),
            (
                with(body(), &["tags"], json!(["ok", 5])),
                vec!["body", "tags", "1"],
            ),
            (
                with(body(), &["model"], json!("builtin/rules")),
                vec!["body", "model"],
            ),
            (
                with(body(), &["config", "module_selector"], json!(5)),
                vec!["body", "config", "module_selector"],
            ),
            (
                with(body(), &["config", "merge_val_overlap_floor"], json!("x")),
                vec!["body", "config", "merge_val_overlap_floor"],
            ),
            (
                with(body(), &["config", "reflection_prompt_template"], json!({"a": 5})),
                vec!["body", "config", "reflection_prompt_template"],
            ),
            (
                with(body(), &["task_ref"], json!({"name": "x"})),
                vec!["body", "task_ref"],
            ),
            (
                with(body(), &["config", "dataset_input_mapping"], json!("Q: {goal}")),
                vec!["body", "config", "dataset_input_mapping"],
            ),
            (
                with(body(), &["config", "dataset_input_mapping"], json!({"goal": "question"})),
                vec!["body", "config", "dataset_input_mapping"],
            ),
            (
                with(
                    body(),
                    &["config", "dataset_input_mapping"],
                    json!({"nope": "goal"}),
                ),
                vec!["body", "dataset_ref"],
            ),
        ];
        for (b, loc) in cases {
            let r = app.post(JOBS, b.clone()).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{b}: {}",
                r.body
            );
            let locs: Vec<Value> = r.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["loc"].clone())
                .collect();
            assert!(
                locs.contains(&json!(loc)),
                "expected {loc:?} in {locs:?} for {b}"
            );
        }
        let r = app
            .post(
                JOBS,
                with(body(), &["target_kind"], json!("capability_env")),
            )
            .await;
        assert!(r.body["detail"]
            .as_str()
            .unwrap()
            .contains("not supported yet"));
        assert_eq!(
            app.get(JOBS).await.body["total"],
            0,
            "nothing invalid was stored"
        );
    }

    async fn a_row_that_cannot_become_a_user_message_is_named_at_submission(app) {
        let r = app
            .post(
                JOBS,
                with(
                    body(),
                    &["config", "dataset_input_mapping"],
                    json!({"text": "goal"}),
                ),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(
            r.body["errors"][0]["msg"],
            "row 1 of dataset train@1.0.0 cannot become a user message: the row has no `text` \
             field (named in dataset_input_mapping)"
        );
        // A validation ref naming the training dataset again is checked (and reported) once.
        let same = app
            .post(
                JOBS,
                with(
                    with(
                        body(),
                        &["config", "dataset_input_mapping"],
                        json!({"text": "goal"}),
                    ),
                    &["val_dataset_ref"],
                    json!({"name": "train", "version": "1.0.0"}),
                ),
            )
            .await;
        assert_eq!(same.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", same.body);
        assert_eq!(same.body["errors"].as_array().unwrap().len(), 1, "{}", same.body);
        assert_eq!(same.body["errors"][0]["loc"], json!(["body", "dataset_ref"]));
        let ok = app
            .post(
                JOBS,
                with(
                    body(),
                    &["config", "dataset_input_mapping"],
                    json!({"goal": "goal"}),
                ),
            )
            .await;
        assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    }

    async fn a_row_the_recipe_cannot_score_is_named_at_submission(app) {
        let rows = "{\"goal\": \"a\", \"expected_output\": \"x\"}\n{\"goal\": \"b\"}\n";
        let tar = common::tar(&[
            ("dataset.yaml", "name: unlabelled\nversion: 1.0.0\n"),
            ("rows.jsonl", rows),
        ]);
        let r = app.upload("/api/v1/org/local/datasets", tar).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let b = with(body(), &["val_dataset_ref"], json!({"name": "unlabelled", "version": "1.0.0"}));
        let r = app.post(JOBS, b.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "val_dataset_ref"]));
        assert_eq!(
            r.body["errors"][0]["msg"],
            "row 2 of dataset unlabelled@1.0.0 cannot be scored by exact_match_v1: the row has no \
             expected_output (or answer) to compare the answer with, and the recipe has no \
             params.expected"
        );
        // A recipe that needs no expected output takes the same rows.
        let reward = with(b, &["reward_recipe"], json!({"name": "row_reward_v1", "params": {}}));
        assert_eq!(app.post(JOBS, reward).await.status, StatusCode::CREATED);
    }

    async fn a_row_reward_outside_0_to_1_is_named_at_submission_instead_of_clamped(app) {
        for (name, reward) in [("too-high", "5"), ("negative", "-1")] {
            let rows = format!("{{\"goal\": \"a\", \"reward\": 1}}\n{{\"goal\": \"b\", \"reward\": {reward}}}\n");
            let tar = common::tar(&[
                ("dataset.yaml", &format!("name: {name}\nversion: 1.0.0\n")),
                ("rows.jsonl", &rows),
            ]);
            let r = app.upload("/api/v1/org/local/datasets", tar).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            let b = with(
                with(body(), &["val_dataset_ref"], json!({"name": name, "version": "1.0.0"})),
                &["reward_recipe"],
                json!({"name": "row_reward_v1", "params": {}}),
            );
            let r = app.post(JOBS, b).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
            assert_eq!(r.body["errors"][0]["loc"], json!(["body", "val_dataset_ref"]));
            assert_eq!(
                r.body["errors"][0]["msg"],
                format!(
                    "row 2 of dataset {name}@1.0.0 cannot be scored by row_reward_v1: the row's \
                     reward is {reward}, not a number from 0 to 1 (row_reward_v1 scores with it, \
                     and a score is between 0 and 1)"
                )
            );
        }
        assert_eq!(app.get(JOBS).await.body["total"], 0);
    }

    async fn a_row_whose_tools_cannot_be_offered_is_named_at_submission_and_openai_tools_pass(
        app
    ) {
        let val = |name: &str| {
            with(body(), &["val_dataset_ref"], json!({"name": name, "version": "1.0.0"}))
        };
        let openai_tool = json!({"type": "function", "function": {"name": "lookup",
            "description": "Look a word up.", "parameters": {"type": "object",
            "properties": {"word": {"type": "string"}}}}});
        let rows = [
            json!({"goal": "define cat", "expected_output": "a pet", "tools": [openai_tool]}),
            json!({"goal": "define dog", "expected_output": "a pet", "tools": [openai_tool,
                   {"type": "function", "function": {"description": "no name"}}]}),
        ];
        let publish = |name: &str, rows: &[Value]| {
            let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
            common::tar(&[
                ("dataset.yaml", &format!("name: {name}\nversion: 1.0.0\n")),
                ("rows.jsonl", &text),
            ])
        };
        for (name, rows) in [("tools-good", &rows[..1]), ("tools-bad", &rows[..])] {
            let r = app.upload("/api/v1/org/local/datasets", publish(name, rows)).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        let r = app.post(JOBS, val("tools-bad")).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "val_dataset_ref"]));
        let msg = r.body["errors"][0]["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(
                "row 2 of dataset tools-bad@1.0.0 has tools the model cannot be offered: \
                 the row's tools[1] is not a tool spec"
            ) && msg.contains("missing field `name`"),
            "{msg}"
        );
        // Tools are checked even when the mapping itself is refused, so one 422 says all.
        let bad_mapping = with(val("tools-bad"), &["config", "dataset_input_mapping"], json!(3));
        let both = app.post(JOBS, bad_mapping).await;
        let locs: Vec<&Value> = both.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["loc"])
            .collect();
        assert!(
            locs.contains(&&json!(["body", "config", "dataset_input_mapping"]))
                && locs.contains(&&json!(["body", "val_dataset_ref"])),
            "{}",
            both.body
        );

        let ok = app.post(JOBS, val("tools-good")).await;
        assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
    }

    async fn unknown_model_providers_are_422_when_the_server_knows_its_providers(app) {
        let mut app = app;
        let mut state = gepard_server::AppState::new(app.store.clone());
        state.models = Some(std::sync::Arc::new(
            gepard_llm::ModelRegistry::from_config_with_env(&Default::default(), &|_| None),
        ));
        app.router = gepard_server::router(state);
        for (field, value) in [(&["model"][..], "foo/bar"), (&["config", "reflection_lm"][..], "acme/m")] {
            let r = app.post(JOBS, with(body(), field, json!(value))).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
            let provider = value.split('/').next().unwrap();
            assert_eq!(
                r.body["errors"][0]["msg"],
                format!(
                    "unknown model provider `{provider}` (known: anthropic, openai; more can be \
                     named in GEPARD_PROVIDERS)"
                ),
                "{}",
                r.body
            );
        }
        let ok = app.post(JOBS, body()).await;
        assert_eq!(ok.status, StatusCode::CREATED, "openai is known: {}", ok.body);
    }

    async fn an_in_process_provider_refuses_a_model_it_does_not_have_at_submission(app) {
        /// Knows one model, like `builtin` knows only `rules`.
        struct OneModel;
        impl gepard_llm::ProviderFactory for OneModel {
            fn model(
                &self,
                name: &str,
            ) -> Result<std::sync::Arc<dyn gepard_llm::ChatModel>, gepard_llm::LlmError> {
                Err(gepard_llm::LlmError::ModelNotFound {
                    provider: "inproc".into(),
                    model: name.into(),
                    url: "in-process".into(),
                    status: 404,
                    message: format!("the only model is `known`, not `{name}`"),
                })
            }
        }
        let mut app = app;
        let registry = gepard_llm::ModelRegistry::from_config_with_env(&Default::default(), &|_| None);
        registry.register_provider("inproc", std::sync::Arc::new(OneModel));
        let mut state = gepard_server::AppState::new(app.store.clone());
        state.models = Some(std::sync::Arc::new(registry));
        app.router = gepard_server::router(state);
        let r = app.post(JOBS, with(body(), &["config", "reflection_lm"], json!("inproc/nope"))).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "config", "reflection_lm"]));
        assert_eq!(
            r.body["errors"][0]["msg"],
            "provider `inproc` has no model `nope`: the only model is `known`, not `nope`"
        );
        // A remote provider's model names are not checked here (only its answer knows them),
        // nor is a provider this server lacks a key for (its workers may have it).
        let remote = with(body(), &["config", "reflection_lm"], json!("anthropic/any-model"));
        assert_eq!(app.post(JOBS, remote).await.status, StatusCode::CREATED);
    }

    async fn unimplemented_settings_are_stored_and_logged_and_no_validation_set_is_said(app) {
        let b = with(
            with(
                with(body(), &["config", "cache_evaluation"], json!(true)),
                &["config", "max_output_tokens"],
                json!(8),
            ),
            &["val_dataset_ref"],
            Value::Null,
        );
        let job = submit(&app, b).await;
        assert_eq!(job["config"]["cache_evaluation"], true);
        assert_eq!(
            job["config"]["max_output_tokens"], 8,
            "gepard's own setting is accepted"
        );
        let logs = app
            .get(&format!("{JOBS}/{}/logs", job["id"].as_str().unwrap()))
            .await;
        let text = logs.body["items"].to_string();
        assert!(text.contains("cache_evaluation"), "{text}");
        assert!(
            text.contains("training dataset is also the validation set"),
            "{text}"
        );
    }

    async fn the_reference_default_of_five_merges_is_accepted_and_explained_in_the_logs(app) {
        let job = submit(&app, with(body(), &["config", "max_merge_invocations"], json!(5))).await;
        assert_eq!(job["config"]["max_merge_invocations"], 5);
        let logs = app
            .get(&format!("{JOBS}/{}/logs", job["id"].as_str().unwrap()))
            .await;
        let text = logs.body["items"].to_string();
        assert!(
            text.contains("max_merge_invocations 5 is stored but no merge runs"),
            "{text}"
        );
        let none = submit(&app, with(body(), &["config", "max_merge_invocations"], json!(0))).await;
        let logs = app
            .get(&format!("{JOBS}/{}/logs", none["id"].as_str().unwrap()))
            .await;
        assert!(!logs.body["items"].to_string().contains("no merge runs"));
        let bad = app
            .post(JOBS, with(body(), &["config", "max_merge_invocations"], json!(-1)))
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        assert_eq!(
            bad.body["errors"][0]["loc"],
            json!(["body", "config", "max_merge_invocations"])
        );
    }

    async fn the_summary_carries_the_job_objective_until_a_run_reports_its_own(app) {
        let runner = app.key(&["runner"], None).await;
        let job = submit(&app, with(body(), &["objective"], json!("be accurate"))).await;
        assert_eq!(job["summary"]["objective"], "be accurate");
        let id = job["id"].as_str().unwrap().to_owned();
        start(&app, &id).await;
        let ended = progress(&app, &runner, &id, json!({"event_type": "optimization_end", "summary": {"best_score": 0.5}})).await;
        assert_eq!(ended.body["summary"]["objective"], "be accurate");
        let none = submit(&app, body()).await;
        assert!(none["summary"]["objective"].is_null());
    }

    async fn every_gepa_frontier_type_is_accepted_and_the_default_is_stored(app) {
        let plain = submit(&app, body()).await;
        assert_eq!(plain["config"]["frontier_type"], "instance");
        for t in ["instance", "objective", "hybrid", "cartesian"] {
            let job = submit(&app, with(body(), &["config", "frontier_type"], json!(t))).await;
            assert_eq!(job["config"]["frontier_type"], t);
            let logs = app
                .get(&format!("{JOBS}/{}/logs", job["id"].as_str().unwrap()))
                .await;
            assert!(
                !logs.body["items"].to_string().contains("frontier_type"),
                "an implemented setting is not reported as stored only: {}",
                logs.body
            );
        }
        let bad = app.post(JOBS, with(body(), &["config", "frontier_type"], json!("pareto"))).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
        assert_eq!(bad.body["errors"][0]["loc"], json!(["body", "config", "frontier_type"]));
        assert_eq!(
            bad.body["errors"][0]["msg"],
            "must be one of instance, objective, hybrid, cartesian"
        );
    }

    async fn a_perfect_score_outside_the_reward_range_is_refused(app) {
        for bad in [json!(5), json!(0), json!(-0.5), json!("1")] {
            let r = app.post(JOBS, with(body(), &["config", "perfect_score"], bad.clone())).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
            assert_eq!(r.body["errors"][0]["loc"], json!(["body", "config", "perfect_score"]));
            assert_eq!(
                r.body["errors"][0]["msg"],
                "must be a number above 0 and at most 1 (rewards are within [0, 1])"
            );
        }
        let fine = submit(&app, with(body(), &["config", "perfect_score"], json!(0.9))).await;
        assert_eq!(fine["config"]["perfect_score"], 0.9);
    }

    async fn a_budget_that_covers_only_the_seed_is_accepted_with_a_warning_in_the_logs(app) {
        let app = &app;
        let logs_of = |job: Value| async move {
            let path = format!("{JOBS}/{}/logs", job["id"].as_str().unwrap());
            app.get(&path).await.body["items"].to_string()
        };
        // 8 validation rows: the seed takes 8 calls, an iteration up to 2 × 3 + 8 = 14.
        let tight = submit(app, with(body(), &["config", "max_metric_calls"], json!(20))).await;
        let text = logs_of(tight).await;
        assert!(
            text.contains("max_metric_calls 20 covers the seed evaluation (8 calls) but no iteration, which may need 14"),
            "{text}"
        );
        let roomy = submit(app, with(body(), &["config", "max_metric_calls"], json!(22))).await;
        assert!(!logs_of(roomy).await.contains("no iteration"));
    }

    async fn idempotent_submission_returns_the_same_job_and_refuses_another_body(app) {
        let send = |b: Value| {
            let req = Request::post(JOBS)
                .header("x-api-key", &app.admin_key)
                .header("content-type", "application/json")
                .header("idempotency-key", "abc-123")
                .body(Body::from(b.to_string()))
                .unwrap();
            app.send(req)
        };
        let first = send(body()).await;
        assert_eq!(first.status, StatusCode::CREATED);
        let again = send(body()).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.body["id"], first.body["id"]);
        let other = send(with(body(), &["name"], json!("second"))).await;
        assert_eq!(other.status, StatusCode::CONFLICT);
        assert!(other.body["detail"].as_str().unwrap().contains("abc-123"));
        assert_eq!(app.get(JOBS).await.body["total"], 1);
    }

    async fn lists_are_newest_first_filtered_and_paged(app) {
        app.post(
            "/api/v1/org/local/ws/default/projects",
            json!({"key": "research"}),
        )
        .await;
        let mut ids = vec![];
        for i in 0..5 {
            let project = if i == 4 {
                json!("research")
            } else {
                Value::Null
            };
            ids.push(submit(&app, with(body(), &["project"], project)).await["id"].clone());
        }
        app.post(
            &format!("{JOBS}/{}/cancel", ids[0].as_str().unwrap()),
            json!({}),
        )
        .await;
        let page = app.get(&format!("{JOBS}?page=1&page_size=2")).await;
        assert_eq!(page.body["total"], 5);
        assert_eq!(page.body["items"][0]["id"], ids[4], "newest first");
        assert_eq!(page.body["items"][1]["id"], ids[3]);
        // gepard's extra: oldest first, as a runtime takes queued jobs.
        let oldest = app.get(&format!("{JOBS}?status=queued&order=oldest&page_size=1")).await;
        assert_eq!(oldest.body["items"][0]["id"], ids[1], "{}", oldest.body);
        assert_eq!(oldest.body["total"], 4);
        let bad = app.get(&format!("{JOBS}?order=random")).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.body["errors"][0]["loc"], json!(["query", "order"]));
        let cancelled = app.get(&format!("{JOBS}?status=cancelled")).await;
        assert_eq!(cancelled.body["total"], 1);
        assert_eq!(cancelled.body["items"][0]["id"], ids[0]);
        assert_eq!(
            app.get(&format!("{JOBS}?project=research")).await.body["total"],
            1
        );
        assert_eq!(
            app.get(&format!("{JOBS}?backend=gepa&target_kind=capability_agent"))
                .await
                .body["total"],
            5
        );
        // Search (gepard's extra): by name, tag, capability@version or id, ignoring case; `%`
        // and `_` are literal.
        let named = submit(
            &app,
            with(with(body(), &["name"], json!("Nightly_Run")), &["tags"], json!(["Team-X"])),
        )
        .await;
        let search = |q: &str| {
            let path = format!("{JOBS}?search={q}");
            let app = &app;
            async move { app.get(&path).await.body }
        };
        for q in ["nightly_run", "team-x", "NIGHTLY"] {
            let found = search(q).await;
            assert_eq!(found["total"], 1, "{q}: {found}");
            assert_eq!(found["items"][0]["id"], named["id"]);
        }
        assert_eq!(search("nightly%25").await["total"], 0, "% is literal");
        assert_eq!(search("nightlyxrun").await["total"], 0, "_ is literal");
        assert_eq!(search("sentiment%401.0.0").await["total"], 6, "capability@version");
        let id = named["id"].as_str().unwrap();
        assert_eq!(search(&id[..8]).await["total"], 1, "an id prefix");
        assert_eq!(
            app.get(&format!("{JOBS}?search=nightly&status=queued")).await.body["total"],
            1,
            "search combines with the other filters"
        );
        let bad = app.get(&format!("{JOBS}?status=sleeping")).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(bad.body["errors"][0]["loc"], json!(["query", "status"]));
        assert_eq!(
            app.get(&format!("{JOBS}?page_size=101")).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    async fn cancelling_a_queued_job_ends_it_immediately_and_a_second_cancel_is_409(app) {
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app.post(&format!("{JOBS}/{id}/cancel"), json!({})).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["status"], "cancelled");
        assert!(r.body["completed_at"].is_string());
        let again = app.post(&format!("{JOBS}/{id}/cancel"), json!({})).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(
            again.body["detail"].as_str().unwrap().contains("cancel"),
            "{}",
            again.body
        );
    }

    async fn cancelling_a_running_job_records_the_request_and_it_ends_when_the_runtime_stops(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        start(&app, &id).await;
        let r = app.post(&format!("{JOBS}/{id}/cancel"), json!({})).await;
        assert_eq!(r.body["status"], "running");
        assert!(r.body["cancel_requested_at"].is_string());
        // The runtime reports its end: a requested cancel makes it cancelled, keeping its best.
        let ws = ws_id(&app).await;
        let notifier = gepard_store::LocalNotifier::default();
        progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "valset_evaluated", "summary": {"best_score": 0.5}}),
        )
        .await;
        let job = app
            .store
            .job_command(
                &notifier,
                ws,
                id.parse().unwrap(),
                &JobCommand::RunnerStopped,
            )
            .await
            .unwrap();
        assert_eq!(job.status.as_str(), "cancelled");
        assert_eq!(job.summary.best_score, Some(0.5));
    }

    async fn retry_is_only_for_finished_jobs_and_clears_evidence_but_keeps_history(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app.post(&format!("{JOBS}/{id}/retry"), json!({})).await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "a queued job cannot be retried"
        );
        start(&app, &id).await;
        assert_eq!(
            app.post(&format!("{JOBS}/{id}/retry"), json!({}))
                .await
                .status,
            StatusCode::CONFLICT
        );
        progress(&app, &runner, &id, json!({"event_type": "valset_evaluated", "summary": {"best_score": 0.25}, "metrics": {"val_score": [{"value": 0.25, "step": 1}]}})).await;
        let failed = progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "optimization_error", "error": "model unreachable"}),
        )
        .await;
        assert_eq!(failed.body["status"], "failed");
        assert_eq!(failed.body["error"], "model unreachable");
        assert!(failed.body["last_event_at"].is_string());
        // The list carries each job's own series (read for the whole page at once).
        let other = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        start(&app, &other).await;
        progress(&app, &runner, &other, json!({"event_type": "budget_updated", "metrics": {"val_score": [{"value": 0.9, "step": 3}]}})).await;
        let listed = |id: String| {
            let app = &app;
            async move {
                let list = app.get(JOBS).await.body;
                list["items"].as_array().unwrap().iter().find(|j| j["id"] == id.as_str()).cloned().unwrap()
            }
        };
        assert_eq!(listed(id.clone()).await["metrics"], failed.body["metrics"]);
        assert_eq!(listed(other.clone()).await["metrics"]["val_score"][0]["value"], 0.9);
        assert_eq!(listed(other.clone()).await["metrics"]["val_score"].as_array().unwrap().len(), 1);

        let retried = app.post(&format!("{JOBS}/{id}/retry"), json!({})).await;
        assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
        assert_eq!(retried.body["status"], "queued");
        assert_eq!(retried.body["attempt"], 2);
        assert!(retried.body["error"].is_null());
        assert!(retried.body["summary"]["best_score"].is_null());
        assert!(retried.body["last_event_at"].is_null(), "no event of this attempt yet");
        assert_eq!(retried.body["metrics"], json!({}));
        assert_eq!(listed(id.clone()).await["metrics"], json!({}), "only the current attempt's series");
        // The log keeps the first attempt's entries; each says which attempt wrote it.
        let logs = app.get(&format!("{JOBS}/{id}/logs")).await.body;
        let by_attempt: Vec<(i64, String)> = logs["items"].as_array().unwrap().iter()
            .map(|l| (l["attempt"].as_i64().unwrap(), l["message"].as_str().unwrap().to_owned()))
            .collect();
        let (last, earlier) = by_attempt.split_last().unwrap();
        assert!(last.0 == 2 && last.1.starts_with("retry: attempt 2 queued"), "{by_attempt:?}");
        assert!(earlier.len() > 1 && earlier.iter().all(|(a, _)| *a == 1), "{by_attempt:?}");
        let attempts = app.get(&format!("{JOBS}/{id}/attempts")).await;
        assert_eq!(attempts.body.as_array().unwrap().len(), 1);
        assert_eq!(attempts.body[0]["status"], "failed");
        assert_eq!(attempts.body[0]["error"], "model unreachable");
        assert_eq!(attempts.body[0]["summary"]["best_score"], 0.25);
    }

    async fn exactly_one_candidate_is_best_the_highest_scoring_one_with_the_lower_index_on_ties(app) {
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let claimed = app
            .store
            .claim_next(
                &gepard_store::LocalNotifier::default(),
                "w",
                Duration::from_secs(60),
            )
            .await
            .unwrap()
            .unwrap();
        let best_indexes = |items: &Value| -> Vec<i64> {
            items["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["best"] == true)
                .map(|c| c["index"].as_i64().unwrap())
                .collect()
        };
        // Recorded as workers did until now: each candidate flagged best when it was best,
        // and never updated after a better one came.
        for (index, score, flagged) in [
            (0, 0.25, true),
            (1, 0.5, true),
            (2, 0.4, false),
            (3, 0.75, true),
            (4, 0.75, false),
            (5, 0.6, false),
        ] {
            let c = json!({"index": index, "parents": [], "instructions": format!("v{index}"),
                "val_score": score, "val_subscores": [score], "best": flagged});
            assert!(app
                .store
                .save_candidate(claimed.job.id, 1, claimed.lease_token, index, &c)
                .await
                .unwrap());
            if index == 1 {
                let so_far = app.get(&format!("{JOBS}/{id}/candidates")).await;
                let best = best_indexes(&so_far.body);
                assert_eq!(best, vec![1], "the best so far: {}", so_far.body);
            }
        }
        let r = app.get(&format!("{JOBS}/{id}/candidates")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(best_indexes(&r.body), vec![3], "{}", r.body);
        assert_eq!(r.body["items"].as_array().unwrap().len(), 6);
    }

    async fn progress_builds_summary_metrics_and_logs_and_a_terminal_job_takes_no_more(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // The runner's first report starts the queued job (see the test below).
        progress(&app, &runner, &id, json!({"event_type": "optimization_start", "message": "starting", "summary": {"train_size": 12, "val_size": 8}})).await;
        progress(&app, &runner, &id, json!({"event_type": "valset_evaluated", "iteration": 0, "summary": {"best_score": 0.4, "best_candidate": {"instructions": "A"}},
            "metrics": {"val_score": [{"value": 0.4, "step": 0}], "metric_calls_used": [{"value": 8, "step": 0}]}})).await;
        let r = progress(&app, &runner, &id, json!({"event_type": "candidate_accepted", "iteration": 1, "summary": {"best_score": 0.6, "train_size": null},
            "metrics": {"val_score": [{"value": 0.6, "step": 1}]}})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let job = r.body;
        assert_eq!(job["summary"]["best_score"], 0.6);
        assert_eq!(job["summary"]["train_size"], 12, "null does not replace");
        assert_eq!(job["summary"]["best_candidate"]["instructions"], "A");
        assert_eq!(job["metrics"]["val_score"].as_array().unwrap().len(), 2);
        assert!(job["last_event_at"].is_string());
        let end = progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "optimization_end", "artifacts": {"best": "A"}}),
        )
        .await;
        assert_eq!(end.body["status"], "completed");
        assert_eq!(end.body["artifacts"]["best"], "A");
        let late = progress(&app, &runner, &id, json!({"event_type": "budget_updated"})).await;
        assert_eq!(late.status, StatusCode::CONFLICT);
        let after = app.get(&format!("{JOBS}/{id}")).await.body;
        assert_eq!(
            after["updated_at"], end.body["updated_at"],
            "the rejected event changed nothing"
        );
        let logs = app.get(&format!("{JOBS}/{id}/logs?after=1&limit=2")).await;
        let items = logs.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["seq"], 2);
        assert_eq!(
            app.get(&format!("{JOBS}/{id}/artifacts")).await.body["artifacts"]["best"],
            "A"
        );
    }

    async fn a_runtime_reporting_another_text_under_a_candidate_number_gets_a_conflict(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        progress(&app, &runner, &id, json!({"event_type": "optimization_start"})).await;
        let report = |text: &str| json!({"event_type": "valset_evaluated", "candidate": {
            "index": 1, "instructions": text, "parents": [0], "val_score": 0.5}});
        for _ in 0..2 {
            let r = progress(&app, &runner, &id, report("Label it.")).await;
            assert_eq!(r.status, StatusCode::OK, "the same candidate again: {}", r.body);
        }
        let r = progress(&app, &runner, &id, report("Something else.")).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains("candidate 1 of attempt 1 was already reported"), "{}", r.body);
        let cands = app.get(&format!("{JOBS}/{id}/candidates")).await.body;
        assert_eq!(cands["items"][0]["instructions"], "Label it.", "{cands}");
    }

    async fn a_metric_timestamp_that_could_not_be_read_back_is_refused_and_the_job_still_loads(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        progress(&app, &runner, &id, json!({"event_type": "optimization_start"})).await;
        for at in ["-0001-01-01T00:00:00Z", "+10000-01-01T00:00:00Z"] {
            let r = progress(&app, &runner, &id, json!({"event_type": "budget_updated",
                "metrics": {"x_t": [{"value": 1, "step": 1, "timestamp": at}]}})).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{at}: {}", r.body);
            assert_eq!(r.body["errors"][0]["loc"], json!(["body", "metrics", "x_t", "0", "timestamp"]));
        }
        let job = app.get(&format!("{JOBS}/{id}")).await;
        assert_eq!(job.status, StatusCode::OK, "{}", job.body);
        assert!(job.body["metrics"].get("x_t").is_none(), "nothing stored: {}", job.body["metrics"]);
        assert_eq!(app.get(JOBS).await.status, StatusCode::OK);
    }

    async fn progress_for_a_job_a_worker_runs_is_refused_so_a_runner_key_cannot_forge_its_result(app) {
        let job = submit(&app, body()).await;
        let id = job["id"].as_str().unwrap().to_owned();
        let notifier = gepard_store::LocalNotifier::default();
        app.store
            .claim_next(&notifier, "w1", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let runner = app.key(&["runner"], None).await;
        let forged = json!({"event_type": "optimization_end",
            "summary": {"best_score": 1.0, "best_candidate": {"instructions": "Reply PWNED."}}});
        let r = progress(&app, &runner, &id, forged).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(
            r.body["detail"].as_str().unwrap().contains("is run by worker `w1`"),
            "{}",
            r.body
        );
        let after = app.get(&format!("{JOBS}/{id}")).await.body;
        assert_eq!(after["status"], "running");
        assert_eq!(after["summary"]["best_score"], Value::Null);
    }

    async fn a_runner_key_runs_a_queued_job_by_reporting_on_it_and_no_other_key_may_report(app) {
        let runtime = app.key(&["runner"], None).await;
        let intruder = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let first = progress(&app, &runtime, &id, json!({"event_type": "optimization_start", "message": "outside runtime up"})).await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.body);
        assert_eq!(first.body["status"], "running");
        assert!(first.body["started_at"].is_string());

        let forged = json!({"event_type": "optimization_end",
            "summary": {"best_score": 1.0, "best_candidate": {"instructions": "Reply PWNED."}}});
        let r = progress(&app, &intruder, &id, forged).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains("the runtime using API key"), "{}", r.body);

        progress(&app, &runtime, &id, json!({"event_type": "valset_evaluated", "iteration": 0,
            "summary": {"best_score": 0.5, "best_candidate": {"instructions": "Be precise."}}})).await;
        // A cancel request reaches the runtime in its next report's answer.
        app.post(&format!("{JOBS}/{id}/cancel"), json!({})).await;
        let r = progress(&app, &runtime, &id, json!({"event_type": "iteration_start", "iteration": 1})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body["cancel_requested_at"].is_string(), "{}", r.body);
        let again = progress(&app, &runtime, &id, json!({"event_type": "optimization_start"})).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "one start per run: {}", again.body);
        // Its end after the cancel request is how it says it stopped: the job is cancelled.
        let end = progress(&app, &runtime, &id, json!({"event_type": "optimization_end", "message": "stopped early"})).await;
        assert_eq!(end.body["status"], "cancelled", "{}", end.body);
        assert_eq!(end.body["summary"]["best_score"], 0.5, "the intruder's score never landed");
        let logs = app.get(&format!("{JOBS}/{id}/logs")).await.body;
        let started = logs["items"].as_array().unwrap().iter().find(|l| l["message"] == "started").unwrap();
        assert!(started["data"]["runner"].as_str().unwrap().starts_with("runtime-key:"), "{logs}");
    }

    async fn an_outside_runtime_fills_the_candidate_table_and_the_usage_of_its_run(app) {
        let runtime = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        progress(&app, &runtime, &id, json!({"event_type": "optimization_start"})).await;
        for (index, parents, text, score, subscores, used) in [
            (0, json!([]), "Classify.", 0.25, json!([0.0, 0.5]), 2),
            (1, json!([0]), "Classify. Answer in one word.", 0.75, json!([1.0, 0.5]), 10),
        ] {
            let r = progress(&app, &runtime, &id, json!({"event_type": "valset_evaluated", "iteration": index,
                "summary": {"best_score": score, "best_candidate": {"instructions": text}},
                "candidate": {"index": index, "parents": parents, "instructions": text, "val_score": score,
                              "val_subscores": subscores, "iteration": index, "discovered_at_metric_calls": used},
                "usage": {"metric_calls": used, "model_calls": used + 1, "input_tokens": 100 * used, "output_tokens": used}})).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        // A malformed candidate is a 422 naming the field, and records nothing.
        let r = progress(&app, &runtime, &id, json!({"event_type": "valset_evaluated",
            "candidate": {"index": 2, "instructions": 7}})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
        assert_eq!(r.body["errors"][0]["loc"], json!(["body", "candidate", "instructions"]));
        let end = progress(&app, &runtime, &id, json!({"event_type": "optimization_end",
            "usage": {"metric_calls": 12, "model_calls": 14, "input_tokens": 1300, "output_tokens": 13}})).await;
        assert_eq!(end.body["status"], "completed", "{}", end.body);
        assert_eq!(end.body["usage"], json!({"metric_calls": 12, "model_calls": 14, "input_tokens": 1300, "output_tokens": 13}));
        let c = app.get(&format!("{JOBS}/{id}/candidates")).await.body;
        let items = c["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{c}");
        assert_eq!(items[1]["parents"], json!([0]));
        assert_eq!(items[1]["best"], true);
        assert_eq!(
            items.iter().map(|i| i["on_frontier"].as_bool().unwrap()).collect::<Vec<_>>(),
            [false, true],
            "both tie for the best on the second example, but 1 is also alone on the first: 0 is dominated"
        );
    }

    async fn a_score_outside_0_to_1_is_422_at_its_field_and_nothing_of_the_report_is_stored(app) {
        let runtime = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        progress(&app, &runtime, &id, json!({"event_type": "optimization_start"})).await;
        let good = progress(&app, &runtime, &id, json!({"event_type": "valset_evaluated", "iteration": 0,
            "summary": {"seed_score": 0.25, "best_score": 0.25, "best_candidate": {"instructions": "Classify."}},
            "candidate": {"index": 0, "instructions": "Classify.", "val_score": 0.25, "val_subscores": [0.0, 0.5]},
            // Runtime-defined series are not scores: any finite value goes.
            "metrics": {"x_loss": [{"value": 42.0, "step": 0}]}})).await;
        assert_eq!(good.status, StatusCode::OK, "{}", good.body);
        let logs_before = app.get(&format!("{JOBS}/{id}/logs")).await.body["items"].as_array().unwrap().len();
        for (bad, loc) in [
            (json!({"summary": {"best_score": 1e308, "best_candidate": {"instructions": "Forged."}}}),
             json!(["body", "summary", "best_score"])),
            (json!({"summary": {"seed_score": -5}}), json!(["body", "summary", "seed_score"])),
            (json!({"summary": {"best_scores": {"a": 2}}}), json!(["body", "summary", "best_scores"])),
            (json!({"candidate": {"index": 1, "parents": [0], "instructions": "Forged.", "val_score": 99}}),
             json!(["body", "candidate", "val_score"])),
            (json!({"candidate": {"index": 1, "instructions": "Forged.", "val_subscores": [0.5, 1.5]}}),
             json!(["body", "candidate", "val_subscores"])),
        ] {
            let mut event = json!({"event_type": "valset_evaluated", "iteration": 1,
                "metrics": {"val_score": [{"value": 0.9, "step": 1}]}});
            event.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
            let r = progress(&app, &runtime, &id, event).await;
            assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.body);
            assert_eq!(r.body["errors"][0]["loc"], loc, "{bad}: {}", r.body);
            assert!(r.body["errors"][0]["msg"].as_str().unwrap().ends_with("from 0 to 1"), "{}", r.body);
        }
        let job = app.get(&format!("{JOBS}/{id}")).await.body;
        assert_eq!(job["summary"]["best_score"], 0.25, "{job}");
        assert_eq!(job["summary"]["seed_score"], 0.25, "{job}");
        assert_eq!(job["summary"]["best_candidate"]["instructions"], "Classify.");
        assert_eq!(job["metrics"]["x_loss"][0]["value"], 42.0, "{job}");
        assert!(job["metrics"].get("val_score").is_none(), "{job}");
        let candidates = app.get(&format!("{JOBS}/{id}/candidates")).await.body;
        assert_eq!(candidates["items"].as_array().unwrap().len(), 1, "{candidates}");
        let logs = app.get(&format!("{JOBS}/{id}/logs")).await.body;
        assert_eq!(logs["items"].as_array().unwrap().len(), logs_before, "{logs}");
        let preview = app.get(&format!("{JOBS}/{id}/promotion-preview")).await.body;
        assert!(!preview.to_string().contains("1e308") && !preview.to_string().contains("Forged"), "{preview}");
    }

    async fn a_runtime_preferring_a_minimal_answer_gets_the_jobs_brief_state_not_its_series(app) {
        let runtime = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let report = |prefer: Option<&'static str>, event: Value| {
            let (app, runtime, id) = (&app, runtime.clone(), id.clone());
            async move {
                let mut req = Request::post(format!("{JOBS}/{id}/progress"))
                    .header("x-api-key", runtime)
                    .header("content-type", "application/json");
                if let Some(p) = prefer {
                    req = req.header("prefer", p);
                }
                let resp = app.router.clone().oneshot(req.body(Body::from(event.to_string())).unwrap()).await.unwrap();
                let applied = resp.headers().get("preference-applied").map(|v| v.to_str().unwrap().to_owned());
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                (status, applied, serde_json::from_slice::<Value>(&bytes).unwrap())
            }
        };
        let (status, applied, brief) = report(Some("respond-async, RETURN=minimal"), json!({"event_type": "optimization_start",
            "metrics": {"val_score": [{"value": 0.5, "step": 0}]}})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(applied.as_deref(), Some("return=minimal"));
        assert_eq!(brief["status"], "running");
        assert_eq!(brief["attempt"], 1);
        assert!(brief["cancel_requested_at"].is_null());
        assert!(brief.get("metrics").is_none(), "{brief}");
        app.post(&format!("{JOBS}/{id}/cancel"), json!({})).await;
        let (_, _, brief) = report(Some("return = \"minimal\""), json!({"event_type": "iteration_start"})).await;
        assert!(brief["cancel_requested_at"].is_string(), "the cancel reaches the runtime: {brief}");
        // Without the preference, the whole job, as before.
        let (_, applied, whole) = report(None, json!({"event_type": "iteration_start"})).await;
        assert_eq!(applied, None);
        assert_eq!(whole["metrics"]["val_score"][0]["value"], 0.5);
    }

    async fn progress_needs_a_runner_key_and_a_well_formed_event(app) {
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        start(&app, &id).await;
        let r = app
            .post(
                &format!("{JOBS}/{id}/progress"),
                json!({"event_type": "budget_updated"}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "an admin key is not a runner"
        );
        let runner = app.key(&["runner"], None).await;
        let r = progress(&app, &runner, &id, json!({"event_type": "teleported"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["errors"][0]["loc"][1], "event_type", "{}", r.body);
        let r = progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "budget_updated", "summary": 5}),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    }

    async fn jobs_of_another_workspace_are_404_and_unknown_ids_too(app) {
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.post("/api/v1/org/local/ws", json!({"key": "team-b"}))
            .await;
        let r = app
            .get(&format!(
                "/api/v1/org/local/ws/team-b/optimization/jobs/{id}"
            ))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let other_key = app.key(&["read", "write"], Some("team-b")).await;
        assert_eq!(
            app.get_as(&other_key, &format!("{JOBS}/{id}")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get_as(&other_key, JOBS).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&format!("{JOBS}/{}", Uuid::new_v4())).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get(&format!("{JOBS}/not-a-uuid")).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            app.get("/api/v1/org/local/ws/team-b/optimization/jobs")
                .await
                .body["total"],
            0
        );
    }

    async fn events_reach_watchers_when_another_process_runs_the_job(app) {
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let mut stream = open_events(&app, &id, None).await;
        assert_eq!(read_events(&mut stream, 1).await[0].0, "snapshot");
        // A separate `gepard worker` process: its own notifier, which this server never hears
        // from on SQLite (on PostgreSQL, LISTEN/NOTIFY would carry it).
        let elsewhere = gepard_store::LocalNotifier::default();
        let claimed = app
            .store
            .claim_next(&elsewhere, "w-elsewhere", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        for event in [
            json!({"event_type": "iteration_start", "message": "from another process"}),
            json!({"event_type": "optimization_end", "message": "done elsewhere"}),
        ] {
            app.store
                .ingest_progress(
                    &elsewhere,
                    claimed.job.id,
                    &serde_json::from_value(event).unwrap(),
                    Some(claimed.lease_token),
                )
                .await
                .unwrap();
        }
        // Read until the stream ends, which it does only after the terminal job was sent.
        let events = read_events(&mut stream, 1000).await;
        assert!(
            events.iter().any(|e| e.0 == "log" && e.2["message"] == "from another process"),
            "{events:?}"
        );
        let last_job = events.iter().rev().find(|e| e.0 == "job").expect("a job event");
        assert_eq!(last_job.2["status"], "completed");
    }

    async fn events_stream_a_snapshot_then_live_changes_to_two_watchers_and_end_after_the_job(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(
            &app,
            with(
                body(),
                &["val_dataset_ref"],
                json!({"name": "val", "version": "1.0.0"}),
            ),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut a = open_events(&app, &id, None).await;
        let mut b = open_events(&app, &id, None).await;
        let first_a = read_events(&mut a, 1).await;
        let first_b = read_events(&mut b, 1).await;
        assert_eq!(first_a[0].0, "snapshot");
        assert_eq!(first_b[0].2["id"], id.as_str());

        start(&app, &id).await;
        // The start is not published through this test's notifier instance; progress is.
        let state_notifier_events = progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "iteration_start", "message": "iteration 1", "iteration": 1}),
        )
        .await;
        assert_eq!(state_notifier_events.status, StatusCode::OK);
        progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "optimization_end", "message": "done"}),
        )
        .await;
        for body in [&mut a, &mut b] {
            let events = read_events(body, 100).await;
            let kinds: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
            assert!(
                kinds.contains(&"log") && kinds.contains(&"job"),
                "{kinds:?}"
            );
            let last_job = events.iter().rev().find(|e| e.0 == "job").unwrap();
            assert_eq!(last_job.2["status"], "completed");
            let messages: Vec<&str> = events
                .iter()
                .filter(|e| e.0 == "log")
                .filter_map(|e| e.2["message"].as_str())
                .collect();
            assert!(
                messages.contains(&"iteration 1") && messages.contains(&"done"),
                "{messages:?}"
            );
        }
    }

    async fn a_watcher_hearing_of_two_changes_in_the_opposite_order_loses_no_entry_and_never_goes_back(app) {
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let mut stream = open_events(&app, &id, None).await;
        assert_eq!(read_events(&mut stream, 1).await[0].0, "snapshot");
        // Written without telling the watchers; the notices are published below by hand, in
        // the order two writers' publishing tasks can deliver them.
        let quiet = gepard_store::LocalNotifier::default();
        let claimed = app.store.claim_next(&quiet, "w", Duration::from_secs(60)).await.unwrap().unwrap();
        let ws = claimed.job.workspace_id;
        // Each report, and the job as it stood right after it with its revision.
        let report = |event: Value| {
            let store = app.store.clone();
            let quiet = quiet.clone();
            async move {
                let event = serde_json::from_value(event).unwrap();
                store.ingest_progress(&quiet, claimed.job.id, &event, Some(claimed.lease_token)).await.unwrap();
                store.job_with_revision(ws, claimed.job.id).await.unwrap().unwrap()
            }
        };
        let notice = |(job, revision): &(gepard_core::model::Job, i64), logs: &[gepard_core::model::SequencedLog]| {
            notice(job, *revision, logs.to_vec())
        };
        let first = report(json!({"event_type": "valset_evaluated", "message": "first", "summary": {"best_score": 0.25}})).await;
        let second = report(json!({"event_type": "valset_evaluated", "message": "second", "summary": {"best_score": 0.5}})).await;
        let logs = app.store.job_logs(claimed.job.id, 0, 100).await.unwrap();
        assert_eq!(logs.len(), 3, "started, first, second");
        // The second writer's notice first, then the first's (which read both entries).
        app.notifier.publish(notice(&second, &logs[2..]));
        app.notifier.publish(notice(&first, &logs[1..]));
        let done = report(json!({"event_type": "optimization_end", "message": "done"})).await;
        let all = app.store.job_logs(claimed.job.id, 0, 100).await.unwrap();
        // A late notice of the first change whose log read came after the end: new entries,
        // but an old job (still running).
        app.notifier.publish(notice(&first, &all[1..]));
        app.notifier.publish(notice(&done, &all[3..]));

        let events = read_events(&mut stream, 1000).await;
        let messages: Vec<&str> = events.iter().filter(|e| e.0 == "log").filter_map(|e| e.2["message"].as_str()).collect();
        assert_eq!(messages, ["started", "first", "second", "done"], "every entry once, in order");
        let jobs: Vec<(&str, Option<f64>)> = events
            .iter()
            .filter(|e| e.0 == "job")
            .map(|e| (e.2["status"].as_str().unwrap(), e.2["summary"]["best_score"].as_f64()))
            .collect();
        let scores: Vec<f64> = jobs.iter().filter_map(|j| j.1).collect();
        assert!(scores.windows(2).all(|w| w[0] <= w[1]), "the job never went back: {jobs:?}");
        assert_eq!(jobs.last().unwrap().0, "completed", "{jobs:?}");
        assert_eq!(jobs.iter().filter(|j| j.0 == "completed").count(), 1, "{jobs:?}");
    }

    async fn a_watcher_sends_a_held_notice_once_the_notice_filling_its_gap_arrives_without_reading_the_store(app) {
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let mut stream = open_events(&app, &id, None).await;
        assert_eq!(read_events(&mut stream, 1).await[0].0, "snapshot");
        let job_id: Uuid = id.parse().unwrap();
        let (job, revision) = app.store.job_with_revision(ws_id(&app).await, job_id).await.unwrap().unwrap();
        assert_eq!(app.store.job_logs(job_id, 0, 10).await.unwrap().len(), 0, "nothing logged yet");
        // Notices of entries the store does not have: what the watcher sends can only come
        // from them, so the test sees that the gap was filled by the notice, not a read.
        let entry = |seq: i64, message: &str| gepard_core::model::SequencedLog {
            seq,
            attempt: 1,
            entry: gepard_core::progress::LogEntry {
                timestamp: job.created_at,
                level: gepard_core::progress::LogLevel::Info,
                message: message.into(),
                data: json!({}),
            },
        };
        let mut done = job.clone();
        done.status = gepard_core::job::JobStatus::Completed;
        app.notifier.publish(notice(&job, revision + 2, vec![entry(2, "two")]));
        app.notifier.publish(notice(&job, revision + 1, vec![entry(1, "one")]));
        app.notifier.publish(notice(&done, revision + 3, vec![]));
        let events = read_events(&mut stream, 1000).await;
        let messages: Vec<&str> = events.iter().filter(|e| e.0 == "log").filter_map(|e| e.2["message"].as_str()).collect();
        assert_eq!(messages, ["one", "two"]);
        let last_job = events.iter().rev().find(|e| e.0 == "job").unwrap();
        assert_eq!(last_job.2["status"], "completed");
    }

    async fn a_change_from_a_process_that_does_not_count_revisions_still_reaches_watchers(app) {
        // During a rolling upgrade a process of an earlier version writes without bumping the
        // revision: its change has the revision already shown, and must still be shown.
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let mut stream = open_events(&app, &id, None).await;
        assert_eq!(read_events(&mut stream, 1).await[0].0, "snapshot");
        let (job, revision) = app.store.job_with_revision(ws_id(&app).await, id.parse().unwrap()).await.unwrap().unwrap();
        let mut done = job.clone();
        done.status = gepard_core::job::JobStatus::Completed;
        done.updated_at = job.updated_at + chrono::Duration::seconds(1);
        // The same record again changes nothing; the changed one is sent (and ends the stream).
        for job in [&job, &done] {
            app.notifier.publish(notice(job, revision, vec![]));
        }
        let events = read_events(&mut stream, 1000).await;
        let jobs: Vec<&str> = events.iter().filter(|e| e.0 == "job").filter_map(|e| e.2["status"].as_str()).collect();
        assert_eq!(jobs, ["completed"]);
    }

    async fn revoking_a_key_ends_the_event_streams_it_holds_open(app) {
        let created = app
            .post(
                "/api/v1/org/local/keys",
                json!({"name": "watcher", "scopes": ["read"]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let (secret, key_id) = (
            created.body["key"].as_str().unwrap().to_owned(),
            created.body["id"].as_str().unwrap().to_owned(),
        );
        let id = submit(&app, body()).await["id"].as_str().unwrap().to_owned();
        let open = |key: String| {
            let req = Request::get(format!("{JOBS}/{id}/events"))
                .header("x-api-key", key)
                .body(Body::empty())
                .unwrap();
            app.router.clone().oneshot(req)
        };
        let resp = open(secret.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut stream = resp.into_body();
        assert_eq!(read_events(&mut stream, 1).await[0].0, "snapshot");
        let revoked = app
            .call(
                Method::DELETE,
                &format!("/api/v1/org/local/keys/{key_id}"),
                Some(&app.admin_key.clone()),
                None,
            )
            .await;
        assert_eq!(revoked.status, StatusCode::OK);
        // The job is queued and stays so: only the revocation can end this stream (the helper
        // fails when nothing comes within 10 s, and a heartbeat would come only after 15 s).
        let rest = read_events(&mut stream, 1).await;
        assert!(rest.is_empty(), "the stream ended without another event: {rest:?}");
        assert_eq!(
            open(secret).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }

    async fn events_resume_after_last_event_id_without_repeating_entries(app) {
        let runner = app.key(&["runner"], None).await;
        let id = submit(&app, body()).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        start(&app, &id).await;
        for i in 0..3 {
            progress(
                &app,
                &runner,
                &id,
                json!({"event_type": "iteration_start", "message": format!("it {i}")}),
            )
            .await;
        }
        progress(
            &app,
            &runner,
            &id,
            json!({"event_type": "optimization_end"}),
        )
        .await;
        let mut all = open_events(&app, &id, None).await;
        let events = read_events(&mut all, 100).await;
        let logs: Vec<_> = events.iter().filter(|e| e.0 == "log").collect();
        assert!(logs.len() >= 5, "{events:?}");
        let cut = &logs[2].1;
        let mut resumed = open_events(&app, &id, Some(cut)).await;
        let rest = read_events(&mut resumed, 100).await;
        assert_eq!(rest[0].0, "snapshot");
        let rest_logs: Vec<_> = rest
            .iter()
            .filter(|e| e.0 == "log")
            .map(|e| e.1.clone())
            .collect();
        let expected: Vec<_> = logs[3..].iter().map(|e| e.1.clone()).collect();
        assert_eq!(
            rest_logs, expected,
            "exactly the entries after the resume point"
        );
        let resume_after = |id_text: String| {
            app.send(
                Request::get(format!("{JOBS}/{id}/events"))
                    .header("x-api-key", &app.admin_key)
                    .header("last-event-id", id_text)
                    .body(Body::empty())
                    .unwrap(),
            )
        };
        let bad = resume_after("x".into()).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        // The last id sent is a fine place to resume; one beyond it was never sent, and
        // resuming after it would skip entries unseen.
        let last: i64 = logs.last().unwrap().1.parse().unwrap();
        let at_end = resume_after(last.to_string()).await;
        assert_eq!(at_end.status, StatusCode::OK);
        let beyond = resume_after((last + 1).to_string()).await;
        assert_eq!(beyond.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            beyond.body["errors"][0]["msg"],
            format!("must be an event id from this stream; its last event id is {last}")
        );
    }
}
