//! Optimization jobs: submission with full validation, listing, control (cancel, retry),
//! evidence (logs, artifacts, attempts), progress from runtimes, and live events (SSE).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gepard_agent::recipe::{Recipe, RecipeError};
use gepard_agent::rollout::{check_row, row_tools, InputMapping, RowProblem};
use gepard_core::job::{JobCommand, JobStatus};
use gepard_core::model::PLATFORM_MAX_RUNTIME_SECONDS;
use gepard_core::model::{
    CapabilitySnapshot, Job, JobAttempt, JobSpec, Organization, Page, RewardRecipeSpec,
    SequencedLog, VersionRef, Workspace,
};
use gepard_core::names::{parse_version, split_org_prefix};
use gepard_core::progress::ProgressEvent;
use gepard_core::Scope;
use gepard_store::{Created, IdempotencyKey, JobFilter, LifecycleError, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody, FieldError};
use crate::extract::{
    bytes_rejection, from_json_body, json_value, query_number, ApiJson, ApiPath, ApiQuery,
};
use crate::routes::registry::page_request;
use crate::AppState;

/// A `{name, version}` ref in a create body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefInput {
    /// Name, optionally `org/name`.
    pub name: String,
    /// Exact version.
    pub version: String,
}

/// A reward recipe in a create body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeInput {
    /// Versioned recipe name (`exact_match_v1`, `contains_v1`, `row_reward_v1`, `trajectory_imitation_v1`).
    pub name: String,
    /// Recipe parameters (`null` → `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
}

/// Body of `POST …/optimization/jobs`. Every optional field may be `null` (= the default).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Optimization backend; only `gepa`.
    #[serde(default)]
    pub backend: Option<String>,
    /// What is optimized; only `capability_agent`.
    #[serde(default)]
    pub target_kind: Option<String>,
    /// Target model, `provider/model`.
    pub model: String,
    /// Project key or id (default: the workspace's default project).
    #[serde(default)]
    pub project: Option<String>,
    /// Caller's reference for the run.
    #[serde(default)]
    pub run_ref: Option<String>,
    /// The capability version.
    pub capability_ref: RefInput,
    /// The agent (default: the capability's first agent).
    #[serde(default)]
    pub agent_name: Option<String>,
    /// Training dataset.
    #[serde(default)]
    pub dataset_ref: Option<RefInput>,
    /// Validation dataset (default: the training dataset).
    #[serde(default)]
    pub val_dataset_ref: Option<RefInput>,
    /// Reward recipe.
    pub reward_recipe: RecipeInput,
    /// Optimized components; only `["instructions"]`.
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// What the optimization is for, in words.
    #[serde(default)]
    pub objective: Option<String>,
    /// Free tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Engine configuration (the Dreadnode vocabulary).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<Map<String, Value>>,
    /// Environment targets are not supported yet (must be null).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub capability_env: Option<Value>,
    /// Environment-mode task (Dreadnode clients send it at the top level); must be null.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub task_ref: Option<Value>,
    /// Environment-mode tasks; must be null.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub task_refs: Option<Value>,
    /// Environment-mode validation tasks; must be null.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub val_task_refs: Option<Value>,
    /// Per-task timeout of environment mode; stored in the config.
    #[serde(default)]
    pub timeout_sec: Option<i64>,
}

/// Collects field problems so one response names every wrong field.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, loc: &[&str], msg: impl Into<String>) {
        self.0.push(FieldError {
            loc: loc.iter().map(|s| (*s).to_owned()).collect(),
            msg: msg.into(),
            kind: "value_error".into(),
        });
    }

    fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

/// Config keys gepard implements.
const IMPLEMENTED: &[&str] = &[
    "concurrency",
    "seed",
    "max_metric_calls",
    "max_trials",
    "max_trials_without_improvement",
    "max_runtime_sec",
    "candidate_selection_strategy",
    "frontier_type",
    "skip_perfect_score",
    "perfect_score",
    "reflection_minibatch_size",
    "reflection_lm",
    "max_reflection_examples",
    "max_side_info_chars",
    "dataset_input_mapping",
    // gepard's own: caps each rollout's answer (small local models otherwise ramble).
    "max_output_tokens",
];

/// Config keys accepted for compatibility, stored and reported in the job's log.
const STORED_ONLY: &[&str] = &[
    "parallel_rows",
    "display_progress_bar",
    "track_best_outputs",
    "val_evaluation_policy",
    "cache_evaluation",
    "batch_sampler",
    "module_selector",
    "reflection_prompt_template",
    "max_merge_invocations",
    "merge_val_overlap_floor",
    "capture_traces",
    "include_outputs",
    "include_errors",
    "task_ref",
    "task_refs",
    "val_task_refs",
    "timeout_sec",
];

/// Adds a problem at `loc` when `id`'s provider is not one this server's model registry
/// knows (the same registry, from the same configuration, that its workers' runs use). A
/// server without a registry (tests, embedding) checks only the shape.
fn unknown_provider(state: &AppState, p: &mut Problems, loc: &[&str], id: &str) {
    let (Some(models), Some((provider, _))) = (&state.models, id.split_once('/')) else {
        return;
    };
    let known = models.provider_names();
    if !known.iter().any(|k| k == provider) {
        p.add(
            loc,
            format!(
                "unknown model provider `{provider}` (known: {}; more can be named in \
                 GEPARD_PROVIDERS)",
                known.join(", ")
            ),
        );
        return;
    }
    // In-process providers (`local`, `builtin`) know their models; a remote provider's model
    // names are the remote's business and are only learned from its first answer. A
    // provider misconfigured here (a missing key, say) is not refused: the workers that run
    // the job may be configured where this server is not.
    if let Err(gepard_llm::LlmError::ModelNotFound { model, message, .. }) = models.resolve(id) {
        p.add(
            loc,
            format!("provider `{provider}` has no model `{model}`: {message}"),
        );
    }
}

/// Whether a model id looks like `provider/model`.
///
/// Only the shape is checked here; whether the provider exists is the runtime's business,
/// and an unknown one fails the run fast with its message.
fn model_id_ok(id: &str) -> bool {
    match id.split_once('/') {
        Some((p, m)) => {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
                && !m.trim().is_empty()
                && !m.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn int_in(p: &mut Problems, cfg: &Map<String, Value>, key: &str, min: i64, max: i64) {
    if let Some(v) = cfg.get(key) {
        match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => {}
            _ => p.add(
                &["body", "config", key],
                format!("must be an integer from {min} to {max}"),
            ),
        }
    }
}

fn bool_at(p: &mut Problems, cfg: &Map<String, Value>, key: &str) {
    if cfg.get(key).is_some_and(|v| !v.is_boolean()) {
        p.add(&["body", "config", key], "must be true or false");
    }
}

fn one_of(p: &mut Problems, cfg: &Map<String, Value>, key: &str, allowed: &[&str]) {
    if let Some(v) = cfg.get(key) {
        if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
            p.add(
                &["body", "config", key],
                format!("must be one of {}", allowed.join(", ")),
            );
        }
    }
}

/// Validates the config and fills gepard's defaults. Nulls mean "default" and are dropped.
fn check_config(
    p: &mut Problems,
    raw: Option<Map<String, Value>>,
) -> (Map<String, Value>, Vec<String>) {
    let mut cfg: Map<String, Value> = raw
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .collect();
    let mut stored_only = Vec::new();
    for key in cfg.keys() {
        if IMPLEMENTED.contains(&key.as_str()) {
            continue;
        }
        if STORED_ONLY.contains(&key.as_str()) {
            stored_only.push(key.clone());
        } else {
            p.add(&["body", "config", key], "unknown setting");
        }
    }
    int_in(p, &cfg, "concurrency", 1, 64);
    int_in(p, &cfg, "parallel_rows", 1, 64);
    int_in(p, &cfg, "seed", 0, i64::from(u32::MAX));
    int_in(p, &cfg, "max_metric_calls", 1, 1_000_000);
    int_in(p, &cfg, "max_trials", 1, 100_000);
    int_in(p, &cfg, "max_trials_without_improvement", 1, 100_000);
    int_in(p, &cfg, "max_runtime_sec", 1, PLATFORM_MAX_RUNTIME_SECONDS);
    int_in(p, &cfg, "reflection_minibatch_size", 1, 100);
    int_in(p, &cfg, "max_reflection_examples", 1, 100);
    int_in(p, &cfg, "max_side_info_chars", 100, 1_000_000);
    // The reference's default is 5, so clients that send every default send it; merge is
    // stored and explained in the logs rather than refused (see `merge_note`).
    int_in(p, &cfg, "max_merge_invocations", 0, 100_000);
    int_in(p, &cfg, "timeout_sec", 1, PLATFORM_MAX_RUNTIME_SECONDS);
    int_in(p, &cfg, "max_output_tokens", 1, 32_768);
    for key in [
        "skip_perfect_score",
        "display_progress_bar",
        "track_best_outputs",
        "cache_evaluation",
        "capture_traces",
        "include_outputs",
        "include_errors",
    ] {
        bool_at(p, &cfg, key);
    }
    one_of(
        p,
        &cfg,
        "candidate_selection_strategy",
        &["pareto", "current_best", "epsilon_greedy"],
    );
    // Settings gepard only stores must still have the types Dreadnode clients read back,
    // or one stored job would break those clients' job list for the whole workspace.
    int_in(p, &cfg, "merge_val_overlap_floor", 0, 1_000_000);
    if cfg.get("module_selector").is_some_and(|v| !v.is_string()) {
        p.add(&["body", "config", "module_selector"], "must be a string");
    }
    if let Some(v) = cfg.get("reflection_prompt_template") {
        let ok = v.is_string()
            || v.as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
        if !ok {
            p.add(
                &["body", "config", "reflection_prompt_template"],
                "must be a string or an object of strings",
            );
        }
    }
    one_of(p, &cfg, "val_evaluation_policy", &["full_eval"]);
    // The engine's `FrontierType` names (the server does not depend on the engine crate).
    one_of(
        p,
        &cfg,
        "frontier_type",
        &["instance", "objective", "hybrid", "cartesian"],
    );
    one_of(p, &cfg, "batch_sampler", &["epoch_shuffled"]);
    if let Some(v) = cfg.get("perfect_score") {
        // Every recipe scores within [0, 1]: above 1 no minibatch could ever be perfect.
        if !v.as_f64().is_some_and(|f| f > 0.0 && f <= 1.0) {
            p.add(
                &["body", "config", "perfect_score"],
                "must be a number above 0 and at most 1 (rewards are within [0, 1])",
            );
        }
    }
    if let Some(v) = cfg.get("reflection_lm") {
        match v.as_str() {
            Some(s) if model_id_ok(s) || s == "builtin/rules" => {}
            _ => p.add(
                &["body", "config", "reflection_lm"],
                "must be a model id of the form provider/model",
            ),
        }
    }
    for key in ["task_ref", "task_refs", "val_task_refs"] {
        if cfg.contains_key(key) {
            p.add(
                &["body", "config", key],
                "tasks belong to capability_env targets, which are not supported yet",
            );
        }
    }
    // Defaults, so the stored config says exactly what runs.
    let defaults = [
        ("seed", Value::from(0)),
        ("concurrency", Value::from(1)),
        ("max_metric_calls", Value::from(100)),
        ("reflection_minibatch_size", Value::from(3)),
        ("candidate_selection_strategy", Value::from("pareto")),
        ("frontier_type", Value::from("instance")),
        ("skip_perfect_score", Value::from(true)),
        ("perfect_score", Value::from(1.0)),
        ("max_reflection_examples", Value::from(10)),
        ("max_side_info_chars", Value::from(4000)),
    ];
    for (k, v) in defaults {
        cfg.entry(k).or_insert(v);
    }
    (cfg, stored_only)
}

/// What a job asking for merges is told: gepard optimizes one component (`instructions`), and
/// GEPA's merge builds a candidate by taking each component from one of two relatives, so with
/// one component a merge can only reproduce a candidate the run already has.
fn merge_note(config: &Map<String, Value>) -> Option<String> {
    let n = config
        .get("max_merge_invocations")?
        .as_i64()
        .filter(|n| *n > 0)?;
    Some(format!(
        "max_merge_invocations {n} is stored but no merge runs: a merge takes each optimized \
         component from one of two candidates, and with the one component `instructions` it \
         would only reproduce an existing candidate"
    ))
}

/// Splits a ref's optional org prefix; the prefix must be the job's own org.
fn ref_parts(
    p: &mut Problems,
    field: &str,
    r: &RefInput,
    org: &Organization,
) -> Option<(String, String)> {
    let name = match split_org_prefix(&r.name) {
        Ok((Some(o), _)) if o.as_str() != org.key => {
            p.add(
                &["body", field, "name"],
                format!(
                    "organization `{o}` is not this job's organization `{}`",
                    org.key
                ),
            );
            return None;
        }
        Ok((_, name)) => name.to_string(),
        Err(e) => {
            p.add(&["body", field, "name"], e.to_string());
            return None;
        }
    };
    match parse_version(&r.version) {
        Ok(v) => Some((name, v.to_string())),
        Err(e) => {
            p.add(&["body", field, "version"], e.to_string());
            None
        }
    }
}

fn text_limit(p: &mut Problems, field: &str, v: Option<&String>, max: usize) {
    if v.is_some_and(|s| s.chars().count() > max) {
        p.add(
            &["body", field],
            format!("must be at most {max} characters"),
        );
    }
}

/// Validates a create body against the workspace's registries and projects.
async fn validate(
    state: &AppState,
    org: &Organization,
    ws: &Workspace,
    body: CreateJob,
    created_by: Uuid,
) -> Result<(NewJob, Vec<String>), ApiError> {
    let mut p = Problems::default();
    let backend = body.backend.clone().unwrap_or_else(|| "gepa".into());
    if backend != "gepa" {
        p.add(&["body", "backend"], "only `gepa` is supported");
    }
    let target_kind = body
        .target_kind
        .clone()
        .unwrap_or_else(|| "capability_agent".into());
    match target_kind.as_str() {
        "capability_agent" => {}
        "capability_env" => p.add(
            &["body", "target_kind"],
            "capability_env is not supported yet",
        ),
        other => p.add(
            &["body", "target_kind"],
            format!("unknown target kind `{other}`; use capability_agent"),
        ),
    }
    // Dreadnode clients send these at the top level too; a capability agent has no tasks.
    for (key, value) in [
        ("task_ref", &body.task_ref),
        ("task_refs", &body.task_refs),
        ("val_task_refs", &body.val_task_refs),
    ] {
        if value.as_ref().is_some_and(|v| !v.is_null()) {
            p.add(
                &["body", key],
                "tasks belong to capability_env targets, which are not supported yet",
            );
        }
    }
    if body.capability_env.is_some() {
        p.add(
            &["body", "capability_env"],
            "capability_env is not supported yet",
        );
    }
    if !model_id_ok(&body.model) {
        p.add(
            &["body", "model"],
            format!(
                "`{}` is not a model id of the form provider/model",
                body.model
            ),
        );
    } else if body.model.starts_with("builtin/") {
        p.add(
            &["body", "model"],
            format!(
                "`{}` derives instruction edits without a model and cannot answer rows; \
                 use it as config.reflection_lm with a real target model",
                body.model
            ),
        );
    } else {
        unknown_provider(state, &mut p, &["body", "model"], &body.model);
    }
    let components = body
        .components
        .clone()
        .unwrap_or_else(|| vec!["instructions".into()]);
    if components != ["instructions"] {
        p.add(
            &["body", "components"],
            "capability_agent optimizes only [\"instructions\"]",
        );
    }
    text_limit(&mut p, "name", body.name.as_ref(), 200);
    text_limit(&mut p, "run_ref", body.run_ref.as_ref(), 200);
    text_limit(&mut p, "objective", body.objective.as_ref(), 10_000);
    let tags = body.tags.clone().unwrap_or_default();
    if tags.len() > 50 || tags.iter().any(|t| t.is_empty() || t.chars().count() > 100) {
        p.add(&["body", "tags"], "at most 50 tags of 1 to 100 characters");
    }
    let params = body
        .reward_recipe
        .params
        .clone()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let recipe = Recipe::from_spec(&body.reward_recipe.name, &params);
    if let Err(e) = &recipe {
        match e {
            RecipeError::UnknownRecipe { .. } => {
                p.add(&["body", "reward_recipe", "name"], e.to_string());
            }
            RecipeError::InvalidParam { param, .. } => {
                let mut loc = vec!["body", "reward_recipe"];
                loc.extend(param.split('.'));
                p.add(&loc, e.to_string());
            }
        }
    }
    let mut raw_config = body.config.clone().unwrap_or_default();
    if let Some(t) = body.timeout_sec {
        raw_config.entry("timeout_sec").or_insert(Value::from(t));
    }
    let (config, stored_only) = check_config(&mut p, Some(raw_config));
    if let Some(lm) = config.get("reflection_lm").and_then(Value::as_str) {
        unknown_provider(state, &mut p, &["body", "config", "reflection_lm"], lm);
    }
    // How rows become user messages; checked with each row's tools against every row of the
    // datasets below, so a row the agent cannot be asked about is a 422 now, not a run that
    // scores 0 later.
    let mapping = match InputMapping::from_config(config.get("dataset_input_mapping")) {
        Ok(m) => Some(m),
        Err(e) => {
            p.add(&["body", "config", "dataset_input_mapping"], e);
            None
        }
    };

    // Registries: the capability version and its agent, the datasets.
    let mut capability = None;
    let mut agent_name = body.agent_name.clone().unwrap_or_default();
    if let Some((name, version)) = ref_parts(&mut p, "capability_ref", &body.capability_ref, org) {
        match state
            .store
            .capability_version(org.id, &name, &version)
            .await?
        {
            None => p.add(
                &["body", "capability_ref"],
                format!(
                    "capability {name}@{version} is not published in `{}`",
                    org.key
                ),
            ),
            Some(cap) => {
                match body.agent_name.as_deref() {
                    None => {
                        agent_name = cap
                            .agents
                            .first()
                            .map(|a| a.name.clone())
                            .unwrap_or_default();
                    }
                    Some(a) if cap.agents.iter().any(|x| x.name == a) => {}
                    Some(a) => p.add(
                        &["body", "agent_name"],
                        format!(
                            "capability {name}@{version} has no agent `{a}` (agents: {})",
                            cap.agents
                                .iter()
                                .map(|x| x.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ),
                }
                capability = Some(CapabilitySnapshot {
                    artifact_id: cap.id,
                    name: cap.name,
                    version: cap.version,
                    runtime_digest: format!("sha256:{}", cap.sha256),
                });
            }
        }
    }
    let mut val_rows = None;
    let dataset = |field: &'static str, r: Option<&RefInput>| (field, r.cloned());
    let mut refs = Vec::new();
    // The dataset whose rows were checked: a validation ref naming the training dataset again
    // is not read a second time.
    let mut rows_checked: Option<(String, String)> = None;
    for (field, r) in [
        dataset("dataset_ref", body.dataset_ref.as_ref()),
        dataset("val_dataset_ref", body.val_dataset_ref.as_ref()),
    ] {
        let Some(r) = r else {
            if field == "dataset_ref" {
                p.add(
                    &["body", "dataset_ref"],
                    "capability_agent needs a training dataset",
                );
            }
            refs.push(None);
            continue;
        };
        let Some((name, version)) = ref_parts(&mut p, field, &r, org) else {
            refs.push(None);
            continue;
        };
        match state.store.dataset_version(org.id, &name, &version).await? {
            None => {
                p.add(
                    &["body", field],
                    format!("dataset {name}@{version} is not published in `{}`", org.key),
                );
                refs.push(None);
            }
            Some(ds) => {
                if field == "val_dataset_ref" || val_rows.is_none() {
                    val_rows = Some(ds.row_count);
                }
                let this = Some((name.clone(), version.clone()));
                if rows_checked != this {
                    rows_checked = this;
                    let rows = state
                        .store
                        .all_dataset_rows(org.id, &name, &version)
                        .await?
                        .unwrap_or_default();
                    // The same checks a rollout makes before its model call; with a mapping
                    // that is already refused above, the tools are still checked.
                    if let Some((i, why)) = rows.iter().enumerate().find_map(|(i, row)| {
                        match &mapping {
                            Some(mapping) => check_row(mapping, recipe.as_ref().ok(), row),
                            None => row_tools(row).map(drop).map_err(RowProblem::Tools),
                        }
                        .err()
                        .map(|e| (i, e))
                    }) {
                        p.add(
                            &["body", field],
                            format!("row {} of dataset {name}@{version} {why}", i + 1),
                        );
                    }
                }
                refs.push(Some(VersionRef {
                    name: r.name.clone(),
                    version,
                }));
            }
        }
    }
    if let (Some(rows), Some(budget)) = (
        val_rows,
        config.get("max_metric_calls").and_then(Value::as_i64),
    ) {
        // A budget outside its range is already reported; one message per field is enough.
        if (1..=1_000_000).contains(&budget) && budget < rows {
            p.add(
                &["body", "config", "max_metric_calls"],
                format!("a budget of {budget} metric calls cannot even evaluate the seed on the {rows} validation rows"),
            );
        }
    }

    // Project: the named one, else the workspace default; its first runtime is bootstrapped.
    let project = match body.project.as_deref() {
        Some(key) => state.store.project(ws.id, key).await?,
        None => state.store.default_project(ws.id).await?,
    };
    if project.is_none() {
        let what = body.project.as_deref().unwrap_or("(default)");
        p.add(
            &["body", "project"],
            format!("project `{what}` not found in workspace `{}`", ws.key),
        );
    }
    p.into_result()?;
    let (Some(project), Some(capability)) = (project, capability) else {
        unreachable!("problems were reported above");
    };
    state.store.ensure_runtime(project.id).await?;
    let mut refs = refs.into_iter();
    let dataset_ref = refs.next().flatten().expect("validated above");
    let val_dataset_ref = refs.next().flatten();
    let mut notes = Vec::new();
    if val_dataset_ref.is_none() {
        notes.push(
            "no validation dataset: the training dataset is also the validation set".to_owned(),
        );
    }
    // The engine never starts an iteration the budget cannot finish (parent and child on the
    // minibatch, then the child on every validation row), so a budget that only covers the
    // seed is legal but optimizes nothing: say so up front, not only when the run ends.
    if let (Some(rows), Some(budget), Some(minibatch)) = (
        val_rows,
        config.get("max_metric_calls").and_then(Value::as_i64),
        config
            .get("reflection_minibatch_size")
            .and_then(Value::as_i64),
    ) {
        let iteration = 2 * minibatch + rows;
        if budget < rows + iteration {
            notes.push(format!(
                "max_metric_calls {budget} covers the seed evaluation ({rows} calls) but no \
                 iteration, which may need {iteration} (2 × minibatch {minibatch} + {rows} \
                 validation rows): the run will report the seed only"
            ));
        }
    }
    if let Some(note) = merge_note(&config) {
        notes.push(note);
    }
    if !stored_only.is_empty() {
        notes.push(format!(
            "settings stored but not implemented by gepard: {}",
            stored_only.join(", ")
        ));
    }
    Ok((
        NewJob {
            org_id: org.id,
            workspace_id: ws.id,
            project_id: project.id,
            name: body.name.clone(),
            backend,
            target_kind,
            model: body.model.clone(),
            run_ref: body.run_ref.clone(),
            objective: body.objective.clone(),
            spec: JobSpec {
                dataset_ref,
                val_dataset_ref,
                capability,
                agent_name,
                reward_recipe: RewardRecipeSpec {
                    name: body.reward_recipe.name.clone(),
                    params,
                },
                components,
                config: Value::Object(config),
                tags,
            },
            created_by: Some(created_by),
        },
        notes,
    ))
}

fn parse_body(
    body: Result<Bytes, BytesRejection>,
    headers: &HeaderMap,
) -> Result<(CreateJob, String), ApiError> {
    let bytes = body.map_err(|e| bytes_rejection(&e))?;
    let value = json_value(headers, &bytes)?;
    // Canonical form (sorted keys) so the idempotency hash ignores formatting and key order.
    let hash = hex::encode(Sha256::digest(value.to_string().as_bytes()));
    let parsed: CreateJob = from_json_body(&value)?;
    Ok((parsed, hash))
}

/// A job id from the path; anything else is a job that does not exist (404).
pub(crate) fn job_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("job `{id}` not found")))
}

async fn load(
    state: &AppState,
    caller: &Caller,
    org: &str,
    ws: &str,
    id: &str,
    scope: Scope,
) -> ApiResult<(Workspace, Job)> {
    let (_, ws) = caller.workspace(state, org, ws, scope).await?;
    let id = job_id(id)?;
    let job = state.store.job(ws.id, id).await?.ok_or_else(|| {
        ApiError::not_found(format!("job `{id}` not found in workspace `{}`", ws.key))
    })?;
    Ok((ws, job))
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotFound(id) => ApiError::not_found(format!("job `{id}` not found")),
            LifecycleError::Illegal(t) => ApiError::conflict(t.to_string()),
            LifecycleError::Fenced(_) | LifecycleError::HeldByWorker { .. } => {
                ApiError::conflict(e.to_string())
            }
            LifecycleError::Invalid(problems) => ApiError::validation(problems),
            LifecycleError::Store(s) => s.into(),
        }
    }
}

/// `POST …/optimization/jobs`: validates and queues a job. `Idempotency-Key` makes a retried
/// submit return the same job (200); the same key with another body is a 409.
#[utoipa::path(post, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"),
           ("Idempotency-Key" = Option<String>, Header, description = "makes retried submissions safe")),
    request_body = CreateJob,
    responses((status = 201, body = Job), (status = 200, body = Job, description = "replayed idempotent submission"),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let (org, ws) = {
        let (o, w) = caller.workspace(&state, &org, &ws, Scope::Write).await?;
        (o, w)
    };
    let (body, hash) = parse_body(body, &headers)?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid(
                        &["header", "Idempotency-Key"],
                        "must be 1 to 255 printable characters",
                    )
                })?;
            Some(IdempotencyKey {
                key: key.to_owned(),
                request_hash: hash,
            })
        }
    };
    let (new, notes) = validate(&state, &org, &ws, body, caller.key.info.user_id).await?;
    match state.store.create_job(new, idempotency).await? {
        Created::Replayed(job) => Ok((StatusCode::OK, Json(job)).into_response()),
        Created::New(job) => {
            let job = state
                .store
                .note_job(state.notifier.as_ref(), &job, &notes)
                .await?;
            Ok((StatusCode::CREATED, Json(job)).into_response())
        }
    }
}

/// Query of `GET …/optimization/jobs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// 1-based page.
    #[param(value_type = Option<u64>, minimum = 1)]
    pub page: Option<String>,
    /// Items per page (1–100, default 20).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 100)]
    pub page_size: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this backend.
    pub backend: Option<String>,
    /// Only this target kind.
    pub target_kind: Option<String>,
    /// Only this project (key or id).
    pub project: Option<String>,
    /// gepard's extra: only jobs whose id, name, model, capability (`name@version`) or tags
    /// contain this text, ignoring case.
    pub search: Option<String>,
    /// gepard's extra: `newest` (default) or `oldest` first; an outside runtime takes queued
    /// jobs in order with `?status=queued&order=oldest`.
    pub order: Option<String>,
}

/// `GET …/optimization/jobs`: newest first (`?order=oldest` for the other way).
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), JobListQuery),
    responses((status = 200, body = Page<Job>), (status = 422, body = ErrorBody)))]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> ApiResult<Json<Page<Job>>> {
    let (_, ws) = caller.workspace(&state, &org, &ws, Scope::Read).await?;
    let page = page_request(q.page.as_deref(), q.page_size.as_deref())?;
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let status = match nonempty(q.status) {
        None => None,
        Some(s) => Some(
            s.parse::<JobStatus>()
                .map_err(|e| ApiError::invalid(&["query", "status"], e.to_string()))?,
        ),
    };
    let project_id = match nonempty(q.project) {
        None => None,
        Some(p) => Some(
            state
                .store
                .project(ws.id, &p)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid(&["query", "project"], format!("project `{p}` not found"))
                })?
                .id,
        ),
    };
    let oldest_first = match nonempty(q.order).as_deref() {
        None | Some("newest") => false,
        Some("oldest") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                &["query", "order"],
                format!("unknown order `{other}`: expected `newest` or `oldest`"),
            ))
        }
    };
    let filter = JobFilter {
        status,
        backend: nonempty(q.backend),
        target_kind: nonempty(q.target_kind),
        project_id,
        search: nonempty(q.search.map(|s| s.trim().to_owned())),
        oldest_first,
    };
    Ok(Json(state.store.list_jobs(ws.id, &filter, page).await?))
}

/// `GET …/optimization/jobs/{id}`.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(
        load(&state, &caller, &org, &ws, &id, Scope::Read).await?.1,
    ))
}

async fn command(
    state: &AppState,
    caller: &Caller,
    org: &str,
    ws: &str,
    id: &str,
    cmd: JobCommand,
) -> ApiResult<Json<Job>> {
    let (ws, job) = load(state, caller, org, ws, id, Scope::Write).await?;
    Ok(Json(
        state
            .store
            .job_command(state.notifier.as_ref(), ws.id, job.id, &cmd)
            .await?,
    ))
}

/// `POST …/{id}/cancel`: a queued job is cancelled at once; a running one records the request
/// and ends `cancelled` when its runtime stops; a finished one is a 409.
#[utoipa::path(post, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/cancel", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Job>> {
    command(&state, &caller, &org, &ws, &id, JobCommand::RequestCancel).await
}

/// `POST …/{id}/retry`: a finished job goes back to `queued` with its evidence cleared and
/// the attempt number raised; anything else is a 409.
#[utoipa::path(post, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/retry", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Job>> {
    command(&state, &caller, &org, &ws, &id, JobCommand::Retry).await
}

/// Query of `GET …/logs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only entries after this sequence number.
    #[param(value_type = Option<u64>)]
    pub after: Option<String>,
    /// Most entries (1–1000, default 1000).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Body of `GET …/logs`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogsPage {
    /// Entries, oldest first.
    pub items: Vec<SequencedLog>,
}

/// `GET …/{id}/logs?after=&limit=`: oldest first.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/logs", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id"), LogsQuery),
    responses((status = 200, body = LogsPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn job_logs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
    query: Result<ApiQuery<LogsQuery>, ApiError>,
) -> ApiResult<Json<LogsPage>> {
    // Who may see the job comes first (401, 404, 403), then what is wrong with the query.
    let (_, job) = load(&state, &caller, &org, &ws, &id, Scope::Read).await?;
    let ApiQuery(q) = query?;
    let after = query_number("after", q.after.as_deref(), 0..=i64::MAX)?.unwrap_or(0);
    let limit = query_number("limit", q.limit.as_deref(), 1..=1000)?.unwrap_or(1000);
    Ok(Json(LogsPage {
        items: state.store.job_logs(job.id, after, limit).await?,
    }))
}

/// Body of `GET …/artifacts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ArtifactsBody {
    /// The job's artifacts.
    #[schema(value_type = Object)]
    pub artifacts: Value,
}

/// `GET …/{id}/artifacts`.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/artifacts", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    responses((status = 200, body = ArtifactsBody), (status = 404, body = ErrorBody)))]
pub async fn job_artifacts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<ArtifactsBody>> {
    let (_, job) = load(&state, &caller, &org, &ws, &id, Scope::Read).await?;
    Ok(Json(ArtifactsBody {
        artifacts: job.artifacts,
    }))
}

/// `GET …/{id}/attempts`: finished attempts kept by retries, oldest first.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/attempts", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    responses((status = 200, body = Vec<JobAttempt>), (status = 404, body = ErrorBody)))]
pub async fn job_attempts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Vec<JobAttempt>>> {
    let (_, job) = load(&state, &caller, &org, &ws, &id, Scope::Read).await?;
    Ok(Json(state.store.job_attempts(job.id).await?))
}

/// Body of `GET …/candidates`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CandidatesPage {
    /// Candidates of the current attempt, by index, each with `on_frontier` (on the Pareto
    /// frontier GEPA samples parents from, after domination pruning: what `frontier_size`
    /// counts) and `best` (exactly one: the highest validation mean, the lower index on ties).
    /// A candidate index holds one text: the same candidate again is ignored, another text a
    /// 409.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

/// Marks each candidate `on_frontier` when it is on the job's frontier: among the candidates
/// that tie for the best validation score on some example (the per-example Pareto fronts) or,
/// by `frontier_type`, have the best validation mean, those that survive domination pruning.
fn mark_frontier(items: &mut [Value], frontier_type: Option<&str>) {
    // GEPA's frontier types, as the engine reads `config.frontier_type`: `objective` keeps the
    // candidates with the best validation mean, `hybrid` adds them to the per-example fronts,
    // and `instance` (the default) and `cartesian` (one objective) are the per-example fronts.
    let (per_example, by_mean) = match frontier_type {
        Some("objective") => (false, true),
        Some("hybrid") => (true, true),
        _ => (true, false),
    };
    let means: Vec<f64> = items
        .iter()
        .map(|c| c["val_score"].as_f64().unwrap_or(f64::NEG_INFINITY))
        .collect();
    let scores: Vec<Vec<f64>> = items
        .iter()
        .map(|c| {
            c["val_subscores"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        })
        .collect();
    // Each front: the candidates tying for the best score on one example (or on the mean).
    let front_of = |score: &dyn Fn(usize) -> Option<f64>| -> Vec<usize> {
        let best = (0..items.len())
            .filter_map(score)
            .fold(f64::NEG_INFINITY, f64::max);
        (0..items.len())
            .filter(|&c| score(c) == Some(best))
            .collect()
    };
    let mut fronts: Vec<Vec<usize>> = Vec::new();
    if per_example {
        let width = scores.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..width {
            fronts.push(front_of(&|c| scores[c].get(i).copied()));
        }
    }
    if by_mean && !items.is_empty() {
        fronts.push(front_of(&|c| Some(means[c])));
    }
    let frontier = undominated(&fronts, &means);
    for (c, item) in items.iter_mut().enumerate() {
        item["on_frontier"] = Value::Bool(frontier.contains(&c));
    }
}

/// The candidates left on `fronts` after GEPA's domination pruning, as the engine computes the
/// frontier it reports (`frontier_size`): from the lowest mean up, a candidate is dropped when
/// every front it is on also holds another candidate not dropped. Without it every candidate
/// would count, since all tie on an example nobody solves. The server must not depend on the
/// engine crate, so the rule is written here again; a test pins it to the engine's cases.
fn undominated(fronts: &[Vec<usize>], means: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::new();
    for &c in fronts.iter().flatten() {
        if !order.contains(&c) {
            order.push(c);
        }
    }
    let mut by_mean = order.clone();
    by_mean.sort_by(|a, b| means[*a].total_cmp(&means[*b]));
    let mut dropped: Vec<usize> = Vec::new();
    while let Some(victim) = by_mean.iter().copied().find(|&y| {
        !dropped.contains(&y)
            && fronts
                .iter()
                .filter(|f| f.contains(&y))
                .all(|f| f.iter().any(|&o| o != y && !dropped.contains(&o)))
    }) {
        dropped.push(victim);
    }
    order.retain(|c| !dropped.contains(c));
    order
}

/// `GET …/{id}/candidates`: every candidate the current attempt evaluated on the validation
/// set: index, parents, instructions, validation mean and per-example scores, iteration,
/// metric calls spent when found, and whether it is on the frontier.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/candidates", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id")),
    responses((status = 200, body = CandidatesPage), (status = 404, body = ErrorBody)))]
pub async fn job_candidates(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<CandidatesPage>> {
    let (_, job) = load(&state, &caller, &org, &ws, &id, Scope::Read).await?;
    let mut items = state.store.candidates(job.id, job.attempt).await?;
    mark_frontier(
        &mut items,
        job.config.get("frontier_type").and_then(Value::as_str),
    );
    Ok(Json(CandidatesPage { items }))
}

/// `POST …/{id}/progress`: a runtime reports progress (needs a `runner` key). The key is the
/// runtime's identity: its `optimization_start` on a queued job claims the job (`running`,
/// under a lease each report renews), and from then on only that key may report for it. 409:
/// a job a worker of this deployment runs or another key claimed (so a runner key cannot
/// forge another run's result), another event on a queued job, a second start, a report
/// about another `attempt`, a finished job. A runtime that falls silent loses the job when its
/// lease expires: it is queued again, or ends `cancelled` if a cancel was requested. After a
/// cancel request, the runtime's `optimization_end` or `optimization_error` ends it `cancelled`.
#[utoipa::path(post, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/progress", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id"),
           ("Prefer" = Option<String>, Header, description = "`return=minimal` (RFC 7240): answer with the job's brief state instead of the whole job")),
    request_body = ProgressEvent,
    responses((status = 200, description = "the job, or with `Prefer: return=minimal` its brief state (`JobBrief`, and `Preference-Applied: return=minimal`)", body = Job),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn job_progress(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
    event: Result<ApiJson<ProgressEvent>, ApiError>,
) -> ApiResult<Response> {
    // Access first (401, 404, 403), then the body's faults, as on every route.
    let (_, job) = load(&state, &caller, &org, &ws, &id, Scope::Runner).await?;
    let ApiJson(event) = event?;
    let job = state
        .store
        .ingest_runtime_progress(
            state.notifier.as_ref(),
            job.id,
            &event,
            &gepard_store::runtime_owner(caller.key.info.id),
            state.runtime_lease,
        )
        .await?;
    if !prefers_minimal(&headers) {
        return Ok(Json(job).into_response());
    }
    let mut answer = Json(JobBrief::of(&job)).into_response();
    answer.headers_mut().insert(
        "preference-applied",
        axum::http::HeaderValue::from_static("return=minimal"),
    );
    Ok(answer)
}

/// Whether the request says `Prefer: return=minimal` (RFC 7240; several headers or
/// comma-separated preferences allowed, names and values compared without case).
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            // `token [BWS "=" BWS word]`, the word maybe quoted; what follows `;` are its
            // parameters.
            let preference = p.split(';').next().unwrap_or_default();
            let (name, value) = preference.split_once('=').unwrap_or((preference, ""));
            name.trim().eq_ignore_ascii_case("return")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("minimal")
        })
}

/// What a runtime needs back from a report, whatever the size of the job's metric series (a
/// whole job grows with every report, so a long run's answers would grow without bound).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobBrief {
    /// Job id.
    pub id: Uuid,
    /// Status after the report.
    pub status: JobStatus,
    /// Current attempt.
    pub attempt: i64,
    /// When a cancel was requested: the runtime should stop and report its end.
    pub cancel_requested_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last change.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The job's error, once it failed.
    pub error: Option<String>,
}

impl JobBrief {
    fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            status: job.status,
            attempt: job.attempt,
            cancel_requested_at: job.cancel_requested_at,
            updated_at: job.updated_at,
            error: job.error.clone(),
        }
    }
}

/// Interval of `heartbeat` events on idle streams.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET …/{id}/events`: Server-Sent Events. First `snapshot` (the job), then every log entry
/// after `Last-Event-ID` (all of them on a first connect), then `job` and `log` events live,
/// `heartbeat` every 15 s; the stream ends once the job is finished and its last events sent.
/// Event ids are log sequence numbers: resuming from one sends only newer entries.
#[utoipa::path(get, path = "/api/v1/org/{org}/ws/{ws}/optimization/jobs/{id}/events", tag = "jobs",
    params(("org" = String, Path, description = "organization key"), ("ws" = String, Path, description = "workspace key"), ("id" = String, Path, description = "job id"),
           ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses((status = 200, description = "text/event-stream of snapshot, job, log and heartbeat events"), (status = 404, body = ErrorBody)))]
pub async fn job_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((org, ws, id)): ApiPath<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Sse<tokio_stream::wrappers::ReceiverStream<Result<Event, Infallible>>>> {
    let (ws, _) = load(&state, &caller, &org, &ws, &id, Scope::Read).await?;
    let job_id = job_id(&id)?;
    let resume = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    &["header", "Last-Event-ID"],
                    "must be an event id from this stream",
                )
            })?,
    };
    // Ids only grow, so one beyond the job's last entry was never sent: resuming after it
    // would silently skip the entries up to it.
    let last = state.store.log_seq(job_id).await?;
    if resume > last {
        return Err(ApiError::invalid(
            &["header", "Last-Event-ID"],
            format!("must be an event id from this stream; its last event id is {last}"),
        ));
    }
    // Subscribe before the snapshot so no change between the two can be missed.
    let rx = state.notifier.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(256);
    // Counted from here, before the response leaves, until the stream's task ends.
    let watching = state.metrics.sse_watcher();
    let task_state = state.clone();
    tokio::spawn(async move {
        let _watching = watching;
        let key = (caller.key.org_id, caller.key.info.id);
        crate::sse::stream_job(task_state, ws.id, job_id, key, resume, rx, tx, HEARTBEAT).await;
    });
    // No axum keep-alive: the stream sends its own `heartbeat` events, as API.md specifies.
    Ok(Sse::new(tokio_stream::wrappers::ReceiverStream::new(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_tying_for_the_best_on_any_example_are_on_the_frontier() {
        let mut items = vec![
            serde_json::json!({"index": 0, "val_subscores": [0.0, 1.0, 0.0]}),
            serde_json::json!({"index": 1, "val_subscores": [1.0, 0.0, 0.0]}),
            serde_json::json!({"index": 2, "val_subscores": [0.5, 0.5, 0.0]}),
        ];
        mark_frontier(&mut items, Some("instance"));
        let on: Vec<bool> = items
            .iter()
            .map(|i| i["on_frontier"].as_bool().unwrap())
            .collect();
        assert_eq!(
            on,
            [true, true, false],
            "all tie at 0.0 on the last example, but 2 is on no other front: dominated"
        );
        items[2]["val_subscores"] = serde_json::json!([0.5, 0.5]);
        items[0]["val_subscores"] = serde_json::json!([0.0, 1.0]);
        items[1]["val_subscores"] = serde_json::json!([1.0, 0.0]);
        mark_frontier(&mut items, Some("instance"));
        let on: Vec<bool> = items
            .iter()
            .map(|i| i["on_frontier"].as_bool().unwrap())
            .collect();
        assert_eq!(on, [true, true, false]);
    }

    #[test]
    fn the_frontier_follows_the_jobs_frontier_type() {
        let items = || {
            vec![
                serde_json::json!({"index": 0, "val_score": 0.5, "val_subscores": [1.0, 0.0, 1.0, 0.0]}),
                serde_json::json!({"index": 1, "val_score": 0.75, "val_subscores": [1.0, 1.0, 1.0, 0.0]}),
                serde_json::json!({"index": 2, "val_score": 0.5, "val_subscores": [0.0, 0.0, 1.0, 1.0]}),
                serde_json::json!({"index": 3, "val_score": 0.25, "val_subscores": [0.0, 0.0, 1.0, 0.0]}),
            ]
        };
        let on = |frontier_type: Option<&str>| {
            let mut items = items();
            mark_frontier(&mut items, frontier_type);
            items
                .iter()
                .map(|c| c["on_frontier"].as_bool().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            on(None),
            [false, true, true, false],
            "all tie on the third example, but 1 is on every front 0 and 3 are on"
        );
        assert_eq!(on(Some("cartesian")), on(None));
        assert_eq!(on(Some("objective")), [false, true, false, false]);
        assert_eq!(on(Some("hybrid")), on(None));
    }

    #[test]
    fn the_frontier_is_what_the_reference_keeps_after_domination_pruning() {
        // 400 random pools whose survivors gepa 0.1.4 itself computed (the engine's fixture).
        let cases: Vec<Value> = serde_json::from_str(include_str!(
            "../../../gepard-gepa/tests/fixtures/reference_selection.json"
        ))
        .unwrap();
        let mut mismatches = 0;
        for case in &cases {
            let pool: Vec<Vec<f64>> = serde_json::from_value(case["val_scores"].clone()).unwrap();
            let mut items: Vec<Value> = pool
                .iter()
                .map(|s| {
                    serde_json::json!({"val_score": s.iter().sum::<f64>() / s.len() as f64,
                        "val_subscores": s})
                })
                .collect();
            mark_frontier(&mut items, None);
            // Compared by scores: which of two identical candidates survives is an artifact
            // of the reference's set iteration order.
            let mut ours: Vec<String> = (0..pool.len())
                .filter(|&c| items[c]["on_frontier"] == true)
                .map(|c| format!("{:?}", pool[c]))
                .collect();
            let mut theirs: Vec<String> = case["weights"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| format!("{:?}", pool[w[0].as_u64().unwrap() as usize]))
                .collect();
            ours.sort();
            theirs.sort();
            if ours != theirs {
                mismatches += 1;
            }
        }
        assert_eq!((cases.len(), mismatches), (400, 0));
    }
}
