//! The optimization loop, its state (the checkpoint) and its result.

use std::collections::BTreeSet;
use std::fmt;

use futures::StreamExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{CandidateSelection, Config, ConfigError};
use crate::events::{Event, EventSink, SkipReason};
use crate::pareto::{best_index, select_epsilon_greedy, select_pareto, Fronts};
use crate::reflect::trim_examples;
use crate::sampler::EpochSampler;
use crate::traits::{Evaluation, Evaluator, ProposeError, Proposer, Split};

/// Cancels a run from outside. Checked before every evaluation and raced against every
/// evaluation and reflection call in flight, so a cancel takes effect at once; in-flight calls
/// are dropped.
pub type CancelToken = CancellationToken;

/// Version of the checkpoint layout; bumped when a field changes meaning.
const CHECKPOINT_FORMAT: u32 = 1;

/// One candidate text with its validation record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Position in the run's candidate list (the seed is 0).
    pub index: usize,
    /// The candidates it was derived from (empty for the seed).
    pub parents: Vec<usize>,
    /// The text itself.
    pub text: String,
    /// Mean of `val_scores`.
    pub val_score: f64,
    /// Score on each validation example, by index.
    pub val_scores: Vec<f64>,
    /// Metric calls spent in the run when its validation pass finished.
    pub discovered_at_metric_calls: u64,
    /// The iteration that produced it (0 for the seed).
    pub iteration: u64,
}

/// Tallies of what the iterations did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Children that beat their parent on the minibatch.
    pub accepted: u64,
    /// Children that did not.
    pub rejected: u64,
    /// Iterations that ended before reflection (perfect minibatch, or no reflective data).
    pub skipped: u64,
    /// Reflection calls whose answer was not usable (never adopted).
    pub proposals_rejected: u64,
    /// Calls to the proposer.
    pub reflection_calls: u64,
}

/// The complete state of a run after the seed pass or an iteration. Serialize it anywhere (see
/// [`Checkpoint::to_json`]); [`Engine::run`] with it continues exactly as the uninterrupted run
/// would have, RNG and minibatch position included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Layout version.
    pub format: u32,
    /// Training-set size the run was started with.
    pub train_size: usize,
    /// Validation-set size the run was started with.
    pub val_size: usize,
    /// Completed iterations.
    pub iterations: u64,
    /// Every candidate so far; the seed first.
    pub candidates: Vec<Candidate>,
    /// The per-example fronts over `candidates`.
    pub fronts: Fronts,
    /// Index of the best candidate.
    pub best: usize,
    /// Metric calls spent so far.
    pub metric_calls: u64,
    /// Tallies.
    pub counts: Counts,
    /// Iterations since the best validation mean last went up.
    pub trials_without_improvement: u64,
    /// `(metric calls, best validation mean)`: the seed, then each time the best improved.
    pub curve: Vec<(u64, f64)>,
    /// The run's only source of randomness, mid-stream.
    rng: ChaCha8Rng,
    /// The minibatch order and position.
    sampler: EpochSampler,
}

impl Checkpoint {
    /// JSON that restores every number exactly (the crate enables serde_json's exact float
    /// round trip, which a resumed run relies on).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a checkpoint always serializes")
    }

    /// Parses what [`Checkpoint::to_json`] wrote.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn means(&self) -> Vec<f64> {
        self.candidates.iter().map(|c| c.val_score).collect()
    }
}

/// Why a run stopped. Every reason but [`StopReason::Cancelled`] comes from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// The next iteration might have needed more metric calls than are left, so it was not
    /// started (the budget is never overshot).
    MaxMetricCalls {
        /// Metric calls spent.
        used: u64,
        /// The configured limit.
        limit: u64,
        /// What one iteration may need at worst.
        iteration_needs: u64,
    },
    /// `max_trials` iterations ran.
    MaxTrials {
        /// Iterations run.
        trials: u64,
    },
    /// `max_trials_without_improvement` iterations in a row did not improve the best.
    MaxTrialsWithoutImprovement {
        /// Iterations without improvement.
        trials: u64,
    },
    /// `max_runtime` elapsed; an iteration in flight was abandoned.
    MaxRuntime,
    /// The cancel token fired; an iteration in flight was abandoned.
    Cancelled,
    /// The run failed with this error. [`Engine::run`] returns the error itself; a caller that
    /// still wants what was found before it builds the result with [`Engine::result_at`].
    Failed {
        /// The error, as text.
        error: String,
    },
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxMetricCalls {
                used,
                limit,
                iteration_needs,
            } => write!(
                f,
                "stopped with {left} of {limit} metric calls left: an iteration may need {iteration_needs}",
                left = limit.saturating_sub(*used),
            ),
            Self::MaxTrials { trials } => write!(f, "reached max_trials ({trials})"),
            Self::MaxTrialsWithoutImprovement { trials } => {
                write!(f, "no improvement in {trials} iterations")
            }
            Self::MaxRuntime => f.write_str("reached max_runtime"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

/// A candidate as reported in the [`RunResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateSummary {
    /// Position in the run's candidate list (the seed is 0).
    pub index: usize,
    /// The candidates it was derived from.
    pub parents: Vec<usize>,
    /// The text.
    pub text: String,
    /// Validation mean.
    pub val_score: f64,
    /// Per-example validation scores.
    pub val_scores: Vec<f64>,
    /// Whether it is on at least one per-example front.
    pub on_frontier: bool,
    /// Metric calls spent when its validation pass finished.
    pub discovered_at_metric_calls: u64,
    /// The iteration that produced it (0 for the seed).
    pub iteration: u64,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Index of the best candidate (highest validation mean, lower index on ties).
    pub best_candidate: usize,
    /// Its text.
    pub best_text: String,
    /// Its validation mean.
    pub best_score: f64,
    /// The seed's validation mean.
    pub seed_score: f64,
    /// Every candidate, the seed first.
    pub candidates: Vec<CandidateSummary>,
    /// Metric calls spent, including any of an abandoned iteration.
    pub metric_calls_used: u64,
    /// Completed iterations.
    pub iterations: u64,
    /// Tallies.
    pub counts: Counts,
    /// Why the run stopped.
    pub stop_reason: StopReason,
    /// `(metric calls, best validation mean)`: the seed, then each time the best improved.
    pub curve: Vec<(u64, f64)>,
    /// Distinct candidates on the frontier.
    pub frontier_size: usize,
    /// Mean over validation examples of the best score on each.
    pub frontier_best_score: f64,
}

/// Why a run could not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The configuration cannot run.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The evaluator reported an unrecoverable failure.
    #[error("evaluation failed fatally: {0}")]
    Evaluator(String),
    /// The proposer reported an unrecoverable failure.
    #[error("reflection failed fatally: {0}")]
    Proposer(String),
    /// The evaluator returned a score that cannot be ranked.
    #[error("evaluator returned a non-finite score ({score}) for {split:?} example {example}")]
    InvalidScore {
        /// The split.
        split: Split,
        /// The example index.
        example: usize,
        /// The score as returned.
        score: f64,
    },
    /// The checkpoint does not belong to this run setup.
    #[error("checkpoint does not fit this run: {0}")]
    Checkpoint(String),
    /// The run was stopped before the seed's validation pass finished: there is no result yet.
    #[error("stopped before the seed was evaluated: {0}")]
    StoppedBeforeSeed(StopReason),
}

/// How a batch or an iteration ended early.
enum Halt {
    /// Stopped from outside. From a batch, `calls` counts its completed evaluations; from an
    /// iteration, the run's total metric calls including them.
    Stop {
        reason: StopReason,
        calls: u64,
    },
    Fatal(EngineError),
}

/// The GEPA engine for one text component. Cheap to build; [`Engine::run`] does the work.
#[derive(Debug, Clone)]
pub struct Engine {
    config: Config,
    seed_candidate: String,
    train_size: usize,
    val_size: usize,
}

/// Everything a run borrows from its caller.
struct Ctx<'a> {
    evaluator: &'a dyn Evaluator,
    proposer: &'a dyn Proposer,
    sink: &'a dyn EventSink,
    cancel: &'a CancelToken,
    deadline: Option<Instant>,
}

impl Engine {
    /// An engine for `seed_candidate` over training and validation sets of the given sizes
    /// (examples are known only by index). Fails on a configuration that cannot run.
    pub fn new(
        config: Config,
        seed_candidate: impl Into<String>,
        train_size: usize,
        val_size: usize,
    ) -> Result<Self, ConfigError> {
        config.validate(train_size, val_size)?;
        Ok(Self {
            config,
            seed_candidate: seed_candidate.into(),
            train_size,
            val_size,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs the optimization until a limit is reached or `cancel` fires, starting from the seed
    /// or from `resume`. Emits [`Event`]s to `sink`, including a [`Event::Checkpoint`] after the
    /// seed pass and after every iteration.
    ///
    /// Limits may differ from the run that wrote the checkpoint (e.g. a larger budget); the
    /// data-set sizes, the seed text and the minibatch size may not.
    pub async fn run(
        &self,
        evaluator: &dyn Evaluator,
        proposer: &dyn Proposer,
        sink: &dyn EventSink,
        cancel: &CancelToken,
        resume: Option<Checkpoint>,
    ) -> Result<RunResult, EngineError> {
        let ctx = Ctx {
            evaluator,
            proposer,
            sink,
            cancel,
            deadline: self.config.max_runtime.map(|d| Instant::now() + d),
        };
        let outcome = self.run_inner(&ctx, resume).await;
        match &outcome {
            Ok(result) => sink.emit(&Event::Finished {
                stop_reason: result.stop_reason.clone(),
                best_candidate: result.best_candidate,
                best_score: result.best_score,
                metric_calls_used: result.metric_calls_used,
            }),
            Err(e) => sink.emit(&Event::Error {
                message: e.to_string(),
            }),
        }
        outcome
    }

    async fn run_inner(
        &self,
        ctx: &Ctx<'_>,
        resume: Option<Checkpoint>,
    ) -> Result<RunResult, EngineError> {
        let mut state = match resume {
            Some(checkpoint) => self.check_resumable(checkpoint)?,
            None => match self.evaluate_seed(ctx).await {
                Ok(state) => state,
                Err(Halt::Stop { reason, .. }) => {
                    return Err(EngineError::StoppedBeforeSeed(reason))
                }
                Err(Halt::Fatal(e)) => return Err(e),
            },
        };
        let stop_reason = loop {
            if let Some(reason) = self.should_stop(&state, ctx) {
                break reason;
            }
            // The iteration works on a copy: if it is abandoned midway, the state stays the last
            // checkpoint (only the metric calls really spent are carried over).
            let mut next = state.clone();
            match self.iterate(ctx, &mut next).await {
                Ok(()) => {
                    state = next;
                    self.emit_checkpoint(ctx, &state);
                }
                Err(Halt::Stop { reason, calls }) => {
                    // Evaluations finished before the stop were paid for; say so, so that a
                    // watcher's last `metric_calls_used` agrees with the run's usage.
                    if calls != state.metric_calls {
                        state.metric_calls = calls;
                        self.emit_budget(ctx, &state);
                    }
                    break reason;
                }
                Err(Halt::Fatal(e)) => return Err(e),
            }
        };
        Ok(self.result(&state, stop_reason))
    }

    fn check_resumable(&self, cp: Checkpoint) -> Result<Checkpoint, EngineError> {
        let bad = |m: String| Err(EngineError::Checkpoint(m));
        if cp.format != CHECKPOINT_FORMAT {
            return bad(format!(
                "format {} (this engine reads {CHECKPOINT_FORMAT})",
                cp.format
            ));
        }
        if cp.train_size != self.train_size || cp.val_size != self.val_size {
            return bad(format!(
                "written for {} train / {} val examples, this run has {} / {}",
                cp.train_size, cp.val_size, self.train_size, self.val_size
            ));
        }
        if cp.sampler.minibatch_size() != self.config.minibatch_size
            || cp.sampler.train_size() != self.train_size
        {
            return bad(format!(
                "written with minibatch size {}, this run uses {}",
                cp.sampler.minibatch_size(),
                self.config.minibatch_size
            ));
        }
        match cp.candidates.first() {
            Some(seed) if seed.text == self.seed_candidate => {}
            _ => return bad("its seed candidate differs from this run's".into()),
        }
        if cp.fronts.0.len() != self.val_size
            || cp.best >= cp.candidates.len()
            || cp
                .candidates
                .iter()
                .enumerate()
                .any(|(i, c)| c.index != i || c.val_scores.len() != self.val_size)
        {
            return bad("its candidates or fronts are inconsistent".into());
        }
        Ok(cp)
    }

    fn remaining(&self, used: u64) -> Option<u64> {
        self.config
            .max_metric_calls
            .map(|max| max.saturating_sub(used))
    }

    fn should_stop(&self, state: &Checkpoint, ctx: &Ctx<'_>) -> Option<StopReason> {
        if ctx.cancel.is_cancelled() {
            return Some(StopReason::Cancelled);
        }
        if let Some(max) = self.config.max_trials {
            if state.iterations >= max {
                return Some(StopReason::MaxTrials {
                    trials: state.iterations,
                });
            }
        }
        if let Some(max) = self.config.max_trials_without_improvement {
            if state.trials_without_improvement >= max {
                return Some(StopReason::MaxTrialsWithoutImprovement {
                    trials: state.trials_without_improvement,
                });
            }
        }
        if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
            return Some(StopReason::MaxRuntime);
        }
        if let Some(limit) = self.config.max_metric_calls {
            let needs = self.config.worst_case_iteration_calls(self.val_size);
            if limit.saturating_sub(state.metric_calls) < needs {
                return Some(StopReason::MaxMetricCalls {
                    used: state.metric_calls,
                    limit,
                    iteration_needs: needs,
                });
            }
        }
        None
    }

    /// Evaluates `candidate` on `ids` with at most `concurrency` calls in flight, results in
    /// input order. Stops at once when the run is cancelled or out of time.
    async fn evaluate_batch(
        &self,
        ctx: &Ctx<'_>,
        candidate: &str,
        ids: &[usize],
        split: Split,
        capture_traces: bool,
    ) -> Result<Vec<Evaluation>, Halt> {
        let mut stream = futures::stream::iter(
            ids.iter()
                .map(|&id| ctx.evaluator.evaluate(candidate, id, split, capture_traces)),
        )
        .buffered(self.config.concurrency);
        let mut out = Vec::with_capacity(ids.len());
        loop {
            let next = tokio::select! {
                biased;
                reason = stopped(ctx) => {
                    return Err(Halt::Stop { reason, calls: out.len() as u64 });
                }
                next = stream.next() => next,
            };
            match next {
                None => return Ok(out),
                Some(Ok(evaluation)) => {
                    if !evaluation.score.is_finite() {
                        return Err(Halt::Fatal(EngineError::InvalidScore {
                            split,
                            example: ids[out.len()],
                            score: evaluation.score,
                        }));
                    }
                    out.push(evaluation);
                }
                Some(Err(fatal)) => return Err(Halt::Fatal(EngineError::Evaluator(fatal.0))),
            }
        }
    }

    async fn evaluate_seed(&self, ctx: &Ctx<'_>) -> Result<Checkpoint, Halt> {
        let ids: Vec<usize> = (0..self.val_size).collect();
        let evals = self
            .evaluate_batch(ctx, &self.seed_candidate, &ids, Split::Val, false)
            .await?;
        let scores: Vec<f64> = evals.iter().map(|e| e.score).collect();
        let mean = mean(&scores);
        let calls = self.val_size as u64;
        let state = Checkpoint {
            format: CHECKPOINT_FORMAT,
            train_size: self.train_size,
            val_size: self.val_size,
            iterations: 0,
            fronts: Fronts::from_seed(&scores),
            candidates: vec![Candidate {
                index: 0,
                parents: Vec::new(),
                text: self.seed_candidate.clone(),
                val_score: mean,
                val_scores: scores.clone(),
                discovered_at_metric_calls: calls,
                iteration: 0,
            }],
            best: 0,
            metric_calls: calls,
            counts: Counts::default(),
            trials_without_improvement: 0,
            curve: vec![(calls, mean)],
            rng: ChaCha8Rng::seed_from_u64(self.config.seed),
            sampler: EpochSampler::new(self.train_size, self.config.minibatch_size),
        };
        // The budget first: the calls were spent before the score is known, so a watcher
        // never sees a score with a count that leaves out the calls that produced it.
        self.emit_budget(ctx, &state);
        ctx.sink.emit(&Event::ValsetEvaluated {
            iteration: 0,
            candidate: 0,
            val_score: mean,
            val_scores: scores,
            best_candidate: 0,
            best_score: mean,
            new_best: true,
        });
        self.emit_front(ctx, &state, 0);
        self.emit_checkpoint(ctx, &state);
        Ok(state)
    }

    fn select_parent(&self, state: &mut Checkpoint) -> usize {
        let means = state.means();
        match self.config.candidate_selection {
            CandidateSelection::Pareto => {
                let fronts = state.fronts.view(self.config.frontier_type, &means);
                select_pareto(&fronts, &means, &mut state.rng)
            }
            CandidateSelection::CurrentBest => best_index(&means),
            CandidateSelection::EpsilonGreedy { epsilon } => {
                select_epsilon_greedy(&means, epsilon, &mut state.rng)
            }
        }
    }

    /// One GEPA iteration on `s` (a scratch copy of the state).
    async fn iterate(&self, ctx: &Ctx<'_>, s: &mut Checkpoint) -> Result<(), Halt> {
        let iteration = s.iterations + 1;
        // Same order of draws as the reference: the parent first, then the minibatch.
        let parent = self.select_parent(s);
        let minibatch = s.sampler.minibatch(iteration - 1, &mut s.rng);
        let parent_text = s.candidates[parent].text.clone();
        ctx.sink.emit(&Event::IterationStarted {
            iteration,
            parent,
            parent_val_score: s.candidates[parent].val_score,
            minibatch: minibatch.clone(),
        });

        let traced = self
            .evaluate_batch(ctx, &parent_text, &minibatch, Split::Train, true)
            .await
            .map_err(|h| with_total(h, s.metric_calls))?;
        s.metric_calls += minibatch.len() as u64;
        self.emit_budget(ctx, s);
        let parent_scores: Vec<f64> = traced.iter().map(|e| e.score).collect();

        let skip = |s: &mut Checkpoint, reason: SkipReason| {
            ctx.sink.emit(&Event::IterationSkipped {
                iteration,
                parent,
                parent_scores: parent_scores.clone(),
                reason,
            });
            s.trials_without_improvement += 1;
            s.iterations = iteration;
        };

        if self.config.skip_perfect_score
            && parent_scores
                .iter()
                .all(|&score| score >= self.config.perfect_score)
        {
            s.counts.skipped += 1;
            skip(s, SkipReason::PerfectScores);
            return Ok(());
        }
        let records: Vec<_> = traced.into_iter().filter_map(|e| e.reflective).collect();
        if records.is_empty() {
            s.counts.skipped += 1;
            skip(s, SkipReason::NoReflectiveData);
            return Ok(());
        }
        let examples = trim_examples(
            &records,
            self.config.max_reflection_examples,
            self.config.max_side_info_chars,
        );

        s.counts.reflection_calls += 1;
        let proposal = tokio::select! {
            biased;
            reason = stopped(ctx) => {
                return Err(Halt::Stop { reason, calls: s.metric_calls });
            }
            proposal = ctx.proposer.propose(&parent_text, &examples) => proposal,
        };
        let child_text = match proposal {
            Ok(p) if p.text.trim().is_empty() => Err("the proposed text is empty".to_owned()),
            Ok(p) if p.text == parent_text => {
                Err("the proposed text is identical to its parent".to_owned())
            }
            Ok(p) => Ok(p.text),
            Err(ProposeError::Fatal(m)) => return Err(Halt::Fatal(EngineError::Proposer(m))),
            Err(e @ (ProposeError::Rejected(_) | ProposeError::Failed(_))) => Err(e.to_string()),
        };
        let child_text = match child_text {
            Ok(text) => text,
            Err(message) => {
                s.counts.proposals_rejected += 1;
                skip(s, SkipReason::ProposalRejected { message });
                return Ok(());
            }
        };

        let child = self
            .evaluate_batch(ctx, &child_text, &minibatch, Split::Train, false)
            .await
            .map_err(|h| with_total(h, s.metric_calls))?;
        s.metric_calls += minibatch.len() as u64;
        self.emit_budget(ctx, s);
        let child_scores: Vec<f64> = child.iter().map(|e| e.score).collect();

        // Strict improvement of the sum, as in the reference: a tie is not progress.
        if child_scores.iter().sum::<f64>() <= parent_scores.iter().sum::<f64>() {
            s.counts.rejected += 1;
            ctx.sink.emit(&Event::CandidateRejected {
                iteration,
                parent,
                parent_scores,
                child_scores,
                text: child_text,
            });
            s.trials_without_improvement += 1;
            s.iterations = iteration;
            return Ok(());
        }

        let val_ids: Vec<usize> = (0..self.val_size).collect();
        let val = self
            .evaluate_batch(ctx, &child_text, &val_ids, Split::Val, false)
            .await
            .map_err(|h| with_total(h, s.metric_calls))?;
        s.metric_calls += self.val_size as u64;
        let val_scores: Vec<f64> = val.iter().map(|e| e.score).collect();
        let val_score = mean(&val_scores);
        let index = s.candidates.len();
        s.counts.accepted += 1;
        ctx.sink.emit(&Event::CandidateAccepted {
            iteration,
            parent,
            parent_scores,
            child_scores,
            candidate: index,
            text: child_text.clone(),
        });
        s.candidates.push(Candidate {
            index,
            parents: vec![parent],
            text: child_text,
            val_score,
            val_scores: val_scores.clone(),
            discovered_at_metric_calls: s.metric_calls,
            iteration,
        });
        s.fronts.add(index, &val_scores);
        let new_best = val_score > s.candidates[s.best].val_score;
        if new_best {
            s.best = index;
            s.curve.push((s.metric_calls, val_score));
            s.trials_without_improvement = 0;
        } else {
            s.trials_without_improvement += 1;
        }
        self.emit_budget(ctx, s);
        ctx.sink.emit(&Event::ValsetEvaluated {
            iteration,
            candidate: index,
            val_score,
            val_scores,
            best_candidate: s.best,
            best_score: s.candidates[s.best].val_score,
            new_best,
        });
        self.emit_front(ctx, s, iteration);
        s.iterations = iteration;
        Ok(())
    }

    /// The Pareto frontier: the candidates that survive domination pruning on the fronts of the
    /// configured [`FrontierType`], which are exactly those Pareto selection can draw. Every
    /// candidate ties on an example nobody solves (or everybody does), so the plain union of
    /// the fronts would hold every candidate ever accepted. Its best score stays the
    /// per-example fronts' aggregate: what the candidates achieve together, example by example.
    fn frontier(&self, s: &Checkpoint) -> BTreeSet<usize> {
        let means = s.means();
        s.fronts
            .view(self.config.frontier_type, &means)
            .undominated_weights(&means)
            .into_iter()
            .map(|(candidate, _)| candidate)
            .collect()
    }

    fn emit_front(&self, ctx: &Ctx<'_>, s: &Checkpoint, iteration: u64) {
        let frontier: Vec<usize> = self.frontier(s).into_iter().collect();
        ctx.sink.emit(&Event::FrontUpdated {
            iteration,
            frontier_size: frontier.len(),
            frontier_best_score: s.fronts.aggregate_score(),
            frontier,
        });
    }

    fn emit_budget(&self, ctx: &Ctx<'_>, s: &Checkpoint) {
        ctx.sink.emit(&Event::BudgetUpdated {
            metric_calls_used: s.metric_calls,
            metric_calls_remaining: self.remaining(s.metric_calls),
        });
    }

    fn emit_checkpoint(&self, ctx: &Ctx<'_>, s: &Checkpoint) {
        ctx.sink.emit(&Event::Checkpoint {
            iteration: s.iterations,
            checkpoint: Box::new(s.clone()),
        });
    }

    /// The result a run reports when it stops at `checkpoint` for `stop_reason`: how a caller
    /// keeps what a run found before it failed (from the last [`Event::Checkpoint`]).
    pub fn result_at(&self, checkpoint: &Checkpoint, stop_reason: StopReason) -> RunResult {
        self.result(checkpoint, stop_reason)
    }

    fn result(&self, s: &Checkpoint, stop_reason: StopReason) -> RunResult {
        let frontier = self.frontier(s);
        let best = &s.candidates[s.best];
        RunResult {
            best_candidate: s.best,
            best_text: best.text.clone(),
            best_score: best.val_score,
            seed_score: s.candidates[0].val_score,
            candidates: s
                .candidates
                .iter()
                .map(|c| CandidateSummary {
                    index: c.index,
                    parents: c.parents.clone(),
                    text: c.text.clone(),
                    val_score: c.val_score,
                    val_scores: c.val_scores.clone(),
                    on_frontier: frontier.contains(&c.index),
                    discovered_at_metric_calls: c.discovered_at_metric_calls,
                    iteration: c.iteration,
                })
                .collect(),
            metric_calls_used: s.metric_calls,
            iterations: s.iterations,
            counts: s.counts,
            stop_reason,
            curve: s.curve.clone(),
            frontier_size: frontier.len(),
            frontier_best_score: s.fronts.aggregate_score(),
        }
    }
}

/// Resolves when the run must stop from outside: cancellation or the runtime deadline.
async fn stopped(ctx: &Ctx<'_>) -> StopReason {
    let deadline = async {
        match ctx.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => StopReason::Cancelled,
        () = deadline => StopReason::MaxRuntime,
    }
}

/// Turns a batch's halt into the iteration's: evaluations that completed before the stop were
/// paid for, so they join the run's total.
fn with_total(halt: Halt, metric_calls_so_far: u64) -> Halt {
    match halt {
        Halt::Stop { reason, calls } => Halt::Stop {
            reason,
            calls: metric_calls_so_far + calls,
        },
        fatal => fatal,
    }
}

fn mean(scores: &[f64]) -> f64 {
    if scores.is_empty() {
        0.0
    } else {
        scores.iter().sum::<f64>() / scores.len() as f64
    }
}
