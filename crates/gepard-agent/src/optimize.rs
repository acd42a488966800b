//! The glue between the GEPA engine and a capability agent: an [`Evaluator`] that runs one
//! [`rollout`] and scores it with a [`Recipe`], a [`TextModel`] over any [`ChatModel`] for the
//! reflection step, and [`optimize`], which runs a whole optimization and reports the engine's
//! [`RunResult`] with the model usage it cost.
//!
//! Nothing here knows about a CLI, a job record or a store: `gepard optimize local` and the job
//! worker both call [`optimize`] (and [`evaluate_rows`] for scores outside the budget).
//!
//! Failure policy (the reason this module exists rather than a closure in the CLI):
//! - a model error on one example scores that example 0 with the error as its feedback, and the
//!   run goes on (rate limits, timeouts, 5xx after retries, malformed answers);
//! - an error that no other example could escape ([`LlmError::is_fatal_for_run`]: bad key,
//!   unknown model, unreachable server) aborts the run at once with that message. Once one
//!   evaluation has seen such an error, every later evaluation of the run fails the same way
//!   without calling the model, so a broken setup costs a handful of calls, not the budget;
//! - so does a run of [`FAILURES_IN_A_ROW`] failed calls of the target model with nothing in
//!   between (every call answering 5xx, 429, garbage or nothing, or refusing every request): the
//!   error of any one call may be about its example, but that many in a row say the model cannot
//!   be used, and scoring them all 0 would burn the budget on a run that reports a result;
//! - likewise [`REFLECTIONS_FAILED_IN_A_ROW`] reflection calls in a row that fail: no proposal
//!   can come out of such a run.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use futures::StreamExt;
use gepard_gepa::{
    CancelToken, Checkpoint, Config, Engine, EngineError, Evaluation, Evaluator, Event, EventSink,
    FatalError, LlmReflector, ModelError, ReflectiveRecord, RunResult, Split, StopReason,
    TextModel,
};
use gepard_llm::{
    ChatModel, ChatRequest, CountingModel, FinishReason, LlmError, Message, ModelRegistry,
    UsageCounter, UsageSnapshot,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recipe::Recipe;
use crate::rollout::{rollout, RolloutOptions};

/// The models of one run: the target model the agent runs on, and the reflection model that
/// proposes new instructions (the target model unless told otherwise). Each role counts its own
/// calls and tokens; models resolved from a [`ModelRegistry`] also keep counting into the
/// registry's [`UsageCounter`].
#[derive(Clone)]
pub struct RunModels {
    task: Arc<dyn ChatModel>,
    reflection: Arc<dyn ChatModel>,
    task_usage: Arc<UsageCounter>,
    reflection_usage: Arc<UsageCounter>,
}

impl std::fmt::Debug for RunModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunModels")
            .field("task", &self.task.id())
            .field("reflection", &self.reflection.id())
            .field("usage", &self.usage())
            .finish()
    }
}

impl RunModels {
    /// The target model `task` and the reflection model (`None`: the target model).
    pub fn new(task: Arc<dyn ChatModel>, reflection: Option<Arc<dyn ChatModel>>) -> Self {
        let reflection = reflection.unwrap_or_else(|| Arc::clone(&task));
        let task_usage = Arc::new(UsageCounter::new());
        let reflection_usage = Arc::new(UsageCounter::new());
        Self {
            task: Arc::new(CountingModel::new(task, Arc::clone(&task_usage))),
            reflection: Arc::new(CountingModel::new(
                reflection,
                Arc::clone(&reflection_usage),
            )),
            task_usage,
            reflection_usage,
        }
    }

    /// Resolves the model ids through `registry` (the reflection model defaults to the target
    /// model). Errors name the id at fault: malformed, unknown provider, misconfigured provider.
    pub fn resolve(
        registry: &ModelRegistry,
        task_id: &str,
        reflection_id: Option<&str>,
    ) -> Result<Self, LlmError> {
        let task = registry.resolve(task_id)?;
        let reflection = match reflection_id {
            Some(id) if id != task_id => Some(registry.resolve(id)?),
            _ => None,
        };
        Ok(Self::new(task, reflection))
    }

    /// The target model (counting into this run's task usage).
    pub fn task(&self) -> &Arc<dyn ChatModel> {
        &self.task
    }

    /// The reflection model (counting into this run's reflection usage).
    pub fn reflection(&self) -> &Arc<dyn ChatModel> {
        &self.reflection
    }

    /// Calls and tokens spent through these models so far.
    pub fn usage(&self) -> RunUsage {
        RunUsage {
            task: self.task_usage.snapshot(),
            reflection: self.reflection_usage.snapshot(),
        }
    }
}

/// Model usage of a run, by role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUsage {
    /// The target model: rollouts (metric calls, and evaluations outside the budget).
    pub task: UsageSnapshot,
    /// The reflection model.
    pub reflection: UsageSnapshot,
}

impl RunUsage {
    /// Both roles added up.
    pub fn total(&self) -> UsageSnapshot {
        UsageSnapshot {
            model_calls: self.task.model_calls + self.reflection.model_calls,
            failed_calls: self.task.failed_calls + self.reflection.failed_calls,
            input_tokens: self.task.input_tokens + self.reflection.input_tokens,
            output_tokens: self.task.output_tokens + self.reflection.output_tokens,
        }
    }
}

/// How many calls of the target model in a row may fail before the run fails with the last
/// one's error. Each has already been retried by its provider. A request refused as invalid
/// (HTTP 400) counts only until a first call of the run has succeeded: until then it says the
/// request itself is wrong (a parameter the model does not take); afterwards it is about its
/// row (over the context length, filtered), and rows like that may well sit side by side.
pub const FAILURES_IN_A_ROW: u32 = 10;

/// How many reflection calls in a row may fail before the run fails: each iteration spends
/// metric calls on its parent before it reflects, so a reflection model that cannot answer
/// burns the budget without a single proposal.
pub const REFLECTIONS_FAILED_IN_A_ROW: u32 = 5;

/// Counts failures in a row and says when there have been too many. Concurrent calls finish in
/// any order; a failing run fails, so which call tips it over does not matter, and a run that
/// never fails that often is not affected by the order at all.
#[derive(Debug)]
struct FailureStreak {
    limit: u32,
    streak: AtomicU32,
}

impl FailureStreak {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            streak: AtomicU32::new(0),
        }
    }

    fn succeeded(&self) {
        self.streak.store(0, Ordering::SeqCst);
    }

    /// Records a failure; true when it makes `limit` in a row (the caller names its own error
    /// as the last one).
    fn failed(&self) -> bool {
        self.streak.fetch_add(1, Ordering::SeqCst) + 1 >= self.limit
    }
}

/// The engine's [`Evaluator`] over dataset rows: one [`rollout`] of the candidate instructions on
/// the row, scored by the recipe. Example `i` of a split is row `i` of that split's rows.
pub struct RolloutEvaluator<'a> {
    model: &'a dyn ChatModel,
    train: &'a [Value],
    val: &'a [Value],
    recipe: &'a Recipe,
    options: &'a RolloutOptions,
    /// The first run-fatal error seen; later evaluations fail with it without a model call.
    fatal: OnceLock<String>,
    /// Failed model calls in a row (see [`FAILURES_IN_A_ROW`]).
    failures: FailureStreak,
    /// Whether a call of this run has succeeded yet.
    any_success: AtomicBool,
}

impl<'a> RolloutEvaluator<'a> {
    /// An evaluator of `model` over the `train` and `val` rows.
    pub fn new(
        model: &'a dyn ChatModel,
        train: &'a [Value],
        val: &'a [Value],
        recipe: &'a Recipe,
        options: &'a RolloutOptions,
    ) -> Self {
        Self {
            model,
            train,
            val,
            recipe,
            options,
            fatal: OnceLock::new(),
            failures: FailureStreak::new(FAILURES_IN_A_ROW),
            any_success: AtomicBool::new(false),
        }
    }

    /// The run-fatal error met so far, if any.
    pub fn fatal_error(&self) -> Option<&str> {
        self.fatal.get().map(String::as_str)
    }
}

#[async_trait]
impl Evaluator for RolloutEvaluator<'_> {
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        split: Split,
        capture_traces: bool,
    ) -> Result<Evaluation, FatalError> {
        if let Some(message) = self.fatal.get() {
            return Err(FatalError(message.clone()));
        }
        let rows = match split {
            Split::Train => self.train,
            Split::Val => self.val,
        };
        let row = rows.get(example).ok_or_else(|| {
            FatalError(format!(
                "{split:?} example {example} does not exist ({} rows)",
                rows.len()
            ))
        })?;
        let scored = score_row(self.model, candidate, row, self.recipe, self.options)
            .await
            .map_err(|e| {
                let message = self.fatal.get_or_init(|| e.to_string());
                FatalError(message.clone())
            })?;
        match &scored.model_error {
            None => {
                self.any_success.store(true, Ordering::SeqCst);
                self.failures.succeeded();
            }
            // A row the model refused, in a run where the model has answered before.
            Some(_) if scored.refused_as_invalid && self.any_success.load(Ordering::SeqCst) => {}
            Some(last) => {
                if self.failures.failed() {
                    let message = self.fatal.get_or_init(|| {
                        format!(
                            "the last {FAILURES_IN_A_ROW} calls of the target model all failed; the last one: {last}"
                        )
                    });
                    return Err(FatalError(message.clone()));
                }
            }
        }
        Ok(Evaluation {
            score: scored.score,
            reflective: capture_traces.then_some(scored.record),
        })
    }
}

/// One row's score with its reflective record.
struct RowScore {
    score: f64,
    record: ReflectiveRecord,
    /// The model call's error, when it failed (not when the row could not be read).
    model_error: Option<String>,
    /// The model refused the request as invalid (see [`crate::rollout::Outcome::refused_as_invalid`]).
    refused_as_invalid: bool,
}

async fn score_row(
    model: &dyn ChatModel,
    instructions: &str,
    row: &Value,
    recipe: &Recipe,
    options: &RolloutOptions,
) -> Result<RowScore, LlmError> {
    let outcome = rollout(model, instructions, row, options).await?;
    let scored = recipe.score(row, &outcome);
    // The input as the agent saw it (the goal verbatim); a row the mapping cannot read is shown
    // whole, so the reflection still sees what went wrong.
    let inputs = options
        .input_mapping
        .user_message(row)
        .unwrap_or_else(|_| row.to_string());
    Ok(RowScore {
        score: scored.score,
        model_error: outcome
            .model_failed()
            .then(|| outcome.error.clone())
            .flatten(),
        refused_as_invalid: outcome.refused_as_invalid,
        record: ReflectiveRecord {
            inputs,
            generated_outputs: outcome.rendered(),
            feedback: scored.feedback,
        },
    })
}

/// The reflection model as the engine's [`TextModel`]: the prompt goes out as one user message,
/// the answer's text comes back (an empty answer is returned as `""`, which the reflector then
/// rejects as unfenced). Run-fatal model errors become [`ModelError::Fatal`], others
/// [`ModelError::Failed`] (the iteration ends without a child and the run goes on). An answer
/// cut off at the output token limit is [`ModelError::Failed`] too: its text may look whole
/// (fences included) and still have lost its end, so it is never adopted.
/// [`REFLECTIONS_FAILED_IN_A_ROW`] failed calls in a row are fatal.
pub struct ChatTextModel {
    model: Arc<dyn ChatModel>,
    /// Sampling temperature of reflection calls (provider default when `None`).
    pub temperature: Option<f32>,
    /// Output token limit of reflection calls (provider default when `None`).
    pub max_tokens: Option<u32>,
    failures: FailureStreak,
}

impl ChatTextModel {
    /// Wraps `model` with provider-default sampling.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        Self {
            model,
            temperature: None,
            max_tokens: None,
            failures: FailureStreak::new(REFLECTIONS_FAILED_IN_A_ROW),
        }
    }

    fn failed(&self, error: String) -> ModelError {
        if self.failures.failed() {
            ModelError::Fatal(format!(
                "the last {REFLECTIONS_FAILED_IN_A_ROW} reflection calls all failed; the last one: {error}"
            ))
        } else {
            ModelError::Failed(error)
        }
    }
}

#[async_trait]
impl TextModel for ChatTextModel {
    async fn complete(&self, prompt: &str) -> Result<String, ModelError> {
        let request = ChatRequest {
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            ..ChatRequest::new(vec![Message::user(prompt)])
        };
        match self.model.chat(&request).await {
            // Rejected like an unfenced answer, and not counted as a failed call: a chatty
            // model that closed its fence and rambled on until the limit is not broken.
            Ok(response) if response.finish_reason == Some(FinishReason::Length) => {
                Err(ModelError::Failed(
                    "the reflection model's answer was cut off at its output token limit, so the \
                     proposal may have lost its end and is not used"
                        .to_owned(),
                ))
            }
            Ok(response) => {
                self.failures.succeeded();
                Ok(response.content.unwrap_or_default())
            }
            Err(e) if e.is_fatal_for_run() => Err(ModelError::Fatal(e.to_string())),
            Err(e) => Err(self.failed(e.to_string())),
        }
    }
}

/// Everything a run optimizes over, apart from the models.
#[derive(Debug, Clone)]
pub struct OptimizeSpec {
    /// The agent's current instructions: the seed candidate.
    pub seed_instructions: String,
    /// Training rows (reflection minibatches).
    pub train: Vec<Value>,
    /// Validation rows (Pareto fronts and the best candidate). Pass the training rows again when
    /// there is no separate validation set.
    pub val: Vec<Value>,
    /// How a rollout is scored.
    pub recipe: Recipe,
    /// Input mapping and sampling of the rollouts.
    pub rollout: RolloutOptions,
    /// The engine's configuration (limits, seed, concurrency, minibatch…).
    pub config: Config,
}

/// A finished run: what the engine found and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizeOutcome {
    /// The engine's result (best candidate, scores, counts, curve, stop reason).
    pub result: RunResult,
    /// Model calls and tokens of this run, by role.
    pub usage: RunUsage,
}

/// A run that could not finish, with what it cost until then.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct OptimizeError {
    /// Why it stopped (a configuration that cannot run, a run-fatal model error…).
    pub error: EngineError,
    /// Model calls and tokens spent before it stopped.
    pub usage: RunUsage,
    /// What the run had found at its last checkpoint (stop reason [`StopReason::Failed`]), when
    /// it failed after the seed was evaluated: a key revoked half-way through does not throw
    /// away the candidates already paid for.
    pub best_so_far: Option<Box<RunResult>>,
}

/// A sink that passes every event on and keeps the last checkpoint (or the one resumed from).
struct KeepLastCheckpoint<'a> {
    inner: &'a dyn EventSink,
    last: Mutex<Option<Checkpoint>>,
}

impl EventSink for KeepLastCheckpoint<'_> {
    fn emit(&self, event: &Event) {
        if let Event::Checkpoint { checkpoint, .. } = event {
            *self.last.lock().expect("not poisoned") = Some((**checkpoint).clone());
        }
        self.inner.emit(event);
    }
}

/// Runs a whole GEPA optimization of `spec.seed_instructions` with `models`, emitting the
/// engine's events to `sink` until a limit is reached or `cancel` fires. With `resume` it
/// continues from a checkpoint the engine emitted earlier (same rows, seed and minibatch size).
///
/// Usage in the result counts only the calls made through `models` while this run was going on
/// (plus anything spent through them before: share one [`RunModels`] per run).
pub async fn optimize(
    spec: &OptimizeSpec,
    models: &RunModels,
    sink: &dyn EventSink,
    cancel: &CancelToken,
    resume: Option<Checkpoint>,
) -> Result<OptimizeOutcome, OptimizeError> {
    let fail = |error: EngineError| OptimizeError {
        error,
        usage: models.usage(),
        best_so_far: None,
    };
    let engine = Engine::new(
        spec.config.clone(),
        spec.seed_instructions.clone(),
        spec.train.len(),
        spec.val.len(),
    )
    .map_err(|e| fail(e.into()))?;
    let evaluator = RolloutEvaluator::new(
        models.task().as_ref(),
        &spec.train,
        &spec.val,
        &spec.recipe,
        &spec.rollout,
    );
    let proposer = LlmReflector::new(ChatTextModel::new(Arc::clone(models.reflection())));
    let sink = KeepLastCheckpoint {
        inner: sink,
        last: Mutex::new(resume.clone()),
    };
    let result = engine
        .run(&evaluator, &proposer, &sink, cancel, resume)
        .await
        .map_err(|error| {
            // A checkpoint the engine refused to resume from is no result to report.
            let last = match error {
                EngineError::Checkpoint(_) => None,
                _ => sink.last.lock().expect("not poisoned").take(),
            };
            let best_so_far = last.map(|checkpoint| {
                let reason = StopReason::Failed {
                    error: error.to_string(),
                };
                Box::new(engine.result_at(&checkpoint, reason))
            });
            OptimizeError {
                best_so_far,
                ..fail(error)
            }
        })?;
    Ok(OptimizeOutcome {
        result,
        usage: models.usage(),
    })
}

/// Scores of fixed instructions on a row set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowsScore {
    /// Mean score (0 for no rows).
    pub mean: f64,
    /// Score of each row, in row order.
    pub scores: Vec<f64>,
}

/// Evaluates `instructions` on every row with at most `concurrency` rollouts in flight (outside
/// any GEPA budget; e.g. test-set scores of the seed and the best candidate). Per-row model
/// failures score 0; a run-fatal error is returned at once.
pub async fn evaluate_rows(
    model: &dyn ChatModel,
    instructions: &str,
    rows: &[Value],
    recipe: &Recipe,
    options: &RolloutOptions,
    concurrency: usize,
) -> Result<RowsScore, LlmError> {
    let mut stream = futures::stream::iter(
        rows.iter()
            .map(|row| score_row(model, instructions, row, recipe, options)),
    )
    .buffered(concurrency.max(1));
    let mut scores = Vec::with_capacity(rows.len());
    while let Some(scored) = stream.next().await {
        scores.push(scored?.score);
    }
    let mean = if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f64>() / scores.len() as f64
    };
    Ok(RowsScore { mean, scores })
}
