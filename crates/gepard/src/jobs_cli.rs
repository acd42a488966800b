//! `gepard optimize submit|list|get|wait|logs|candidates|artifacts|cancel|retry|promote`: the
//! job commands.
//!
//! `submit --wait` and `wait` follow the job's live event stream (not polling) and draw a
//! progress bar (metric calls used / budget, best score) when attached to a terminal. They
//! exit 0 only when the job completed; failed, cancelled or timed out is exit 1.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use gepard_client::{Client, Follow};
use gepard_core::job::JobStatus;
use gepard_core::model::{Job, PromotionPreview, SequencedLog};
use gepard_core::ArtifactRef;
use serde_json::{json, Map, Value};

use crate::commands::GlobalOpts;

/// Flags of `gepard optimize submit`.
#[derive(Debug, Clone, clap::Args)]
pub struct SubmitArgs {
    /// Target model, `provider/model`.
    #[arg(long)]
    pub model: String,
    /// Capability version, NAME@VERSION.
    #[arg(long, value_parser = crate::args::artifact_ref)]
    pub capability: ArtifactRef,
    /// Agent to optimize (default: the capability's first agent).
    #[arg(long)]
    pub agent_name: Option<String>,
    /// Training dataset, NAME@VERSION.
    #[arg(long, value_parser = crate::args::artifact_ref)]
    pub dataset: ArtifactRef,
    /// Validation dataset, NAME@VERSION (default: the training dataset).
    #[arg(long, value_parser = crate::args::artifact_ref)]
    pub val_dataset: Option<ArtifactRef>,
    /// Reward recipe (exact_match_v1, contains_v1, row_reward_v1, trajectory_imitation_v1).
    #[arg(long, default_value = "exact_match_v1")]
    pub reward_recipe: String,
    /// Recipe parameters as a JSON object.
    #[arg(long, value_parser = crate::args::json_object)]
    pub reward_params: Option<Value>,
    /// What the optimization is for, in words.
    #[arg(long)]
    pub objective: Option<String>,
    /// Job name.
    #[arg(long)]
    pub name: Option<String>,
    /// Your reference for the run.
    #[arg(long)]
    pub run_ref: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// GEPA's RNG seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Budget: (candidate, example) evaluations (server default 100). The seed's evaluation
    /// takes one per validation row, and each iteration up to 2 × minibatch + validation rows.
    #[arg(long)]
    pub max_metric_calls: Option<u64>,
    /// Stop after this many iterations.
    #[arg(long)]
    pub max_trials: Option<u64>,
    /// Stop after this many iterations without a better candidate.
    #[arg(long)]
    pub max_trials_without_improvement: Option<u64>,
    /// Wall-clock limit of the run.
    #[arg(long)]
    pub max_runtime_sec: Option<u64>,
    /// Reflection model (default: the target model).
    #[arg(long)]
    pub reflection_lm: Option<String>,
    /// Evaluations in flight at once (server default 1; never changes the result).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Makes a retried submission return the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the job until it ends (exit 0 only if it completed).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 1).
    #[arg(long, requires = "wait")]
    pub timeout: Option<u64>,
}

/// `gepard optimize …` job subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Submit an optimization job.
    Submit(Box<SubmitArgs>),
    /// List jobs, newest first.
    List {
        /// Only this status.
        #[arg(long, value_parser = crate::args::job_status)]
        status: Option<gepard_core::job::JobStatus>,
        /// Only jobs whose id, name, model, capability (NAME@VERSION) or tags contain this
        /// text, ignoring case.
        #[arg(long)]
        search: Option<String>,
        /// 1-based page.
        #[arg(long, default_value_t = 1)]
        page: u32,
        /// Items per page (1–100).
        #[arg(long, default_value_t = 20)]
        page_size: u32,
    },
    /// Show one job.
    Get {
        /// Job id.
        id: String,
    },
    /// Follow a job until it ends (exit 0 only if it completed).
    Wait {
        /// Job id.
        id: String,
        /// Give up after this many seconds (exit 1).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Print a job's logs. With --json, one JSON object per entry and line (JSON Lines), so
    /// that --follow can stream them.
    Logs {
        /// Job id.
        id: String,
        /// Keep streaming new entries until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// List the candidates a job evaluated (index, parent, score, frontier, best, first line).
    Candidates {
        /// Job id.
        id: String,
    },
    /// Print a job's artifacts.
    Artifacts {
        /// Job id.
        id: String,
    },
    /// Cancel a job (asks first unless --yes).
    Cancel {
        /// Job id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Queue a finished job again (new attempt, evidence cleared).
    Retry {
        /// Job id.
        id: String,
    },
    /// Promote a job's best candidate into a new capability version (a completed or cancelled
    /// job, or one its max_runtime_sec stopped): shows the source, target, scores and
    /// instructions diff, then asks (unless --yes).
    Promote {
        /// Job id.
        id: String,
        /// Capability name to write (default: the source capability's). Another name that
        /// already exists must be linked to the source by an earlier promotion.
        #[arg(long)]
        name: Option<String>,
        /// Version to write (default: under the source's name, the source version's next free
        /// patch; under another name, the patch after that name's highest version, or the
        /// source's version when it has none).
        #[arg(long, value_parser = crate::args::version)]
        version: Option<String>,
        /// Only show what would be written.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// Exit code of a usage error (DESIGN "Operator interface"), as clap uses for bad flags.
fn usage_error() -> ExitCode {
    ExitCode::from(2)
}

fn ref_json(r: &ArtifactRef) -> Value {
    let name = r
        .org
        .as_ref()
        .map_or_else(|| r.name.to_string(), |o| format!("{o}/{}", r.name));
    json!({"name": name, "version": r.version.to_string()})
}

/// The create body of API.md from the flags.
pub fn submit_body(a: &SubmitArgs, project: Option<&str>) -> anyhow::Result<Value> {
    let params = a.reward_params.clone().unwrap_or_else(|| json!({}));
    let mut config = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            config.insert(k.to_owned(), v);
        }
    };
    put("seed", a.seed.map(Value::from));
    put("max_metric_calls", a.max_metric_calls.map(Value::from));
    put("max_trials", a.max_trials.map(Value::from));
    put(
        "max_trials_without_improvement",
        a.max_trials_without_improvement.map(Value::from),
    );
    put("max_runtime_sec", a.max_runtime_sec.map(Value::from));
    put("reflection_lm", a.reflection_lm.clone().map(Value::from));
    put("concurrency", a.concurrency.map(Value::from));
    Ok(json!({
        "name": a.name,
        "backend": "gepa",
        "target_kind": "capability_agent",
        "model": a.model,
        "project": project,
        "run_ref": a.run_ref,
        "capability_ref": ref_json(&a.capability),
        "agent_name": a.agent_name,
        "dataset_ref": ref_json(&a.dataset),
        "val_dataset_ref": a.val_dataset.as_ref().map(ref_json),
        "reward_recipe": {"name": a.reward_recipe, "params": params},
        "components": ["instructions"],
        "objective": a.objective,
        "tags": a.tags,
        "config": config,
    }))
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn last_metric(job: &Job, name: &str) -> Option<f64> {
    job.metrics
        .get(name)
        .and_then(|s| s.last())
        .map(|p| p.value)
}

fn budget(job: &Job) -> Option<u64> {
    job.config.get("max_metric_calls").and_then(Value::as_u64)
}

fn describe(job: &Job) -> String {
    let score = job
        .summary
        .best_score
        .map_or_else(|| "-".into(), |s| format!("{s:.3}"));
    format!(
        "{}  {:<9}  {}  {}@{}  best {}",
        job.id,
        job.status.as_str(),
        job.name.as_deref().unwrap_or("-"),
        job.capability.name,
        job.capability.version,
        score
    )
}

fn print_job(job: &Job) {
    println!("job        {}", job.id);
    println!(
        "status     {}{}",
        job.status.as_str(),
        if job.cancel_requested_at.is_some() {
            " (cancel requested)"
        } else {
            ""
        }
    );
    if let Some(n) = &job.name {
        println!("name       {n}");
    }
    println!("model      {}", job.model);
    println!(
        "capability {}@{} agent {}",
        job.capability.name, job.capability.version, job.agent_name
    );
    println!(
        "dataset    {}@{}",
        job.dataset_ref.name, job.dataset_ref.version
    );
    if let Some(v) = &job.val_dataset_ref {
        println!("validation {}@{}", v.name, v.version);
    }
    println!("recipe     {}", job.reward_recipe.name);
    println!("project    {}  attempt {}", job.project, job.attempt);
    if let Some(s) = job.summary.best_score {
        println!("best score {s:.4}");
    }
    if let Some(used) = last_metric(job, "metric_calls_used") {
        println!(
            "budget     {used} / {} metric calls",
            budget(job).map_or_else(|| "?".into(), |b| b.to_string())
        );
    }
    if let Some(line) = usage_line(&job.usage) {
        println!("usage      {line}");
    }
    if let Some(e) = &job.error {
        println!("error      {e}");
    }
}

fn print_log(log: &SequencedLog) {
    let e = &log.entry;
    println!(
        "{} {:<7} {}",
        e.timestamp.format("%H:%M:%S%.3f"),
        format!("{:?}", e.level).to_lowercase(),
        e.message
    );
}

/// A score as printed everywhere in the CLI: three decimals, `-` when there is none.
pub(crate) fn score(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// Colours a unified diff's lines (removed red, added green, hunks cyan).
fn colored_diff(diff: &str) -> String {
    diff.lines()
        .map(|l| {
            let code = if l.starts_with("+++") || l.starts_with("---") {
                "1"
            } else if l.starts_with('+') {
                "32"
            } else if l.starts_with('-') {
                "31"
            } else if l.starts_with("@@") {
                "36"
            } else {
                return format!("{l}\n");
            };
            format!("\x1b[{code}m{l}\x1b[0m\n")
        })
        .collect()
}

fn print_preview(p: &PromotionPreview) {
    println!(
        "job        {} ({}, attempt {})",
        p.job_id,
        p.status.as_str(),
        p.attempt
    );
    println!(
        "source     {}@{} agent {}",
        p.source.name, p.source.version, p.source.agent_name
    );
    println!("target     {}@{}", p.target.name, p.target.version);
    if let Some(i) = p.candidate_index {
        println!("candidate  {i}");
    }
    println!(
        "validation seed {} → best {}",
        score(p.seed_score),
        score(p.best_score)
    );
    if p.promotable {
        println!("promotable yes");
    } else {
        println!("promotable no: {}", p.reasons.join("; "));
    }
    if p.diff.is_empty() {
        println!("\n(the instructions are unchanged)");
    } else {
        let color = crate::settings::use_color(std::io::stdout().is_terminal());
        println!();
        print!(
            "{}",
            if color {
                colored_diff(&p.diff)
            } else {
                p.diff.clone()
            }
        );
    }
}

/// `gepard optimize promote`: preview, confirm, promote exactly the previewed target.
async fn promote(
    opts: &GlobalOpts,
    client: &Client,
    id: &str,
    target: (Option<&str>, Option<&str>),
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let (org, ws) = (opts.org.as_str(), opts.workspace.as_str());
    let preview = client
        .promotion_preview(org, ws, id, target.0, target.1)
        .await?;
    if dry_run {
        if opts.json {
            print_json(&preview)?;
        } else {
            print_preview(&preview);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !opts.json {
        print_preview(&preview);
    }
    anyhow::ensure!(
        preview.promotable,
        "job {id} cannot be promoted: {}",
        preview.reasons.join("; ")
    );
    let (name, version) = (&preview.target.name, &preview.target.version);
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "error: refusing to promote job {id} to {name}@{version} without confirmation: pass --yes (or --dry-run to only preview)"
            );
            return Ok(usage_error());
        }
        eprint!("Write capability {name}@{version}? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not promoted");
            return Ok(ExitCode::from(1));
        }
    }
    // The previewed target, explicitly: what was confirmed is what gets written.
    let written = client
        .promote_job(org, ws, id, Some(name), Some(version))
        .await?;
    if opts.json {
        print_json(&written)?;
    } else {
        println!(
            "\npromoted job {id}: capability {}@{} (sha256 {})",
            written.name, written.version, written.sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code for a finished (or not) job: 0 only for completed.
fn exit_for(job: &Job) -> ExitCode {
    if job.status == JobStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Follows a job's events to its end, drawing a progress bar on a terminal.
pub async fn wait(
    opts: &GlobalOpts,
    client: &Client,
    id: &str,
    timeout: Option<u64>,
    print_logs: bool,
) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal && !opts.json {
        // A spinner until the job's budget is known: a bar of length 0 draws as full.
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    let with_bar = indicatif::ProgressStyle::with_template(
        "{spinner} {msg} [{bar:30}] {pos}/{len} metric calls",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    // Without a terminal (a log file, CI), one line each time the status or the best score
    // changes, so a long wait is not silent.
    let mut reported: Option<(JobStatus, Option<String>)> = None;
    let mut last: Option<Job> = None;
    let follow = client.follow_job(&opts.org, &opts.workspace, id, |ev| {
        match ev.event.as_str() {
            "snapshot" | "job" => {
                if let Ok(job) = serde_json::from_str::<Job>(&ev.data) {
                    let used = last_metric(&job, "metric_calls_used").unwrap_or(0.0) as u64;
                    let best = job.summary.best_score.map(|s| format!("{s:.3}"));
                    let shown = best.clone().unwrap_or_else(|| "-".into());
                    if let Some(bar) = &bar {
                        if let Some(len) = budget(&job).filter(|&b| b > 0) {
                            if bar.length() != Some(len) {
                                bar.set_style(with_bar.clone());
                                bar.set_length(len);
                            }
                        }
                        bar.set_position(used);
                        bar.set_message(format!("{} best {shown}", job.status.as_str()));
                    } else if !opts.json && !terminal && !print_logs {
                        let now = (job.status, best);
                        if reported.as_ref() != Some(&now) {
                            let of = budget(&job).map_or_else(String::new, |b| format!("/{b}"));
                            eprintln!(
                                "{}: {used}{of} metric calls, best {shown}",
                                job.status.as_str()
                            );
                            reported = Some(now);
                        }
                    }
                    let done = job.status.is_terminal();
                    last = Some(job);
                    // Waiting needs only the end state. Following logs needs every entry, and
                    // for a finished job the snapshot (already terminal) comes *before* its
                    // backlog of log events: the server ends the stream after the last one.
                    if done && !print_logs {
                        return Follow::Stop;
                    }
                }
            }
            "log" if print_logs => {
                if let Ok(log) = serde_json::from_str::<SequencedLog>(&ev.data) {
                    match &bar {
                        Some(bar) => bar.suspend(|| print_log(&log)),
                        // One JSON object per line, as `logs` without --follow prints them.
                        None if opts.json => {
                            if let Ok(line) = serde_json::to_string(&log) {
                                println!("{line}");
                            }
                        }
                        None => print_log(&log),
                    }
                }
            }
            _ => {}
        }
        Follow::Continue
    });
    let outcome = match timeout {
        Some(secs) => tokio::time::timeout(Duration::from_secs(secs), follow).await,
        None => Ok(follow.await),
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match outcome {
        Err(_) => {
            eprintln!(
                "error: timed out after {}s waiting for job {id}",
                timeout.unwrap_or(0)
            );
            Ok(ExitCode::from(1))
        }
        Ok(r) => {
            r?;
            // The stream ended: read the final record (the last event may have been a log).
            let job = client
                .job(&opts.org, &opts.workspace, id)
                .await
                .ok()
                .or(last)
                .context("the job vanished")?;
            // `logs --follow --json` is a stream of log lines only: a job object after them
            // would break line-by-line readers.
            if opts.json && !print_logs {
                print_json(&job)?;
            } else if !opts.json {
                print_job(&job);
            }
            if !job.status.is_terminal() {
                eprintln!("error: the event stream ended before job {id} finished");
                return Ok(ExitCode::from(1));
            }
            Ok(exit_for(&job))
        }
    }
}

/// Prints what the server noted about a job when it accepted it (a budget that covers only
/// the seed, settings stored but not implemented, no validation set): the job's first log
/// entries, written by gepard itself before any worker started it. Best effort: a job is
/// submitted whether or not its notes can be read.
async fn print_submission_notes(client: &Client, org: &str, ws: &str, id: &str) {
    let Ok(logs) = client.job_logs(org, ws, id, 0, 20).await else {
        return;
    };
    for log in logs
        .iter()
        .take_while(|l| l.entry.data["source"] == "gepard" && l.entry.message != "started")
    {
        eprintln!("note: {}", log.entry.message);
    }
}

/// What an attempt consumed, in words; `None` before it consumed anything.
fn usage_line(u: &gepard_core::model::JobUsage) -> Option<String> {
    let counted = |n: i64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    (u.metric_calls > 0 || u.model_calls > 0 || u.input_tokens > 0 || u.output_tokens > 0).then(
        || {
            format!(
                "{}, {}, {} input + {} output tokens",
                counted(u.metric_calls, "metric call"),
                counted(u.model_calls, "model call"),
                u.input_tokens,
                u.output_tokens
            )
        },
    )
}

/// A candidate's parents for a table cell: `-` for the seed, `3` for a mutation, `3+5` for a
/// merge (a runtime may report several; showing only the first hid where a merge came from).
fn parents_cell(parents: &Value) -> String {
    match parents.as_array() {
        Some(p) if !p.is_empty() => p
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("+"),
        _ => "-".to_owned(),
    }
}

/// What a candidate's instructions change from its parent's, for a one-line table cell:
/// children keep most of their parent's text, so the start of every candidate looks alike.
/// The text from the first difference (moved back to a word start) is shown after `…`;
/// a candidate without a parent shows its start.
fn change_from(parent: &str, text: &str) -> String {
    if !parent.is_empty() && parent == text {
        return "(the same text as its parent)".to_owned();
    }
    let common = parent
        .char_indices()
        .zip(text.char_indices())
        .find(|((_, a), (_, b))| a != b)
        .map_or_else(|| parent.len().min(text.len()), |((i, _), _)| i);
    // Back to the start of the word the difference is in, unless it begins at a word break.
    let at_break = text[common..].starts_with(char::is_whitespace)
        || text[..common].ends_with(char::is_whitespace);
    let start = if at_break {
        common
    } else {
        text[..common]
            .rfind(char::is_whitespace)
            .map_or(0, |i| i + 1)
    };
    let rest: String = text[start..]
        .trim_start()
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(70)
        .collect();
    if start == 0 {
        rest
    } else {
        format!("…{rest}")
    }
}

/// Runs a job subcommand.
pub async fn run(opts: &GlobalOpts, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    let client = opts.client();
    let (org, ws) = (opts.org.as_str(), opts.workspace.as_str());
    match cmd {
        JobCommand::Submit(a) => {
            let body = submit_body(&a, opts.project.as_deref())?;
            let (created, job) = client
                .create_job(org, ws, &body, a.idempotency_key.as_deref())
                .await?;
            if !a.wait {
                if opts.json {
                    print_json(&job)?;
                } else {
                    let how = if created {
                        "submitted"
                    } else {
                        "already submitted (same Idempotency-Key)"
                    };
                    println!("{how}: {}", describe(&job));
                    print_submission_notes(&client, org, ws, &job.id.to_string()).await;
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !opts.json {
                println!(
                    "submitted {}; following it (Ctrl-C stops watching, not the job)",
                    job.id
                );
            }
            wait(opts, &client, &job.id.to_string(), a.timeout, false).await
        }
        JobCommand::List {
            status,
            search,
            page,
            page_size,
        } => {
            let mut filters: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = status {
                filters.push(("status", s.as_str()));
            }
            if let Some(s) = search.as_deref() {
                filters.push(("search", s));
            }
            if let Some(p) = opts.project.as_deref() {
                filters.push(("project", p));
            }
            let page = client.list_jobs(org, ws, page, page_size, &filters).await?;
            if opts.json {
                print_json(&page)?;
            } else {
                for job in &page.items {
                    println!("{}", describe(job));
                }
                println!(
                    "({} of {}, page {})",
                    page.items.len(),
                    page.total,
                    page.page
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Get { id } => {
            let job = client.job(org, ws, &id).await?;
            if opts.json {
                print_json(&job)?;
            } else {
                print_job(&job);
                // A retried job's earlier attempts keep their own outcome; say what they were.
                if job.attempt > 1 {
                    for a in client.job_attempts(org, ws, &id).await? {
                        let best = a
                            .summary
                            .best_score
                            .map_or_else(|| "no result".to_owned(), |s| format!("best {s:.4}"));
                        let error = a.error.map(|e| format!(", error: {e}")).unwrap_or_default();
                        println!(
                            "earlier    attempt {}: {}, {best}, {} metric calls{error}",
                            a.attempt,
                            a.status.as_str(),
                            a.usage.metric_calls
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Wait { id, timeout } => wait(opts, &client, &id, timeout, false).await,
        JobCommand::Logs { id, follow } => {
            if follow {
                let code = wait(opts, &client, &id, None, true).await?;
                return Ok(code);
            }
            let mut after = 0;
            loop {
                let logs = client.job_logs(org, ws, &id, after, 1000).await?;
                for log in &logs {
                    if opts.json {
                        println!("{}", serde_json::to_string(log)?);
                    } else {
                        print_log(log);
                    }
                }
                match logs.last() {
                    Some(l) if logs.len() == 1000 => after = l.seq,
                    _ => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Candidates { id } => {
            let items = client.job_candidates(org, ws, &id).await?;
            if opts.json {
                print_json(&items)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:>5}  {:>7}  {:>7}  {:<8}  {:<4}  INSTRUCTIONS (… = as its first parent up to there)",
                "INDEX", "PARENTS", "SCORE", "FRONTIER", "BEST"
            );
            let text_of = |index: &Value| {
                items
                    .iter()
                    .find(|c| &c["index"] == index)
                    .and_then(|c| c["instructions"].as_str())
            };
            for c in &items {
                let first_parent = c["parents"].as_array().and_then(|p| p.first());
                let parents = parents_cell(&c["parents"]);
                let first = change_from(
                    first_parent.and_then(text_of).unwrap_or(""),
                    c["instructions"].as_str().unwrap_or(""),
                );
                let frontier = if c["on_frontier"].as_bool() == Some(true) {
                    "*"
                } else {
                    ""
                };
                let best = if c["best"].as_bool() == Some(true) {
                    "*"
                } else {
                    ""
                };
                let score = score(c["val_score"].as_f64());
                // As text first: a JSON value's Display ignores width, which misaligned rows.
                let index = c["index"].to_string();
                println!("{index:>5}  {parents:>7}  {score:>7}  {frontier:<8}  {best:<4}  {first}");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Artifacts { id } => {
            print_json(&client.job_artifacts(org, ws, &id).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Cancel { id, yes } => {
            if !yes {
                if !std::io::stdin().is_terminal() {
                    eprintln!(
                        "error: refusing to cancel job {id} without confirmation: pass --yes"
                    );
                    return Ok(usage_error());
                }
                eprint!("Cancel job {id}? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    eprintln!("not cancelled");
                    return Ok(ExitCode::from(1));
                }
            }
            let job = client.cancel_job(org, ws, &id).await?;
            if opts.json {
                print_json(&job)?;
            } else if job.status == JobStatus::Cancelled {
                println!("cancelled {}", job.id);
            } else {
                println!(
                    "cancel requested for {}; it stops when its runtime does",
                    job.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Promote {
            id,
            name,
            version,
            dry_run,
            yes,
        } => {
            promote(
                opts,
                &client,
                &id,
                (name.as_deref(), version.as_deref()),
                dry_run,
                yes,
            )
            .await
        }
        JobCommand::Retry { id } => {
            let job = client.retry_job(org, ws, &id).await?;
            if opts.json {
                print_json(&job)?;
            } else {
                println!("queued attempt {} of {}", job.attempt, job.id);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{change_from, parents_cell, usage_line};
    use serde_json::Value;

    #[test]
    fn the_usage_line_appears_once_anything_was_consumed_and_counts_in_words() {
        let mut u = gepard_core::model::JobUsage::default();
        assert_eq!(usage_line(&u), None);
        u.metric_calls = 30;
        assert_eq!(
            usage_line(&u).as_deref(),
            Some("30 metric calls, 0 model calls, 0 input + 0 output tokens")
        );
        u.metric_calls = 1;
        u.model_calls = 1;
        assert_eq!(
            usage_line(&u).as_deref(),
            Some("1 metric call, 1 model call, 0 input + 0 output tokens")
        );
    }

    #[test]
    fn a_candidate_row_names_every_parent_of_a_merge() {
        assert_eq!(parents_cell(&serde_json::json!([])), "-");
        assert_eq!(parents_cell(&Value::Null), "-");
        assert_eq!(parents_cell(&serde_json::json!([3])), "3");
        assert_eq!(parents_cell(&serde_json::json!([3, 5])), "3+5");
    }

    #[test]
    fn a_candidate_cell_shows_what_it_changes_from_its_parent() {
        let seed = "Classify the sentiment of the text.";
        assert_eq!(change_from("", seed), seed);
        assert_eq!(
            change_from(
                seed,
                "Classify the sentiment of the text. Answer in one word."
            ),
            "…Answer in one word."
        );
        // A rewrite in the middle starts at the changed word.
        assert_eq!(
            change_from(seed, "Classify the overall sentiment of the text."),
            "…overall sentiment of the text."
        );
        assert_eq!(change_from(seed, seed), "(the same text as its parent)");
    }
}
