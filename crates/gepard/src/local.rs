//! `gepard optimize local`: GEPA in-process on a capability directory and JSONL files, without a
//! server. The run itself is [`gepard_agent::optimize::optimize`], shared with the job worker;
//! this module only reads the inputs, shows progress and prints the result.
//!
//! Exit codes: 0 the run finished (whatever its scores); 2 an input is unusable (a flag value,
//! a file, the capability, a dataset row, the recipe or its params, the model id, the engine
//! configuration), reported before any model call; 1 the run failed (e.g. a run-fatal model error
//! such as a rejected API key), with the reason; 130 interrupted by Ctrl-C (SIGINT).
//!
//! The first Ctrl-C stops the run between evaluations (calls in flight are dropped), skips the
//! test-set scoring, prints the best result found so far and exits 130, so a script can tell
//! an interrupted run from a finished one. A second Ctrl-C exits 130 at once.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use gepard_agent::bundle::{rows_of_file, Bundle, Capability, Dataset};
use gepard_agent::optimize::{evaluate_rows, optimize, OptimizeOutcome, OptimizeSpec, RunModels};
use gepard_agent::recipe::Recipe;
use gepard_agent::rollout::{check_row, InputMapping, RolloutOptions};
use gepard_gepa::{
    CancelToken, CandidateSelection, Config, EngineError, Event, FrontierType, StopReason,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Parent selection strategies, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Selection {
    /// Sample among non-dominated candidates, weighted by the fronts they are on (GEPA's default).
    Pareto,
    /// Always the candidate with the best validation mean.
    CurrentBest,
    /// The best candidate, or with probability `--epsilon` a random one.
    EpsilonGreedy,
}

/// Frontier types, as spelled on the command line (GEPA's `frontier_type` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Frontier {
    /// One front per validation example (GEPA's default).
    Instance,
    /// One front: the candidates with the best validation mean.
    Objective,
    /// The per-example fronts and the objective front together.
    Hybrid,
    /// One front per (example, objective); with gepard's one objective, as `instance`.
    Cartesian,
}

/// Arguments of `gepard optimize local` (boxed, so the CLI's command enum stays small).
#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    #[command(flatten)]
    options: Box<LocalOptions>,
}

/// The flags of `gepard optimize local`. Numbers take a leading `-` as part of the value
/// (`allow_negative_numbers`), so `--seed -1` is refused naming the flag instead of as an
/// unexpected argument `-1`.
#[derive(Debug, clap::Args)]
pub struct LocalOptions {
    /// Capability directory (`capability.yaml` + `agents/*.md`).
    #[arg(long, value_name = "DIR")]
    pub capability: PathBuf,
    /// The agent whose instructions are optimized (default: the capability's first agent).
    #[arg(long, value_name = "NAME")]
    pub agent_name: Option<String>,
    /// Training rows (`goal`, `expected_output`, …): a JSONL file, a `.csv` or `.parquet`
    /// file, or a dataset directory as `dataset push` takes it.
    #[arg(long, value_name = "PATH")]
    pub dataset: PathBuf,
    /// Validation rows, in any form `--dataset` takes (default: the training rows are also
    /// the validation set).
    #[arg(long, value_name = "PATH")]
    pub val_dataset: Option<PathBuf>,
    /// Test rows, in any form `--dataset` takes: the seed and the best instructions are scored
    /// on them after the run, outside the budget.
    #[arg(long, value_name = "PATH")]
    pub test_dataset: Option<PathBuf>,
    /// Target model id, `provider/model` (e.g. `openai/gpt-4o-mini`; `openai/…` reads
    /// `OPENAI_BASE_URL` and `OPENAI_API_KEY`).
    #[arg(long, value_name = "ID")]
    pub model: String,
    /// Reflection model id (default: the target model).
    #[arg(long, value_name = "ID")]
    pub reflection_lm: Option<String>,
    /// Reward recipe: exact_match_v1, contains_v1, row_reward_v1, trajectory_imitation_v1.
    #[arg(long, value_name = "NAME")]
    pub reward_recipe: String,
    /// The recipe's params as a JSON object.
    #[arg(long, value_name = "JSON")]
    pub reward_params: Option<String>,
    /// Metric-call budget (one call = one candidate scored on one example), never exceeded.
    /// This or another limit (--max-trials, --max-trials-without-improvement,
    /// --max-runtime-sec) is required.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_metric_calls: Option<u64>,
    /// Stop after this many iterations.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_trials: Option<u64>,
    /// Stop after this many iterations in a row without a better validation score.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_trials_without_improvement: Option<u64>,
    /// Stop after this many seconds, keeping the best result so far.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub max_runtime_sec: Option<u64>,
    /// Seed of GEPA's random choices.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Evaluations in flight at once (never changes the result).
    #[arg(long, default_value_t = 8, allow_negative_numbers = true)]
    pub concurrency: usize,
    /// Training examples per reflection minibatch.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub minibatch: usize,
    /// Parent selection strategy.
    #[arg(long, value_enum, default_value_t = Selection::Pareto)]
    pub candidate_selection: Selection,
    /// The fronts Pareto selection draws parents from (and the reported frontier).
    #[arg(long, value_enum, default_value_t = Frontier::Instance)]
    pub frontier_type: Frontier,
    /// Exploration probability of `--candidate-selection epsilon_greedy`.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub epsilon: f64,
    /// Print one JSON object instead of the human summary (and no progress bar).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    client_flags: crate::args::HiddenClientFlags,
}

/// An input problem: exit code 2 with this message.
struct Usage(String);

impl<E: std::fmt::Display> From<E> for Usage {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// Everything read and checked before the first model call.
struct Prepared {
    agent: String,
    capability: String,
    spec: OptimizeSpec,
    test: Option<Vec<Value>>,
    models: RunModels,
    val_is_train: bool,
}

/// Runs `gepard optimize local`.
pub async fn run(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let args = *args.options;
    let prepared = match prepare(&args) {
        Ok(p) => p,
        Err(Usage(message)) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(2));
        }
    };
    if prepared.val_is_train {
        eprintln!(
            "note: no --val-dataset given: the {} training rows are also the validation set",
            prepared.spec.train.len()
        );
    }

    let bar = progress_bar(&args, prepared.spec.config.max_metric_calls);
    // Only Ctrl-C fires this token (runtime limits are the engine's own), so "cancelled" below
    // always means "interrupted".
    let cancel = CancelToken::new();
    watch_interrupts(cancel.clone(), bar.clone()).context("cannot listen for Ctrl-C (SIGINT)")?;
    let sink_bar = bar.clone();
    let sink = move |event: &Event| match event {
        Event::BudgetUpdated {
            metric_calls_used, ..
        } => sink_bar.set_position(*metric_calls_used),
        Event::ValsetEvaluated { best_score, .. } => {
            sink_bar.set_message(format!("best val {best_score:.3}"));
        }
        _ => {}
    };

    let started = Instant::now();
    let outcome = optimize(&prepared.spec, &prepared.models, &sink, &cancel, None).await;
    let wall = started.elapsed();
    bar.finish_and_clear();
    // A run that fails after the seed was evaluated still reports what it found (then exits
    // with its error): a key revoked half-way through must not throw away paid-for candidates.
    let (outcome, failure) = match outcome {
        Ok(outcome) => (outcome, None),
        Err(e)
            if matches!(
                e.error,
                EngineError::StoppedBeforeSeed(StopReason::Cancelled)
            ) =>
        {
            eprintln!("interrupted before the seed instructions were evaluated: no result");
            return Ok(ExitCode::from(INTERRUPTED));
        }
        Err(mut e) => match e.best_so_far.take() {
            Some(result) => {
                let outcome = OptimizeOutcome {
                    result: *result,
                    usage: e.usage,
                };
                (outcome, Some(e))
            }
            None => return Err(anyhow::Error::new(e).context("the optimization failed")),
        },
    };

    // Scoring the test set costs two passes over it; after a Ctrl-C the user wants out, not
    // more model calls, so it is skipped (or abandoned when the Ctrl-C comes during it). After
    // a failure the model cannot be relied on to score it.
    if failure.is_some() && prepared.test.is_some() {
        eprintln!("note: the run failed: the test set (--test-dataset) was not scored");
    }
    let test_scores = match &prepared.test {
        Some(rows) if !cancel.is_cancelled() && failure.is_none() => tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            scores = test_scores(&prepared, &outcome, rows) => Some(scores?),
        },
        _ => None,
    };
    let interrupted = cancel.is_cancelled();
    if interrupted && prepared.test.is_some() {
        eprintln!("note: interrupted: the test set (--test-dataset) was not scored");
    }
    let usage = prepared.models.usage();
    if args.json {
        let mut report = json_report(&outcome, test_scores, wall, &usage);
        // Which agent of the capability was optimized (the first one unless --agent-name).
        report["agent"] = json!(prepared.agent);
        if let Some(e) = &failure {
            report["error"] = json!(e.error.to_string());
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&prepared, &outcome, test_scores, wall, &usage);
    }
    if let Some(e) = failure {
        return Err(anyhow::Error::new(e).context(
            "the optimization failed (the best result before the failure is reported above)",
        ));
    }
    Ok(if interrupted {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit code of a run interrupted by Ctrl-C: 128 + SIGINT, what shells report for a command
/// that SIGINT ended.
const INTERRUPTED: u8 = 130;

/// Listens for Ctrl-C: the first one fires `cancel` (the run stops, its best result is still
/// reported), the second exits at once. The listener is registered before this returns, so a
/// Ctrl-C from the first model call on is caught rather than killing the process half-way.
fn watch_interrupts(cancel: CancelToken, bar: ProgressBar) -> std::io::Result<()> {
    let mut interrupts = Interrupts::new()?;
    tokio::spawn(async move {
        if !interrupts.next().await {
            return;
        }
        bar.suspend(|| {
            eprintln!(
                "interrupted: stopping the run and reporting the best result so far \
                 (Ctrl-C again to exit at once)"
            );
        });
        cancel.cancel();
        if interrupts.next().await {
            bar.finish_and_clear();
            eprintln!("interrupted again: exiting without a report");
            std::process::exit(i32::from(INTERRUPTED));
        }
    });
    Ok(())
}

/// SIGINT as a stream: on Unix a handler installed at once; elsewhere tokio's `ctrl_c`.
struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?,
        })
    }

    /// Waits for the next Ctrl-C; `false` when none can come any more.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.signal.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

fn prepare(args: &LocalOptions) -> Result<Prepared, Usage> {
    let bundle = Bundle::from_dir(&args.capability).map_err(|e| {
        Usage(format!(
            "--capability {}: cannot read the directory: {e}",
            args.capability.display()
        ))
    })?;
    let capability = Capability::parse(bundle)
        .map_err(|e| Usage(format!("--capability {}: {e}", args.capability.display())))?;
    let agent = match &args.agent_name {
        None => &capability.agents[0],
        Some(name) => capability
            .agents
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = capability.agents.iter().map(|a| a.name.as_str()).collect();
                Usage(format!(
                    "--agent-name {name}: capability `{}` has no such agent; its agents: {}",
                    capability.name,
                    known.join(", ")
                ))
            })?,
    };

    let params: Value = match &args.reward_params {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Usage(format!("--reward-params is not valid JSON: {e}")))?,
    };
    let recipe = Recipe::from_spec(&args.reward_recipe, &params)
        .map_err(|e| Usage(format!("--reward-recipe / --reward-params: {e}")))?;

    let rollout = RolloutOptions::default();
    let rows = |flag: &str, path: &Path| read_rows(flag, path, &rollout.input_mapping, &recipe);
    let train = rows("--dataset", &args.dataset)?;
    let (val, val_is_train) = match &args.val_dataset {
        Some(path) => (rows("--val-dataset", path)?, false),
        None => (train.clone(), true),
    };
    let test = args
        .test_dataset
        .as_deref()
        .map(|path| rows("--test-dataset", path))
        .transpose()?;

    let candidate_selection = match args.candidate_selection {
        Selection::Pareto => CandidateSelection::Pareto,
        Selection::CurrentBest => CandidateSelection::CurrentBest,
        Selection::EpsilonGreedy => CandidateSelection::EpsilonGreedy {
            epsilon: args.epsilon,
        },
    };
    let config = Config {
        seed: args.seed,
        max_metric_calls: args.max_metric_calls,
        max_trials: args.max_trials,
        max_trials_without_improvement: args.max_trials_without_improvement,
        max_runtime: args.max_runtime_sec.map(Duration::from_secs),
        concurrency: args.concurrency,
        minibatch_size: args.minibatch,
        candidate_selection,
        frontier_type: match args.frontier_type {
            Frontier::Instance => FrontierType::Instance,
            Frontier::Objective => FrontierType::Objective,
            Frontier::Hybrid => FrontierType::Hybrid,
            Frontier::Cartesian => FrontierType::Cartesian,
        },
        ..Config::default()
    };
    config
        .validate(train.len(), val.len())
        .map_err(|e| Usage(flag_names(&e.to_string())))?;

    let registry = crate::models::registry(&crate::settings::data_dir(
        std::env::var_os("GEPARD_DATA_DIR")
            .map(std::path::PathBuf::from)
            .as_deref(),
    ))
    .map_err(|e| Usage(format!("{e:#}")))?;
    let models = RunModels::resolve(&registry, &args.model, args.reflection_lm.as_deref())
        .map_err(|e| Usage(format!("--model / --reflection-lm: {e}")))?;

    Ok(Prepared {
        agent: agent.name.clone(),
        capability: format!("{}@{}", capability.name, capability.version),
        spec: OptimizeSpec {
            seed_instructions: agent.instructions.clone(),
            train,
            val,
            recipe,
            rollout,
            config,
        },
        test,
        models,
        val_is_train,
    })
}

/// The engine names configuration fields; the user typed flags.
fn flag_names(message: &str) -> String {
    [
        ("`max_metric_calls`", "--max-metric-calls"),
        ("(max_trials,", "(--max-trials,"),
        (
            "max_trials_without_improvement,",
            "--max-trials-without-improvement,",
        ),
        ("max_runtime)", "--max-runtime-sec)"),
        ("`max_runtime`", "--max-runtime-sec"),
        ("`concurrency`", "--concurrency"),
        ("`minibatch_size`", "--minibatch"),
        ("`candidate_selection.epsilon`", "--epsilon"),
        ("`train_size`", "the training set (--dataset)"),
        ("`val_size`", "the validation set"),
    ]
    .iter()
    .fold(message.to_owned(), |m, (from, to)| m.replace(from, to))
}

/// Reads a rows file and checks every row the way a rollout would before its model call (a
/// user message, readable tools): a row that would only score 0 is an input error, named here.
fn read_rows(
    flag: &str,
    path: &Path,
    mapping: &InputMapping,
    recipe: &Recipe,
) -> Result<Vec<Value>, Usage> {
    let unreadable = |e: String| Usage(format!("{flag} {}: {e}", path.display()));
    // A dataset directory (as `dataset push` takes it) or one rows file (JSON lines, or CSV
    // and Parquet by their extensions), read by the same code the registry reads bundles with.
    let rows: Vec<Value> = if path.is_dir() {
        let bundle = Bundle::from_dir(path)
            .map_err(|e| unreadable(format!("cannot read the directory: {e}")))?;
        Dataset::parse(bundle)
            .map_err(|e| unreadable(e.to_string()))?
            .rows
            .into_iter()
            .map(Value::Object)
            .collect()
    } else {
        let bytes =
            std::fs::read(path).map_err(|e| unreadable(format!("cannot read the file: {e}")))?;
        let name = path
            .file_name()
            .map_or_else(|| "rows.jsonl".into(), |n| n.to_string_lossy().into_owned());
        rows_of_file(&name, bytes)
            .map_err(|e| unreadable(e.to_string()))?
            .into_iter()
            .map(Value::Object)
            .collect()
    };
    if rows.is_empty() {
        return Err(Usage(format!("{flag} {}: holds no rows", path.display())));
    }
    if let Some((i, why)) = rows
        .iter()
        .enumerate()
        .find_map(|(i, row)| check_row(mapping, Some(recipe), row).err().map(|e| (i, e)))
    {
        return Err(Usage(format!(
            "{flag} {}: row {} {why}",
            path.display(),
            i + 1
        )));
    }
    Ok(rows)
}

fn progress_bar(args: &LocalOptions, budget: Option<u64>) -> ProgressBar {
    let bar = match budget {
        Some(max) => ProgressBar::new(max),
        None => ProgressBar::no_length(),
    };
    if args.json || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
        return bar;
    }
    let template = if budget.is_some() {
        "{elapsed_precise} [{bar:40}] {pos}/{len} metric calls  {msg}"
    } else {
        "{elapsed_precise} {spinner} {pos} metric calls  {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct TestScores {
    seed: f64,
    best: f64,
}

async fn test_scores(
    prepared: &Prepared,
    outcome: &OptimizeOutcome,
    rows: &[Value],
) -> anyhow::Result<TestScores> {
    let spec = &prepared.spec;
    let model = prepared.models.task().as_ref();
    let concurrency = spec.config.concurrency;
    let seed = evaluate_rows(
        model,
        &spec.seed_instructions,
        rows,
        &spec.recipe,
        &spec.rollout,
        concurrency,
    )
    .await
    .context("scoring the seed instructions on the test set failed")?;
    let best = if outcome.result.best_candidate == 0 {
        seed.clone()
    } else {
        evaluate_rows(
            model,
            &outcome.result.best_text,
            rows,
            &spec.recipe,
            &spec.rollout,
            concurrency,
        )
        .await
        .context("scoring the best instructions on the test set failed")?
    };
    Ok(TestScores {
        seed: seed.mean,
        best: best.mean,
    })
}

fn json_report(
    outcome: &OptimizeOutcome,
    test: Option<TestScores>,
    wall: Duration,
    usage: &gepard_agent::optimize::RunUsage,
) -> Value {
    let r = &outcome.result;
    let mut report = json!({
        "seed_val_score": r.seed_score,
        "best_val_score": r.best_score,
    });
    if let Some(test) = test {
        report["seed_test_score"] = json!(test.seed);
        report["best_test_score"] = json!(test.best);
    }
    let extra = json!({
        "metric_calls": r.metric_calls_used,
        "candidates": r.candidates.len(),
        "accepted": r.counts.accepted,
        "rejected": r.counts.rejected,
        "skipped": r.counts.skipped,
        "proposals_rejected": r.counts.proposals_rejected,
        "reflection_calls": r.counts.reflection_calls,
        "iterations": r.iterations,
        "stop_reason": r.stop_reason.to_string(),
        "wall_seconds": wall.as_secs_f64(),
        "curve": r.curve,
        "best_candidate": r.best_candidate,
        "best_instructions": r.best_text,
        // Every candidate with its parents: what a user reads to see which line of edits won
        // (and the benchmark compares with the reference's candidate list).
        "lineage": r.candidates.iter().map(|c| json!({
            "index": c.index,
            "parents": c.parents,
            "val_score": c.val_score,
            "on_frontier": c.on_frontier,
            "discovered_at_metric_calls": c.discovered_at_metric_calls,
            "iteration": c.iteration,
            "instructions": c.text,
        })).collect::<Vec<_>>(),
        "usage": usage,
    });
    if let (Value::Object(report), Value::Object(extra)) = (&mut report, extra) {
        report.extend(extra);
    }
    report
}

fn print_human(
    prepared: &Prepared,
    outcome: &OptimizeOutcome,
    test: Option<TestScores>,
    wall: Duration,
    usage: &gepard_agent::optimize::RunUsage,
) {
    let r = &outcome.result;
    let spec = &prepared.spec;
    println!(
        "Optimized agent `{}` of {} on {} training / {} validation rows{}.",
        prepared.agent,
        prepared.capability,
        spec.train.len(),
        spec.val.len(),
        if prepared.val_is_train {
            " (the training rows, no --val-dataset)"
        } else {
            ""
        }
    );
    println!();
    match &test {
        Some(t) => {
            println!("  seed  val {:.3}  test {:.3}", r.seed_score, t.seed);
            println!(
                "  best  val {:.3}  test {:.3}  (candidate {})",
                r.best_score, t.best, r.best_candidate
            );
        }
        None => {
            println!("  seed  val {:.3}", r.seed_score);
            println!(
                "  best  val {:.3}  (candidate {})",
                r.best_score, r.best_candidate
            );
        }
    }
    println!();
    let budget = spec
        .config
        .max_metric_calls
        .map_or_else(String::new, |max| format!(" of {max}"));
    // The engine's own tallies, one each: an iteration whose reflection answer was unusable is
    // neither a rejected child (none was scored) nor a skipped one (a reflection call was paid).
    println!(
        "{} metric calls{budget}, {} iterations: {} accepted, {} rejected, {} unusable proposals, \
         {} skipped (perfect minibatch); {} candidates, {} reflection calls.",
        r.metric_calls_used,
        r.iterations,
        r.counts.accepted,
        r.counts.rejected,
        r.counts.proposals_rejected,
        r.counts.skipped,
        r.candidates.len(),
        r.counts.reflection_calls,
    );
    let total = usage.total();
    println!(
        "{} model calls ({} failed), {} input / {} output tokens, {:.1} s.",
        total.model_calls,
        total.failed_calls,
        total.input_tokens,
        total.output_tokens,
        wall.as_secs_f64()
    );
    match r.stop_reason {
        StopReason::Cancelled => println!("Stopped: interrupted (Ctrl-C)."),
        StopReason::Failed { .. } => println!("Stopped: the run failed (the error follows)."),
        ref reason => println!("Stop reason: {reason}."),
    }
    println!();
    if r.best_candidate == 0 {
        println!("No candidate beat the seed; the instructions are unchanged:");
    } else {
        println!("Best instructions:");
    }
    println!("{}", r.best_text);
}
