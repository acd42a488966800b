//! Pins promotion over the real router and a real SQLite file: the preview of a completed job
//! (diff, scores, target), the promotion itself (a real bundle with the new instructions and
//! provenance, the source untouched, the job's artifacts and log, the audit entry), every
//! refusal with its message, and concurrent promotions writing exactly one version.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::{app_with_registry, body, submit, tar, TestApp, JOBS};
use gepard_agent::bundle::{Bundle, BundleFile, Capability};
use gepard_store::LocalNotifier;
use serde_json::{json, Value};

const CAP: &str = "/api/v1/org/local/capabilities/sentiment";
const BEST: &str = "Classify the sentiment.\nAnswer with exactly one lowercase word.";

/// Reports progress the way the claiming worker does: through the store, with its lease token
/// (a job a worker holds refuses reports from the API).
async fn progress(app: &TestApp, id: &str, lease_token: i64, event: Value) {
    let event = serde_json::from_value(event).unwrap();
    app.store
        .ingest_progress(
            &LocalNotifier::default(),
            id.parse().unwrap(),
            &event,
            Some(lease_token),
        )
        .await
        .unwrap();
}

/// Runs a job the way a worker would: claims it, stores its candidates (the seed and `best`),
/// reports the seed's and the best candidate's validation scores, and, unless `finish` is
/// false, ends it. Returns the job id.
async fn run_job(app: &TestApp, best: &str, finish: bool) -> String {
    run_held_job(app, best, finish).await.0
}

/// [`run_job`], also returning the worker's lease token (to report more progress later).
async fn run_held_job(app: &TestApp, best: &str, finish: bool) -> (String, i64) {
    run_submitted_job(app, body(), best, finish).await
}

/// [`run_held_job`] for the job `submission` creates.
async fn run_submitted_job(
    app: &TestApp,
    submission: Value,
    best: &str,
    finish: bool,
) -> (String, i64) {
    let id = submit(app, submission).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let notifier = LocalNotifier::default();
    let claimed = app
        .store
        .claim_next(&notifier, "test-worker", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job.id.to_string(), id);
    for (index, text, score, parents) in [
        (0, "Classify.", 0.25, json!([])),
        (1, best, 0.75, json!([0])),
    ] {
        let candidate = json!({
            "index": index, "parents": parents, "instructions": text, "val_score": score,
            "val_subscores": [score, score], "discovered_at_metric_calls": index * 10,
            "iteration": index, "best": index == 1,
        });
        assert!(app
            .store
            .save_candidate(claimed.job.id, 1, claimed.lease_token, index, &candidate)
            .await
            .unwrap());
    }
    let token = claimed.lease_token;
    progress(app, &id, token, json!({"event_type": "valset_evaluated", "iteration": 0,
        "summary": {"seed_score": 0.25, "best_score": 0.25, "best_candidate": {"instructions": "Classify."}},
        "metrics": {"val_score": [{"value": 0.25, "step": 0}]}})).await;
    progress(
        app,
        &id,
        token,
        json!({"event_type": "valset_evaluated", "iteration": 1,
        "summary": {"best_score": 0.75, "best_candidate": {"instructions": best}},
        "metrics": {"val_score": [{"value": 0.75, "step": 1}]}}),
    )
    .await;
    if finish {
        progress(
            app,
            &id,
            token,
            json!({"event_type": "optimization_end", "message": "done",
            "artifacts": {"best_instructions": best, "best_candidate_index": 1}}),
        )
        .await;
    }
    (id, token)
}

async fn promote(app: &TestApp, key: &str, id: &str, target: Value) -> common::Reply {
    app.call(
        Method::POST,
        &format!("{JOBS}/{id}/promote"),
        Some(key),
        Some(target),
    )
    .await
}

fn detail(r: &common::Reply) -> String {
    r.body["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_preview_of_a_completed_job_shows_the_diff_scores_and_target() {
    let app = app_with_registry().await;
    let id = run_job(&app, BEST, true).await;
    let reader = app.key(&["read"], None).await;
    let r = app
        .get_as(&reader, &format!("{JOBS}/{id}/promotion-preview"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let p = &r.body;
    assert_eq!(p["promotable"], true, "{p}");
    assert_eq!(p["reasons"], json!([]));
    assert_eq!(
        p["source"],
        json!({"name": "sentiment", "version": "1.0.0", "agent_name": "classifier", "instructions": "Classify."})
    );
    assert_eq!(
        p["target"],
        json!({"name": "sentiment", "version": "1.0.1"}),
        "default: the next free patch version"
    );
    assert_eq!(p["optimized_instructions"], BEST);
    assert_eq!(p["candidate_index"], 1);
    assert_eq!(
        (p["seed_score"].as_f64(), p["best_score"].as_f64()),
        (Some(0.25), Some(0.75))
    );
    assert_eq!(
        p["diff"],
        "--- sentiment@1.0.0 (classifier)\n+++ sentiment@1.0.1 (classifier)\n@@ -1 +1,2 @@\n\
         -Classify.\n+Classify the sentiment.\n+Answer with exactly one lowercase word.\n"
    );
    // A named target is previewed too, and a bad one names the query field.
    let other = app
        .get(&format!(
            "{JOBS}/{id}/promotion-preview?name=local/sentiment-tuned&version=2.0.0"
        ))
        .await;
    assert_eq!(
        other.body["target"],
        json!({"name": "sentiment-tuned", "version": "2.0.0"})
    );
    assert!(other.body["diff"]
        .as_str()
        .unwrap()
        .contains("+++ sentiment-tuned@2.0.0"));
    let bad = app
        .get(&format!("{JOBS}/{id}/promotion-preview?version=latest"))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["errors"][0]["loc"], json!(["query", "version"]));
    // An unknown parameter is ignored, as on every other route.
    let extra = app
        .get(&format!(
            "{JOBS}/{id}/promotion-preview?version=2.0.0&utm_source=x"
        ))
        .await;
    assert_eq!(extra.status, StatusCode::OK, "{}", extra.body);
    assert_eq!(extra.body["target"]["version"], "2.0.0");
    // Nothing was written by looking.
    assert_eq!(
        app.get(&format!("{CAP}/versions"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn promotion_writes_a_real_version_with_provenance_and_leaves_the_source_untouched() {
    let app = app_with_registry().await;
    let id = run_job(&app, BEST, true).await;
    let source_before = app.get(&format!("{CAP}/1.0.0")).await.body;
    let promoter = app.key(&["promote"], None).await;
    let r = app
        .call(
            Method::POST,
            &format!("{JOBS}/{id}/promote"),
            Some(&promoter),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "an empty body takes the defaults: {}",
        r.body
    );
    let v = &r.body;
    assert_eq!(
        (v["name"].as_str(), v["version"].as_str()),
        (Some("sentiment"), Some("1.0.1"))
    );
    assert_eq!(v["agents"][0]["instructions"], BEST);
    assert_eq!(
        v["agents"][0]["description"], "Labels text",
        "front matter kept"
    );
    assert_eq!(v["description"], "Sentiment agent");

    // Provenance, served by the capability detail route.
    let shown = app.get(&format!("{CAP}/1.0.1")).await.body;
    assert_eq!(shown, *v);
    let p = &shown["provenance"];
    assert_eq!(p["job_id"], id.as_str());
    assert_eq!(p["attempt"], 1);
    assert_eq!(p["candidate_index"], 1);
    assert_eq!(
        (p["seed_score"].as_f64(), p["best_score"].as_f64()),
        (Some(0.25), Some(0.75))
    );
    assert_eq!(
        p["source"],
        json!({"name": "sentiment", "version": "1.0.0", "agent_name": "classifier", "sha256": source_before["sha256"]})
    );
    assert_eq!(
        p["dataset"],
        json!({"name": "local/train", "version": "1.0.0"})
    );
    assert_eq!(p["val_dataset"], json!({"name": "val", "version": "1.0.0"}));
    assert_eq!(p["reward_recipe"]["name"], "exact_match_v1");
    assert_eq!(p["model"], "openai/gpt-4o-mini");
    assert_eq!(
        p["promoted_by"]["key_prefix"].as_str(),
        Some(&promoter[..12])
    );
    assert!(p["promoted_at"].is_string());

    // The source version is exactly as it was; the capability's latest moved up.
    assert_eq!(app.get(&format!("{CAP}/1.0.0")).await.body, source_before);
    assert_eq!(app.get(CAP).await.body["latest_version"], "1.0.1");

    // The stored files are a bundle that parses back to the same version.
    let mut files = Vec::new();
    for f in v["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let raw = app.get(&format!("{CAP}/1.0.1/files/{path}")).await.raw;
        files.push(BundleFile::new(path, raw));
    }
    let cap =
        Capability::parse(Bundle::from_tar_gz(&Bundle::from_files(files).to_tar_gz()).unwrap())
            .unwrap();
    assert_eq!(cap.sha256, v["sha256"].as_str().unwrap());
    assert_eq!(cap.version.to_string(), "1.0.1");
    assert_eq!(cap.agents[0].instructions, BEST);
    let agent_file = String::from_utf8(
        cap.bundle
            .get("agents/classifier.md")
            .unwrap()
            .content
            .clone(),
    )
    .unwrap();
    assert_eq!(
        agent_file,
        format!("---\nname: classifier\ndescription: Labels text\n---\n{BEST}\n")
    );

    // The job remembers it: artifacts (with the pinned inputs) and a log line.
    let artifacts = app.get(&format!("{JOBS}/{id}/artifacts")).await.body["artifacts"].clone();
    assert_eq!(artifacts["promoted_versions"][0]["name"], "sentiment");
    assert_eq!(artifacts["promoted_versions"][0]["version"], "1.0.1");
    assert_eq!(artifacts["promoted_versions"][0]["sha256"], v["sha256"]);
    assert_eq!(artifacts["capability"]["name"], "sentiment");
    assert_eq!(artifacts["capability"]["version"], "1.0.0");
    assert_eq!(artifacts["agent_name"], "classifier");
    assert_eq!(
        artifacts["dataset"],
        json!({"name": "local/train", "version": "1.0.0"})
    );
    assert_eq!(
        artifacts["val_dataset"],
        json!({"name": "val", "version": "1.0.0"})
    );
    assert_eq!(
        artifacts["best_instructions"], BEST,
        "the runtime's artifacts stay"
    );
    let logs = app.get(&format!("{JOBS}/{id}/logs")).await.body["items"].to_string();
    assert!(
        logs.contains("promoted to capability sentiment@1.0.1"),
        "{logs}"
    );

    // And the audit log has the entry.
    let audit = app.get("/api/v1/org/local/audit").await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    assert_eq!(audit.body["total"], 1);
    let entry = &audit.body["items"][0];
    assert_eq!(entry["action"], "capability.promote");
    assert_eq!(entry["subject"], "capability sentiment@1.0.1");
    assert_eq!(entry["details"]["job_id"], id.as_str());
    assert_eq!(entry["details"]["source"], "sentiment@1.0.0");
    assert_eq!(entry["actor"]["key_prefix"].as_str(), Some(&promoter[..12]));
    let not_admin = app.get_as(&promoter, "/api/v1/org/local/audit").await;
    assert_eq!(not_admin.status, StatusCode::FORBIDDEN);
    // An admin limited to another workspace does not see this workspace's promotions.
    let ws = app
        .post(
            "/api/v1/org/local/ws",
            json!({"key": "other", "name": "Other"}),
        )
        .await;
    assert_eq!(ws.status, StatusCode::CREATED, "{}", ws.body);
    let elsewhere = app.key(&["admin"], Some("other")).await;
    let theirs = app.get_as(&elsewhere, "/api/v1/org/local/audit").await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_eq!(theirs.body["total"], 0, "{}", theirs.body);
    assert_eq!(theirs.body["items"], json!([]));
    let here = app.key(&["admin"], Some("default")).await;
    assert_eq!(
        app.get_as(&here, "/api/v1/org/local/audit").await.body["total"],
        1
    );
}

#[tokio::test]
async fn a_cancelled_job_keeps_its_best_result_and_it_can_be_promoted() {
    let app = app_with_registry().await;
    let (id, token) = run_held_job(&app, BEST, false).await;
    let r = app
        .call(
            Method::POST,
            &format!("{JOBS}/{id}/cancel"),
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The worker sees the request, stops its runner and reports that it stopped.
    app.store
        .runner_command(
            &LocalNotifier::default(),
            id.parse().unwrap(),
            token,
            &gepard_core::job::JobCommand::RunnerStopped,
        )
        .await
        .unwrap();
    let job = app.get(&format!("{JOBS}/{id}")).await.body;
    assert_eq!(job["status"], "cancelled");
    let preview = app
        .get(&format!("{JOBS}/{id}/promotion-preview"))
        .await
        .body;
    assert_eq!(preview["promotable"], true, "{preview}");
    let r = promote(&app, &app.admin_key.clone(), &id, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["version"], "1.0.1");
}

#[tokio::test]
async fn each_refusal_says_why() {
    let app = app_with_registry().await;
    let admin = app.admin_key.clone();

    // Not completed.
    let (running, running_token) = run_held_job(&app, BEST, false).await;
    let r = promote(&app, &admin, &running, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        detail(&r),
        format!("job {running} is running, only completed or cancelled jobs (or one stopped by its max_runtime_sec) can be promoted")
    );
    let preview = app
        .get(&format!("{JOBS}/{running}/promotion-preview"))
        .await
        .body;
    assert_eq!(preview["promotable"], false);
    assert_eq!(preview["reasons"].as_array().unwrap().len(), 1);
    progress(
        &app,
        &running,
        running_token,
        json!({"event_type": "optimization_end"}),
    )
    .await;

    // No improvement in text: identical (modulo surrounding whitespace), or empty.
    let same = run_job(&app, "  Classify.\n", true).await;
    let r = promote(&app, &admin, &same, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        detail(&r),
        "the best candidate's instructions are identical to the source"
    );
    let empty = run_job(&app, " ", true).await;
    let r = promote(&app, &admin, &empty, json!({})).await;
    assert_eq!(detail(&r), "the best candidate's instructions are empty");

    // Version taken, by another publish or by this job's own promotion.
    let good = run_job(&app, BEST, true).await;
    let r = promote(&app, &admin, &good, json!({"version": "1.0.0"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(detail(&r), "version 1.0.0 of sentiment already exists");
    assert_eq!(
        promote(&app, &admin, &good, json!({})).await.status,
        StatusCode::CREATED
    );
    for target in [
        json!({}),
        json!({"version": "1.0.1"}),
        json!({"name": "sentiment", "version": null}),
    ] {
        let again = promote(&app, &admin, &good, target).await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert_eq!(
            detail(&again),
            format!("job {good} was already promoted to sentiment@1.0.1")
        );
    }

    // Missing scope (a key may read or write but not promote), runners too.
    for scopes in [&["read"][..], &["write"], &["runner"]] {
        let key = app.key(scopes, None).await;
        let r = promote(&app, &key, &good, json!({"version": "3.0.0"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{scopes:?}");
        assert!(detail(&r).contains("`promote` scope"), "{}", detail(&r));
    }
    // Another workspace: as if the job did not exist, even for a promote key.
    app.post("/api/v1/org/local/ws", json!({"key": "other"}))
        .await;
    let elsewhere = app.key(&["promote"], Some("other")).await;
    let r = promote(&app, &elsewhere, &good, json!({"version": "3.0.0"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/org/local/ws/other/optimization/jobs/{good}/promote"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        detail(&r).contains("not found in workspace `other`"),
        "{}",
        detail(&r)
    );
    // Bad targets name the field.
    for (target, loc) in [
        (json!({"version": "one"}), json!(["body", "version"])),
        // A megabyte of pre-release: valid semver, far too long for a version.
        (
            json!({"version": format!("3.0.0-{}", "a".repeat(1024 * 1024))}),
            json!(["body", "version"]),
        ),
        (json!({"name": "Bad Name"}), json!(["body", "name"])),
        (json!({"name": "acme/sentiment"}), json!(["body", "name"])),
        (json!({"colour": "red"}), json!(["body", "colour"])),
    ] {
        let r = promote(&app, &admin, &good, target.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{target}");
        assert_eq!(r.body["errors"][0]["loc"], loc, "{target}: {}", r.body);
    }
    // Only the one good promotion wrote anything.
    let versions = app.get(&format!("{CAP}/versions")).await.body;
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
}

#[tokio::test]
async fn the_same_job_may_be_promoted_to_another_explicit_target() {
    let app = app_with_registry().await;
    let id = run_job(&app, BEST, true).await;
    let admin = app.admin_key.clone();
    assert_eq!(
        promote(&app, &admin, &id, json!({})).await.status,
        StatusCode::CREATED
    );
    let r = promote(&app, &admin, &id, json!({"version": "2.0.0"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = promote(&app, &admin, &id, json!({"name": "sentiment-tuned"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        (r.body["name"].as_str(), r.body["version"].as_str()),
        (Some("sentiment-tuned"), Some("1.0.0")),
        "a new name starts at the source's version"
    );
    assert_eq!(r.body["agents"][0]["instructions"], BEST);
    let parsed = app
        .get("/api/v1/org/local/capabilities/sentiment-tuned/1.0.0/files/capability.yaml")
        .await;
    assert!(String::from_utf8(parsed.raw)
        .unwrap()
        .contains("name: sentiment-tuned\n"));
    let artifacts = app.get(&format!("{JOBS}/{id}/artifacts")).await.body;
    let written: Vec<String> = artifacts["artifacts"]["promoted_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        written,
        [
            "sentiment@1.0.1",
            "sentiment@2.0.0",
            "sentiment-tuned@1.0.0"
        ]
    );
}

#[tokio::test]
async fn promoting_into_an_unrelated_existing_capability_is_refused_and_a_promoted_line_continues()
{
    let app = app_with_registry().await;
    let admin = app.admin_key.clone();
    let other = tar(&[
        (
            "capability.yaml",
            "schema: 1\nname: multi\nversion: 2.3.5\ndescription: Two agents\n",
        ),
        (
            "agents/writer.md",
            "---\nname: writer\ndescription: Writes\n---\nWrite.\n",
        ),
        (
            "agents/classifier.md",
            "---\nname: classifier\ndescription: Labels\n---\nLabel.\n",
        ),
    ]);
    let r = app.upload("/api/v1/org/local/capabilities", other).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    let first = run_job(&app, BEST, true).await;
    let preview = app
        .get(&format!("{JOBS}/{first}/promotion-preview?name=multi"))
        .await
        .body;
    let refusal = "capability multi already exists and is not linked to sentiment by an \
                   earlier promotion: its next version would hold sentiment's agents and files \
                   instead of its own; choose a new name, or promote under sentiment";
    assert_eq!(preview["promotable"], false, "{preview}");
    assert_eq!(preview["reasons"], json!([refusal]));
    let r = promote(&app, &admin, &first, json!({"name": "multi"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(detail(&r), refusal);
    let versions = app
        .get("/api/v1/org/local/capabilities/multi/versions")
        .await
        .body;
    assert_eq!(versions.as_array().unwrap().len(), 1, "nothing written");

    // A new name starts a line; a later job from the same source continues it.
    let r = promote(&app, &admin, &first, json!({"name": "sentiment-tuned"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let second = run_job(&app, "Label the sentiment in one lowercase word.", true).await;
    let r = promote(&app, &admin, &second, json!({"name": "sentiment-tuned"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["version"], "1.0.1");

    // A line at the largest patch number has no next one: the default is refused.
    let max = format!("1.0.{}", u64::MAX);
    let r = promote(&app, &admin, &first, json!({"name": "big", "version": max})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = promote(&app, &admin, &second, json!({"name": "big"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        detail(&r),
        "big has no next patch version: its patch number is already the largest; give a version"
    );

    // A job on the tuned line may be promoted back under the source's name.
    let mut on_tuned = body();
    on_tuned["capability_ref"] = json!({"name": "sentiment-tuned", "version": "1.0.1"});
    let (third, _) = run_submitted_job(&app, on_tuned, "Say positive or negative.", true).await;
    let r = promote(&app, &admin, &third, json!({"name": "sentiment"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        (r.body["name"].as_str(), r.body["version"].as_str()),
        (Some("sentiment"), Some("1.0.1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_promotions_of_one_job_write_exactly_one_version() {
    concurrent_promotions_write_exactly_one_version(app_with_registry().await).await;
}

async fn concurrent_promotions_write_exactly_one_version(app: TestApp) {
    let app = std::sync::Arc::new(app);
    let id = run_job(&app, BEST, true).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let app = app.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let key = app.admin_key.clone();
                promote(&app, &key, &id, json!({})).await
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => assert_eq!(
                detail(&r),
                format!("job {id} was already promoted to sentiment@1.0.1")
            ),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(created, 1);
    let versions = app.get(&format!("{CAP}/versions")).await.body;
    let listed: Vec<&str> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["1.0.1", "1.0.0"]);
    assert_eq!(app.get("/api/v1/org/local/audit").await.body["total"], 1);
}

/// Promotion again on PostgreSQL, where concurrent requests really run at once (skipped,
/// printed, unless configured).
mod postgres {
    use super::*;
    use gepard_store::Backend;

    async fn app(test: &str) -> Option<TestApp> {
        common::app_with_registry_on(Backend::Postgres, &format!("promotion::postgres::{test}"))
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_promotions_of_one_job_write_exactly_one_version() {
        if let Some(app) = app("concurrent_promotions_of_one_job_write_exactly_one_version").await {
            concurrent_promotions_write_exactly_one_version(app).await;
        }
    }

    #[tokio::test]
    async fn the_preview_of_a_completed_job_shows_the_diff_scores_and_target() {
        if let Some(app) =
            app("the_preview_of_a_completed_job_shows_the_diff_scores_and_target").await
        {
            let id = run_job(&app, BEST, true).await;
            let r = app.get(&format!("{JOBS}/{id}/promotion-preview")).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            assert_eq!(r.body["promotable"], true, "{}", r.body);
            assert_eq!(
                r.body["target"],
                json!({"name": "sentiment", "version": "1.0.1"})
            );
            assert_eq!(r.body["optimized_instructions"], BEST);
        }
    }
}
