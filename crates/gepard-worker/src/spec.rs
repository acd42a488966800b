//! The run spec: everything a `run-job` child needs, resolved by the worker from the store and
//! sent on the child's stdin, so the child never touches the database.

use std::time::Duration;

use gepard_core::model::Job;
use gepard_gepa::{CandidateSelection, Config, FrontierType};
use gepard_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Resource limits the child applies to itself before doing anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Address-space limit in MiB (0: none).
    pub memory_mib: u64,
    /// Open files.
    pub open_files: u64,
    /// CPU seconds (0: none); a backstop under the wall-clock limit.
    pub cpu_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 4096,
            open_files: 1024,
            cpu_seconds: 0,
        }
    }
}

/// One run of one job attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// The job.
    pub job_id: Uuid,
    /// Its attempt.
    pub attempt: i64,
    /// Target model id.
    pub model: String,
    /// Reflection model id (the target model unless the job says otherwise).
    pub reflection_model: String,
    /// Capability, version and agent, for the log.
    pub target: String,
    /// The agent's current instructions: the seed candidate.
    pub seed_instructions: String,
    /// Training rows.
    pub train: Vec<Value>,
    /// Validation rows (the training rows when the job has no validation dataset).
    pub val: Vec<Value>,
    /// Reward recipe name.
    pub recipe: String,
    /// Reward recipe parameters.
    pub recipe_params: Value,
    /// `dataset_input_mapping`, if set.
    pub input_mapping: Option<Value>,
    /// Cap on each rollout's answer (`max_output_tokens`), if set.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// Engine configuration.
    pub engine: Config,
    /// Wall-clock limit of the whole attempt, in seconds.
    pub max_runtime_sec: u64,
    /// Seconds of the limit already used by earlier runs of this attempt (resume).
    pub elapsed_sec: u64,
    /// Checkpoint to resume from (serialized engine state).
    pub resume: Option<String>,
    /// Resource limits.
    pub limits: Limits,
}

/// Why a spec could not be built (the job then fails with this message).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A pinned input is gone from the registry.
    #[error("{0} is no longer in the registry")]
    Missing(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] gepard_store::StoreError),
}

async fn all_rows(
    store: &Store,
    org: Uuid,
    name: &str,
    version: &str,
) -> Result<Vec<Value>, SpecError> {
    store
        .all_dataset_rows(org, name, version)
        .await?
        .ok_or_else(|| SpecError::Missing(format!("dataset {name}@{version}")))
}

/// The engine configuration a job's stored config asks for.
pub fn engine_config(cfg: &Value) -> Config {
    let u = |k: &str| cfg.get(k).and_then(Value::as_u64);
    let mut c = Config::default();
    if let Some(v) = u("seed") {
        c.seed = v;
    }
    c.max_metric_calls = u("max_metric_calls");
    c.max_trials = u("max_trials");
    c.max_trials_without_improvement = u("max_trials_without_improvement");
    if let Some(v) = u("concurrency") {
        c.concurrency = usize::try_from(v).unwrap_or(1).max(1);
    }
    if let Some(v) = u("reflection_minibatch_size") {
        c.minibatch_size = usize::try_from(v).unwrap_or(3).max(1);
    }
    c.candidate_selection = match cfg
        .get("candidate_selection_strategy")
        .and_then(Value::as_str)
    {
        Some("current_best") => CandidateSelection::CurrentBest,
        Some("epsilon_greedy") => CandidateSelection::EpsilonGreedy { epsilon: 0.1 },
        _ => CandidateSelection::Pareto,
    };
    if let Some(t) = cfg
        .get("frontier_type")
        .and_then(Value::as_str)
        .and_then(FrontierType::parse)
    {
        c.frontier_type = t;
    }
    if let Some(v) = cfg.get("skip_perfect_score").and_then(Value::as_bool) {
        c.skip_perfect_score = v;
    }
    if let Some(v) = cfg.get("perfect_score").and_then(Value::as_f64) {
        c.perfect_score = v;
    }
    if let Some(v) = u("max_reflection_examples") {
        c.max_reflection_examples = usize::try_from(v).unwrap_or(10);
    }
    if let Some(v) = u("max_side_info_chars") {
        c.max_side_info_chars = usize::try_from(v).unwrap_or(4000);
    }
    // The wall-clock limit is enforced per run by the runner (see `RunSpec::max_runtime_sec`).
    c.max_runtime = None;
    c
}

/// Resolves a claimed job's pinned inputs into a run spec. The run's elapsed time is the
/// checkpoint's recorded running time when it resumes from one, else `since_start`.
pub async fn build(
    store: &Store,
    job: &Job,
    limits: Limits,
    since_start: Duration,
) -> Result<RunSpec, SpecError> {
    let cap = &job.capability;
    let version = store
        .capability_version(job.organization_id, &cap.name, &cap.version)
        .await?
        .ok_or_else(|| SpecError::Missing(format!("capability {}@{}", cap.name, cap.version)))?;
    let agent = version
        .agents
        .iter()
        .find(|a| a.name == job.agent_name)
        .ok_or_else(|| {
            SpecError::Missing(format!(
                "agent {} of {}@{}",
                job.agent_name, cap.name, cap.version
            ))
        })?;
    let train = all_rows(
        store,
        job.organization_id,
        &job.dataset_ref.name,
        &job.dataset_ref.version,
    )
    .await?;
    let val = match &job.val_dataset_ref {
        Some(v) => all_rows(store, job.organization_id, &v.name, &v.version).await?,
        None => train.clone(),
    };
    let checkpoint = store.checkpoint(job.id, job.attempt).await?;
    // Resuming charges the running time up to the checkpoint, not the wall time since the
    // first start: the wait for a dead worker's lease to expire is nobody's run, and an
    // uninterrupted run would not have spent it.
    let elapsed = checkpoint
        .as_ref()
        .and_then(|c| c.run_time)
        .unwrap_or(since_start);
    let resume = checkpoint.map(|c| c.data);
    let max_runtime_sec = gepard_core::model::max_runtime_sec(&job.config);
    Ok(RunSpec {
        job_id: job.id,
        attempt: job.attempt,
        model: job.model.clone(),
        reflection_model: job
            .config
            .get("reflection_lm")
            .and_then(Value::as_str)
            .unwrap_or(&job.model)
            .to_owned(),
        target: format!("agent {} of {}@{}", agent.name, cap.name, cap.version),
        seed_instructions: agent.instructions.clone(),
        train,
        val,
        recipe: job.reward_recipe.name.clone(),
        recipe_params: job.reward_recipe.params.clone(),
        input_mapping: job.config.get("dataset_input_mapping").cloned(),
        max_output_tokens: job
            .config
            .get("max_output_tokens")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok()),
        engine: engine_config(&job.config),
        max_runtime_sec,
        elapsed_sec: elapsed.as_secs(),
        resume,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_stored_frontier_type_reaches_the_engine_and_defaults_to_instance() {
        assert_eq!(
            engine_config(&json!({})).frontier_type,
            FrontierType::Instance
        );
        for t in FrontierType::ALL {
            let c = engine_config(&json!({ "frontier_type": t.as_str() }));
            assert_eq!(c.frontier_type, t);
        }
    }
}
