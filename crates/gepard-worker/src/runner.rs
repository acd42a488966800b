//! `gepard run-job`: the sandboxed child that runs one attempt.
//!
//! It reads a [`RunSpec`] from stdin, applies its resource limits, runs GEPA through
//! `gepard_agent::optimize`, and writes one JSON [`Line`] per event on stdout: progress
//! events exactly as `POST …/progress` takes them, plus checkpoints, candidates and usage for
//! the worker. SIGTERM (a cancel) stops the engine between evaluations; the child then reports
//! its best result so far and exits without a terminal event, and the worker ends the job
//! `cancelled`. The wall-clock limit ends the run with `optimization_error`, keeping the best.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gepard_agent::optimize::{optimize, OptimizeSpec, RunModels};
use gepard_agent::recipe::Recipe;
use gepard_agent::rollout::{InputMapping, RolloutOptions};
use gepard_core::model::JobUsage;
use gepard_core::progress::{LogLevel, MetricPoint, ProgressEvent, ProgressEventType};
use gepard_gepa::{CancelToken, Checkpoint, EngineError, Event, EventSink, StopReason};
use gepard_llm::ModelRegistry;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::spec::RunSpec;

/// One stdout line of a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    /// A progress event, applied like `POST …/progress`.
    Progress {
        /// The event (boxed: it is many times the size of the other lines).
        event: Box<ProgressEvent>,
    },
    /// The engine state after an iteration.
    Checkpoint {
        /// Iterations completed.
        iteration: u64,
        /// Serialized checkpoint.
        checkpoint: String,
    },
    /// A candidate evaluated on the validation set.
    Candidate {
        /// Its record, as `GET …/candidates` serves it.
        candidate: Value,
    },
    /// Consumption so far.
    Usage {
        /// Totals of the attempt.
        usage: JobUsage,
    },
}

/// Writes lines (to stdout in a runner), one `write` + flush per line so the worker never sees
/// half a line.
struct Out(Mutex<Box<dyn Write + Send>>);

impl Out {
    fn line(&self, line: &Line) {
        let mut text = serde_json::to_string(line).unwrap_or_default();
        // serde_json writes U+0000 as `\u0000`; only a line holding that text (rare: a NUL
        // from a model, or those six characters themselves) takes the slower scrubbing path.
        if text.contains("\\u0000") {
            let mut value = serde_json::to_value(line).unwrap_or_default();
            scrub_nul(&mut value);
            text = value.to_string();
        }
        text.push('\n');
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn event(&self, event: ProgressEvent) {
        self.line(&Line::Progress {
            event: Box::new(event),
        });
    }
}

/// Replaces U+0000 with U+FFFD in every string and key. Model answers (and so feedback and
/// candidate texts) may hold it, and PostgreSQL cannot store it in text: one such answer would
/// otherwise make the worker's write of this line fail and the run's evidence go missing.
fn scrub_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', "\u{fffd}"), v))
                    .collect();
            }
            map.values_mut().for_each(scrub_nul);
        }
        _ => {}
    }
}

fn point(value: f64, step: u64) -> Vec<MetricPoint> {
    vec![MetricPoint {
        value,
        step: i64::try_from(step).unwrap_or(i64::MAX),
        timestamp: None,
    }]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The training side of an iteration: the parent's and the child's mean minibatch scores, so
/// `train_*` series sit next to the `val_score` series of the same run.
fn train_points(e: &mut ProgressEvent, parent: &[f64], child: &[f64], iteration: u64) {
    e.metrics
        .insert("train_parent_score".into(), point(mean(parent), iteration));
    e.metrics
        .insert("train_child_score".into(), point(mean(child), iteration));
}

/// Writes the run's usage lines: at every budget update, with the engine's metric calls, and
/// in between at most once per [`USAGE_TICK`] while model calls happen. A validation pass is
/// one batch of 60 or more calls with no budget update inside it; a runner killed in its middle
/// has then still reported nearly every call it paid for, and the job's usage (which a resumed
/// runner adds to) keeps them.
struct UsageReporter {
    out: Arc<Out>,
    /// The runner's model calls and tokens so far (`metric_calls` unset).
    count: Box<dyn Fn() -> JobUsage + Send + Sync>,
    /// The last line written: its `metric_calls` is the engine's count at the last budget
    /// update. Held while writing, so a tick never writes an older count after a newer one.
    sent: Mutex<JobUsage>,
}

/// How often [`UsageReporter::tick`] runs.
const USAGE_TICK: Duration = Duration::from_secs(1);

impl UsageReporter {
    /// A reporter whose lines carry `metric_calls` (the engine's count: the checkpoint's when
    /// resuming) until the first budget update.
    fn new(
        out: Arc<Out>,
        count: Box<dyn Fn() -> JobUsage + Send + Sync>,
        metric_calls: u64,
    ) -> Self {
        Self {
            out,
            count,
            sent: Mutex::new(JobUsage {
                metric_calls: i64::try_from(metric_calls).unwrap_or(i64::MAX),
                ..JobUsage::default()
            }),
        }
    }

    /// Writes the usage with `metric_calls` from the engine (`None`: the last one written).
    fn report(&self, metric_calls: Option<u64>) {
        self.write(metric_calls, true);
    }

    /// Writes the usage if model calls or tokens moved since the last line.
    fn tick(&self) {
        self.write(None, false);
    }

    fn write(&self, metric_calls: Option<u64>, always: bool) {
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut usage = (self.count)();
        usage.metric_calls =
            metric_calls.map_or(sent.metric_calls, |n| i64::try_from(n).unwrap_or(i64::MAX));
        if always || usage != *sent {
            self.out.line(&Line::Usage {
                usage: usage.clone(),
            });
            *sent = usage;
        }
    }
}

/// Maps engine events to progress lines, remembering candidate texts for the summary.
struct Sink {
    out: Arc<Out>,
    texts: Mutex<BTreeMap<usize, String>>,
    usage: Arc<UsageReporter>,
}

impl Sink {
    fn progress(
        &self,
        event_type: ProgressEventType,
        message: String,
        iteration: Option<u64>,
    ) -> ProgressEvent {
        let mut e = ProgressEvent::new(event_type);
        e.message = Some(message);
        e.iteration = iteration.map(|i| i64::try_from(i).unwrap_or(i64::MAX));
        e
    }

    fn text(&self, index: usize) -> Option<String> {
        self.texts.lock().ok()?.get(&index).cloned()
    }
}

impl EventSink for Sink {
    fn emit(&self, event: &Event) {
        use ProgressEventType as T;
        match event {
            Event::IterationStarted {
                iteration,
                parent,
                parent_val_score,
                minibatch,
            } => {
                let mut e = self.progress(
                    T::IterationStart,
                    format!("iteration {iteration}: parent {parent} (val {parent_val_score:.3}), minibatch {minibatch:?}"),
                    Some(*iteration),
                );
                e.level = LogLevel::Debug;
                e.data = json!({"parent": parent, "minibatch": minibatch});
                self.out.event(e);
            }
            Event::IterationSkipped {
                iteration,
                parent,
                parent_scores,
                reason,
            } => {
                let mut e = self.progress(
                    T::CandidateRejected,
                    format!("iteration {iteration}: skipped: {reason}"),
                    Some(*iteration),
                );
                e.metrics.insert(
                    "train_parent_score".into(),
                    point(mean(parent_scores), *iteration),
                );
                e.data = json!({"parent": parent, "parent_scores": parent_scores, "skipped": true});
                self.out.event(e);
            }
            Event::CandidateAccepted {
                iteration,
                parent,
                parent_scores,
                child_scores,
                candidate,
                text,
            } => {
                if let Ok(mut t) = self.texts.lock() {
                    t.insert(*candidate, text.clone());
                }
                let mut e = self.progress(
                    T::CandidateAccepted,
                    format!(
                        "iteration {iteration}: candidate {candidate} accepted (minibatch {:.3} → {:.3})",
                        mean(parent_scores),
                        mean(child_scores)
                    ),
                    Some(*iteration),
                );
                e.metrics.insert(
                    "accepted_score".into(),
                    point(mean(child_scores), *iteration),
                );
                train_points(&mut e, parent_scores, child_scores, *iteration);
                e.data = json!({"parent": parent, "candidate": candidate, "parent_scores": parent_scores, "child_scores": child_scores});
                self.out.event(e);
            }
            Event::CandidateRejected {
                iteration,
                parent,
                parent_scores,
                child_scores,
                ..
            } => {
                let mut e = self.progress(
                    T::CandidateRejected,
                    format!(
                        "iteration {iteration}: child rejected (minibatch {:.3} → {:.3})",
                        mean(parent_scores),
                        mean(child_scores)
                    ),
                    Some(*iteration),
                );
                e.metrics.insert(
                    "rejected_score".into(),
                    point(mean(child_scores), *iteration),
                );
                train_points(&mut e, parent_scores, child_scores, *iteration);
                e.data = json!({"parent": parent, "parent_scores": parent_scores, "child_scores": child_scores});
                self.out.event(e);
            }
            Event::ValsetEvaluated {
                iteration,
                candidate,
                val_score,
                val_scores,
                best_candidate,
                best_score,
                new_best,
            } => {
                let mut e = self.progress(
                    T::ValsetEvaluated,
                    format!(
                        "candidate {candidate}: validation {val_score:.3}{}",
                        if *new_best { " (new best)" } else { "" }
                    ),
                    Some(*iteration),
                );
                e.metrics
                    .insert("val_score".into(), point(*val_score, *iteration));
                e.metrics
                    .insert("best_score".into(), point(*best_score, *iteration));
                let scores: serde_json::Map<String, Value> = val_scores
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i.to_string(), json!(s)))
                    .collect();
                let mut summary = json!({"best_score": best_score});
                if *candidate == 0 && *iteration == 0 {
                    summary["seed_score"] = json!(val_score);
                }
                if *candidate == *best_candidate {
                    summary["best_scores"] = Value::Object(scores);
                }
                if let Some(text) = self.text(*best_candidate) {
                    summary["best_candidate"] = json!({"instructions": text});
                }
                e.summary = Some(summary);
                e.data = json!({"candidate": candidate, "best_candidate": best_candidate});
                self.out.event(e);
            }
            Event::FrontUpdated {
                iteration,
                frontier_size,
                frontier_best_score,
                frontier,
            } => {
                let mut e = self.progress(
                    T::ParetoFrontUpdated,
                    format!(
                        "frontier: {frontier_size} candidate(s), together {frontier_best_score:.3}"
                    ),
                    Some(*iteration),
                );
                e.level = LogLevel::Debug;
                e.metrics.insert(
                    "frontier_size".into(),
                    point(*frontier_size as f64, *iteration),
                );
                e.metrics.insert(
                    "frontier_best_score".into(),
                    point(*frontier_best_score, *iteration),
                );
                e.summary = Some(json!({"frontier_size": frontier_size}));
                e.data = json!({"frontier": frontier});
                self.out.event(e);
            }
            Event::BudgetUpdated {
                metric_calls_used,
                metric_calls_remaining,
            } => {
                let mut e = self.progress(
                    T::BudgetUpdated,
                    format!("metric calls used: {metric_calls_used}"),
                    None,
                );
                e.level = LogLevel::Debug;
                e.metrics.insert(
                    "metric_calls_used".into(),
                    point(*metric_calls_used as f64, *metric_calls_used),
                );
                if let Some(r) = metric_calls_remaining {
                    e.metrics.insert(
                        "metric_calls_remaining".into(),
                        point(*r as f64, *metric_calls_used),
                    );
                }
                self.out.event(e);
                self.usage.report(Some(*metric_calls_used));
            }
            Event::Checkpoint {
                iteration,
                checkpoint,
            } => {
                // Candidates first: the checkpoint is what a resumed run starts from, and it
                // must never refer to a candidate the store has not seen.
                for c in &checkpoint.candidates {
                    if c.iteration == *iteration || *iteration == 0 {
                        self.out.line(&Line::Candidate {
                            candidate: candidate_json(c),
                        });
                    }
                }
                self.out.line(&Line::Checkpoint {
                    iteration: *iteration,
                    checkpoint: checkpoint.to_json(),
                });
            }
            Event::Finished { .. } | Event::Error { .. } => {}
        }
    }
}

/// A candidate's record as the store keeps it. No `best` flag: which candidate is best
/// changes after a record is written, so the store derives it when the candidates are read.
fn candidate_json(c: &gepard_gepa::Candidate) -> Value {
    json!({
        "index": c.index,
        "parents": c.parents,
        "instructions": c.text,
        "val_score": c.val_score,
        "val_subscores": c.val_scores,
        "discovered_at_metric_calls": c.discovered_at_metric_calls,
        "iteration": c.iteration,
    })
}

fn apply_limits(spec: &RunSpec) {
    use rlimit::Resource;
    let l = spec.limits;
    if l.memory_mib > 0 {
        let bytes = l.memory_mib * 1024 * 1024;
        let _ = rlimit::setrlimit(Resource::AS, bytes, bytes);
    }
    if l.open_files > 0 {
        let _ = rlimit::setrlimit(Resource::NOFILE, l.open_files, l.open_files);
    }
    if l.cpu_seconds > 0 {
        let _ = rlimit::setrlimit(Resource::CPU, l.cpu_seconds, l.cpu_seconds + 5);
    }
}

/// Runs one attempt; returns the process exit code (0 when the run ended or was cancelled,
/// 1 when it could not start).
pub async fn run_job(spec: RunSpec, registry: &ModelRegistry) -> u8 {
    apply_limits(&spec);
    let out = Arc::new(Out(Mutex::new(Box::new(std::io::stdout()))));
    let fail = |message: String| {
        let mut e = ProgressEvent::new(ProgressEventType::OptimizationError);
        e.level = LogLevel::Error;
        e.error = Some(message.clone());
        e.message = Some(message);
        out.event(e);
        1
    };
    let recipe = match Recipe::from_spec(&spec.recipe, &spec.recipe_params) {
        Ok(r) => r,
        Err(e) => return fail(format!("reward recipe: {e}")),
    };
    let input_mapping = match InputMapping::from_config(spec.input_mapping.as_ref()) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let models = match RunModels::resolve(registry, &spec.model, Some(&spec.reflection_model)) {
        Ok(m) => Arc::new(m),
        Err(e) => return fail(format!("model: {e}")),
    };
    let resume = match spec
        .resume
        .as_deref()
        .map(Checkpoint::from_json)
        .transpose()
    {
        Ok(c) => c,
        Err(e) => return fail(format!("the stored checkpoint cannot be read: {e}")),
    };
    let mut texts = BTreeMap::from([(0, spec.seed_instructions.clone())]);
    if let Some(cp) = &resume {
        for c in &cp.candidates {
            texts.insert(c.index, c.text.clone());
        }
    }
    let usage_models = Arc::clone(&models);
    let usage = Arc::new(UsageReporter::new(
        Arc::clone(&out),
        Box::new(move || {
            let u = usage_models.usage().total();
            JobUsage {
                metric_calls: 0,
                model_calls: i64::try_from(u.model_calls).unwrap_or(i64::MAX),
                input_tokens: i64::try_from(u.input_tokens).unwrap_or(i64::MAX),
                output_tokens: i64::try_from(u.output_tokens).unwrap_or(i64::MAX),
            }
        }),
        resume.as_ref().map_or(0, |cp| cp.metric_calls),
    ));
    let ticker = {
        let usage = Arc::clone(&usage);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(USAGE_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                usage.tick();
            }
        })
    };
    let sink = Sink {
        out: Arc::clone(&out),
        texts: Mutex::new(texts),
        usage: Arc::clone(&usage),
    };
    let mut start = ProgressEvent::new(if resume.is_some() {
        ProgressEventType::RuntimeCheckpoint
    } else {
        ProgressEventType::OptimizationStart
    });
    start.message = Some(match &resume {
        Some(cp) => format!("resuming {} from the checkpoint after iteration {} ({} metric calls spent)", spec.target, cp.iterations, cp.metric_calls),
        None => format!(
            "optimizing the instructions of {} with {} (reflection: {}); {} training and {} validation rows",
            spec.target,
            spec.model,
            spec.reflection_model,
            spec.train.len(),
            spec.val.len()
        ),
    });
    start.summary = Some(json!({"train_size": spec.train.len(), "val_size": spec.val.len()}));
    out.event(start);

    // SIGTERM (a cancel) and the wall-clock limit both stop the engine between evaluations.
    let cancel = CancelToken::new();
    let remaining = Duration::from_secs(spec.max_runtime_sec.saturating_sub(spec.elapsed_sec));
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let timed_out = Arc::clone(&timed_out);
        tokio::spawn(async move {
            let term = async {
                #[cfg(unix)]
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                    return;
                }
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = term => {}
                () = tokio::time::sleep(remaining) => timed_out.store(true, std::sync::atomic::Ordering::SeqCst),
            }
            cancel.cancel();
        });
    }
    let opt = OptimizeSpec {
        seed_instructions: spec.seed_instructions.clone(),
        train: spec.train.clone(),
        val: spec.val.clone(),
        recipe,
        rollout: RolloutOptions {
            input_mapping,
            temperature: None,
            max_tokens: spec.max_output_tokens,
        },
        config: spec.engine.clone(),
    };
    let result = optimize(&opt, &models, &sink, &cancel, resume).await;
    ticker.abort();
    match result {
        Ok(outcome) => {
            let r = &outcome.result;
            usage.report(Some(r.metric_calls_used));
            let summary = json!({
                "best_score": r.best_score,
                "seed_score": r.seed_score,
                "best_candidate": {"instructions": r.best_text},
                "frontier_size": r.frontier_size,
            });
            let artifacts = json!({
                "best_instructions": r.best_text,
                "best_candidate_index": r.best_candidate,
                "stop_reason": r.stop_reason.to_string(),
                "candidates": r.candidates.len(),
                "accepted": r.counts.accepted,
                "rejected": r.counts.rejected,
                "skipped": r.counts.skipped,
                // Iterations whose reflection answer was unusable: without them the tallies
                // above would not add up to the iterations run.
                "proposals_rejected": r.counts.proposals_rejected,
                "reflection_calls": r.counts.reflection_calls,
                "curve": r.curve,
            });
            let timed = timed_out.load(std::sync::atomic::Ordering::SeqCst);
            match (&r.stop_reason, timed) {
                (StopReason::Cancelled, true) => {
                    let mut e = ProgressEvent::new(ProgressEventType::OptimizationError);
                    let msg = gepard_core::model::runtime_limit_error(spec.max_runtime_sec);
                    e.level = LogLevel::Error;
                    e.message = Some(format!(
                        "{msg}; best validation score so far {:.3}",
                        r.best_score
                    ));
                    e.error = Some(msg);
                    e.summary = Some(summary);
                    e.artifacts = Some(artifacts);
                    out.event(e);
                }
                (StopReason::Cancelled, false) => {
                    // Cancelled: report the best so far; the worker ends the job `cancelled`.
                    let mut e = ProgressEvent::new(ProgressEventType::BudgetUpdated);
                    e.message = Some(format!(
                        "stopped (cancelled, or its worker is shutting down); best validation score so far {:.3}",
                        r.best_score
                    ));
                    e.summary = Some(summary);
                    out.event(e);
                }
                _ => {
                    let mut e = ProgressEvent::new(ProgressEventType::OptimizationEnd);
                    e.message = Some(format!(
                        "finished ({}): validation {:.3} → {:.3} in {} metric calls",
                        r.stop_reason, r.seed_score, r.best_score, r.metric_calls_used
                    ));
                    e.summary = Some(summary);
                    e.artifacts = Some(artifacts);
                    out.event(e);
                }
            }
            0
        }
        Err(e) => {
            usage.report(None);
            let timed = timed_out.load(std::sync::atomic::Ordering::SeqCst);
            match e.error {
                EngineError::StoppedBeforeSeed(StopReason::Cancelled) if !timed => {
                    // Stopped on request (a cancel, or the worker shutting down) while the seed
                    // was still being evaluated: no result yet, and no terminal event either, so
                    // the worker ends the job `cancelled` (or leaves it to be resumed after a
                    // shutdown) just as for a stop later in the run.
                    let mut e = ProgressEvent::new(ProgressEventType::BudgetUpdated);
                    e.message = Some("stopped on request before the seed was evaluated".into());
                    out.event(e);
                }
                EngineError::StoppedBeforeSeed(StopReason::Cancelled) => {
                    let msg = gepard_core::model::runtime_limit_error(spec.max_runtime_sec);
                    let mut e = ProgressEvent::new(ProgressEventType::OptimizationError);
                    e.level = LogLevel::Error;
                    e.message = Some(format!("{msg} before the seed was evaluated"));
                    e.error = Some(msg);
                    out.event(e);
                }
                other => {
                    fail(other.to_string());
                }
            }
            0
        }
    }
}

/// Environment variable through which a worker tells its runner the worker's pid.
pub const SUPERVISOR_PID_ENV: &str = "GEPARD_SUPERVISOR_PID";

/// Ties this runner's life to its worker's: when the worker dies (even by SIGKILL, which
/// runs no cleanup), the kernel kills the runner too. Otherwise an orphaned runner would go
/// on calling the model while the job's lease expires and another worker resumes it, paying
/// for the same work twice.
///
/// The parent-death signal is set here, in the child, because the workspace forbids the
/// `unsafe` a `pre_exec` hook needs. The worker may have died between spawning and this
/// call, so the parent is checked afterwards: an already reparented runner exits at once.
/// (The kernel fires the signal when the *thread* that spawned the child ends; workers
/// spawn from tokio's runtime threads, which live as long as the worker process.)
fn die_with_supervisor() {
    let Some(supervisor) = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return; // run by hand, not by a worker
    };
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
            eprintln!("run-job: cannot tie this runner to its worker: {e}");
        }
    }
    if nix::unistd::getppid().as_raw() != supervisor {
        eprintln!("run-job: the worker (pid {supervisor}) is gone; not starting");
        std::process::exit(1);
    }
}

/// Reads the spec from stdin and runs it: the body of `gepard run-job`.
pub async fn main_from_stdin(registry: &ModelRegistry) -> u8 {
    die_with_supervisor();
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        eprintln!("run-job: cannot read the run spec from stdin: {e}");
        return 2;
    }
    match serde_json::from_str::<RunSpec>(&input) {
        Ok(spec) => run_job(spec, registry).await,
        Err(e) => {
            eprintln!("run-job: the run spec on stdin is not valid: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gepard_gepa::SkipReason;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn usage_between_budget_updates_keeps_the_engine_count_and_is_written_only_when_it_moved() {
        let captured = Captured::default();
        let calls = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let counted = Arc::clone(&calls);
        // Resumed from a checkpoint at 90 metric calls.
        let usage = UsageReporter::new(
            Arc::new(Out(Mutex::new(Box::new(captured.clone())))),
            Box::new(move || JobUsage {
                model_calls: counted.load(std::sync::atomic::Ordering::SeqCst),
                ..JobUsage::default()
            }),
            90,
        );
        usage.tick();
        calls.store(2, std::sync::atomic::Ordering::SeqCst);
        usage.tick();
        usage.tick();
        calls.store(5, std::sync::atomic::Ordering::SeqCst);
        usage.report(Some(93));
        usage.report(None);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let written: Vec<(i64, i64)> = text
            .lines()
            .map(|l| match serde_json::from_str::<Line>(l).unwrap() {
                Line::Usage { usage } => (usage.metric_calls, usage.model_calls),
                other => panic!("a usage line: {other:?}"),
            })
            .collect();
        assert_eq!(written, [(90, 2), (93, 5), (93, 5)]);
    }

    #[test]
    fn a_skipped_iteration_is_logged_as_a_sentence_not_a_debug_name() {
        let captured = Captured::default();
        let sink = Sink {
            out: Arc::new(Out(Mutex::new(Box::new(captured.clone())))),
            texts: Mutex::new(BTreeMap::new()),
            usage: Arc::new(UsageReporter::new(
                Arc::new(Out(Mutex::new(Box::new(std::io::sink())))),
                Box::new(JobUsage::default),
                0,
            )),
        };
        sink.emit(&Event::IterationSkipped {
            iteration: 4,
            parent: 0,
            parent_scores: vec![1.0, 1.0, 1.0],
            reason: SkipReason::PerfectScores,
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: Line = serde_json::from_str(text.trim()).unwrap();
        let Line::Progress { event } = line else {
            panic!("a progress line: {text}")
        };
        let message = event.message.unwrap();
        assert_eq!(
            message,
            format!("iteration 4: skipped: {}", SkipReason::PerfectScores)
        );
        assert!(!message.contains("PerfectScores"), "{message}");
    }

    #[test]
    fn a_nul_character_from_a_model_never_reaches_the_store() {
        let captured = Captured::default();
        let out = Out(Mutex::new(Box::new(captured.clone())));
        out.line(&Line::Candidate {
            candidate: serde_json::json!({"instructions": "Be\u{0} brief.", "k\u{0}": ["x\u{0}"]}),
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        let Line::Candidate { candidate } = serde_json::from_str(text.trim()).unwrap() else {
            panic!("a candidate line: {text}")
        };
        assert_eq!(
            candidate,
            serde_json::json!({"instructions": "Be\u{fffd} brief.", "k\u{fffd}": ["x\u{fffd}"]})
        );
    }
}
