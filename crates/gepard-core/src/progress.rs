//! Progress events (the `POST …/progress` body and the JSON lines a sandbox writes) and the one
//! pure function, [`apply`], that turns an event into what the store must write.
//!
//! The HTTP handler and the worker both call [`apply`], so an event means the same thing
//! whichever way it arrives. [`apply`] validates the event, asks [`job::decide`] whether the job
//! may take it, and computes the patched summary, the log entry, the metric points to append,
//! the merged artifacts and the job error. It never reads a clock: the caller passes `now`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::job::{self, JobCommand, JobState, ProgressKind, Transition, TransitionError};
use crate::model::FieldError;

/// Longest `message` (and `error`) a progress event may carry, in bytes: enough for a long
/// stack trace, small enough that one chatty runner cannot bloat the log table.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Most metric points one report may carry. The engine's reports carry a handful each; the
/// limit keeps one report from holding the database's write lock for seconds.
pub const MAX_METRIC_POINTS_PER_REPORT: usize = 1_000;

/// Most metric points an outside runtime may write into one attempt of a job. Every read of
/// the job (and of the job list) carries its series, so an unbounded series would slow the
/// workspace for everyone. gepard's own runner is not held to it: it writes a few points per
/// iteration, and budgets the API accepts can take a long run past it.
pub const MAX_METRIC_POINTS_PER_ATTEMPT: usize = 100_000;

/// Metric series gepard charts (API.md "Metric series names").
pub const METRIC_NAMES: [&str; 10] = [
    "val_score",
    "accepted_score",
    "rejected_score",
    // Training (minibatch) means of each iteration's parent and child, skipped ones included.
    "train_parent_score",
    "train_child_score",
    "best_score",
    "frontier_best_score",
    "frontier_size",
    "metric_calls_used",
    "metric_calls_remaining",
];

/// Whether `v` is a score: a number from 0 to 1. Rewards are in [0, 1] (every recipe scores
/// so, and `config.perfect_score` is at most 1), so a validation score or its subscores
/// outside that range is a runtime's bug, which would otherwise be stored and shown in the
/// promotion preview as if it were a result.
fn is_score(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))
}

/// Prefix of runtime-defined metric series, accepted besides [`METRIC_NAMES`]. Unknown names
/// without it are refused so a typo (`val_scor`) is a 422 rather than a silently empty chart.
pub const CUSTOM_METRIC_PREFIX: &str = "x_";

/// What a progress event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgressEventType {
    /// The runtime saved a checkpoint (the run can resume from here).
    RuntimeCheckpoint,
    /// The optimization started (sizes, seed score).
    OptimizationStart,
    /// A GEPA iteration started.
    IterationStart,
    /// A proposed candidate beat its parent on the minibatch and was kept.
    CandidateAccepted,
    /// A proposed candidate was discarded.
    CandidateRejected,
    /// A candidate was scored on the validation set.
    ValsetEvaluated,
    /// The metric-call budget changed.
    BudgetUpdated,
    /// The Pareto frontier changed.
    ParetoFrontUpdated,
    /// The run failed (terminal: the job becomes `failed`).
    OptimizationError,
    /// The run finished (terminal: the job becomes `completed`).
    OptimizationEnd,
}

impl ProgressEventType {
    /// Every event type.
    pub const ALL: [ProgressEventType; 10] = [
        Self::RuntimeCheckpoint,
        Self::OptimizationStart,
        Self::IterationStart,
        Self::CandidateAccepted,
        Self::CandidateRejected,
        Self::ValsetEvaluated,
        Self::BudgetUpdated,
        Self::ParetoFrontUpdated,
        Self::OptimizationError,
        Self::OptimizationEnd,
    ];

    /// The event type as sent (`iteration_start`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RuntimeCheckpoint => "runtime_checkpoint",
            Self::OptimizationStart => "optimization_start",
            Self::IterationStart => "iteration_start",
            Self::CandidateAccepted => "candidate_accepted",
            Self::CandidateRejected => "candidate_rejected",
            Self::ValsetEvaluated => "valset_evaluated",
            Self::BudgetUpdated => "budget_updated",
            Self::ParetoFrontUpdated => "pareto_front_updated",
            Self::OptimizationError => "optimization_error",
            Self::OptimizationEnd => "optimization_end",
        }
    }

    /// The event type in words (`iteration start`): the log message of an event without one.
    pub fn words(self) -> String {
        self.as_str().replace('_', " ")
    }

    /// What the event does to the job's lifecycle.
    pub fn kind(self) -> ProgressKind {
        match self {
            Self::OptimizationEnd => ProgressKind::End,
            Self::OptimizationError => ProgressKind::Error,
            _ => ProgressKind::Update,
        }
    }

    /// Whether the event ends the run.
    pub fn is_terminal(self) -> bool {
        self.kind() != ProgressKind::Update
    }
}

impl fmt::Display for ProgressEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a progress event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown progress event type `{0}`; expected one of runtime_checkpoint, optimization_start, iteration_start, candidate_accepted, candidate_rejected, valset_evaluated, budget_updated, pareto_front_updated, optimization_error, optimization_end")]
pub struct UnknownEventType(pub String);

impl FromStr for ProgressEventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// Severity of a log entry.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Detail for debugging a runtime.
    Debug,
    /// Normal progress (the default).
    #[default]
    Info,
    /// Something worth a look that did not stop the run. `warn` is accepted as well, since
    /// Python's logging spells it that way.
    #[serde(alias = "warn")]
    Warning,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The level as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One point of a metric series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricPoint {
    /// The value; must be finite.
    pub value: f64,
    /// Position on the x axis (iteration or metric calls used); must not be negative.
    pub step: i64,
    /// When it was measured; [`apply`] fills in the receive time when missing.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

/// A progress event: the `POST …/progress` body and one JSON line of a sandbox's stdout.
///
/// Every field but `event_type` is optional: clients send what they have, often `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProgressEvent {
    /// What happened.
    pub event_type: ProgressEventType,
    /// Log message; defaults to the event type in words.
    #[serde(default)]
    pub message: Option<String>,
    /// Log level (default `info`; `optimization_error` is logged at least at `error`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub level: LogLevel,
    /// GEPA iteration the event belongs to.
    #[serde(default)]
    pub iteration: Option<i64>,
    /// A partial [`JobSummary`]: non-null fields replace, unknown keys go to `metadata`. Its
    /// scores (`best_score`, `seed_score`, `best_scores`) must be from 0 to 1.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub summary: Option<Value>,
    /// Metric points to append, by series name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metrics: BTreeMap<String, Vec<MetricPoint>>,
    /// Event-specific detail (an object); kept in the log entry.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Value,
    /// Artifacts to merge into the job's (terminal events only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub artifacts: Option<Value>,
    /// Why the run failed (`optimization_error`: becomes the job's `error`; other events: kept
    /// in the log entry only).
    #[serde(default)]
    pub error: Option<String>,
    /// The job attempt the report is about (gepard's extension for outside runtimes: the
    /// `attempt` of the job their first report claimed). A report naming another attempt is
    /// refused (409), so a runtime that lost the job cannot write into a later run.
    #[serde(default)]
    pub attempt: Option<i64>,
    /// A candidate evaluated on the validation set, for the job's candidate table (`GET
    /// …/candidates`: lineage and frontier): `{index, instructions, parents?, val_score?,
    /// val_subscores?, iteration?, discovered_at_metric_calls?}`, its scores from 0 to 1.
    /// gepard's extension for outside runtimes; gepard's own runner records its candidates
    /// itself.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub candidate: Option<Value>,
    /// The attempt's usage so far, as totals that replace the job's `usage`. gepard's
    /// extension for outside runtimes, like `candidate`.
    #[serde(default)]
    pub usage: Option<crate::model::JobUsage>,
}

/// Reads `null` as the type's default, because clients send every optional field, often as
/// `null`, and `null` means "use the default".
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ProgressEvent {
    /// An event of `event_type` with every other field empty.
    pub fn new(event_type: ProgressEventType) -> Self {
        Self {
            event_type,
            message: None,
            level: LogLevel::default(),
            iteration: None,
            summary: None,
            metrics: BTreeMap::new(),
            data: Value::Null,
            artifacts: None,
            error: None,
            attempt: None,
            candidate: None,
            usage: None,
        }
    }

    /// Checks what serde cannot: metric names and values, the summary's shape and field types,
    /// where artifacts may appear, and sizes. Every problem is reported (not just the first),
    /// each as a 422 [`FieldError`] whose `loc` starts with `"body"`.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut fail = |loc: &[&str], msg: String| {
            errors.push(FieldError {
                loc: std::iter::once("body")
                    .chain(loc.iter().copied())
                    .map(str::to_owned)
                    .collect(),
                msg,
                kind: "value_error".to_owned(),
            });
        };

        for (field, text) in [("message", &self.message), ("error", &self.error)] {
            if let Some(text) = text {
                if text.len() > MAX_MESSAGE_BYTES {
                    fail(
                        &[field],
                        format!(
                            "{field} is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
                            text.len()
                        ),
                    );
                }
            }
        }

        if matches!(self.iteration, Some(i) if i < 0) {
            fail(&["iteration"], "iteration must not be negative".to_owned());
        }
        if matches!(self.attempt, Some(a) if a < 1) {
            fail(&["attempt"], "attempt must be 1 or more".to_owned());
        }
        if let Some(usage) = &self.usage {
            for (field, n) in [
                ("metric_calls", usage.metric_calls),
                ("model_calls", usage.model_calls),
                ("input_tokens", usage.input_tokens),
                ("output_tokens", usage.output_tokens),
            ] {
                if n < 0 {
                    fail(
                        &["usage", field],
                        format!("usage.{field} must not be negative"),
                    );
                }
            }
        }
        if let Some(candidate) = &self.candidate {
            for (field, msg) in candidate_problems(candidate) {
                let loc: Vec<&str> = std::iter::once("candidate").chain(field).collect();
                fail(&loc, msg);
            }
        }

        let points: usize = self.metrics.values().map(Vec::len).sum();
        if points > MAX_METRIC_POINTS_PER_REPORT {
            fail(
                &["metrics"],
                format!(
                    "a report may carry at most {MAX_METRIC_POINTS_PER_REPORT} metric points; this one has {points} (send them in several reports)"
                ),
            );
        }
        for (name, points) in &self.metrics {
            if !is_known_metric(name) {
                fail(
                    &["metrics", name],
                    format!(
                        "unknown metric `{name}`; expected one of {} or a name starting with `{CUSTOM_METRIC_PREFIX}`",
                        METRIC_NAMES.join(", ")
                    ),
                );
            }
            for (i, point) in points.iter().enumerate() {
                let index = i.to_string();
                if !point.value.is_finite() {
                    fail(
                        &["metrics", name, &index, "value"],
                        "metric values must be finite numbers".to_owned(),
                    );
                }
                if point.step < 0 {
                    fail(
                        &["metrics", name, &index, "step"],
                        "metric steps must not be negative".to_owned(),
                    );
                }
                // Stored as RFC 3339 text, which has four-digit years: a point outside them
                // would be written but could never be read back (the job would stop loading).
                if point
                    .timestamp
                    .is_some_and(|t| !(1..=9999).contains(&chrono::Datelike::year(&t)))
                {
                    fail(
                        &["metrics", name, &index, "timestamp"],
                        "metric timestamps must fall within the years 1 to 9999".to_owned(),
                    );
                }
            }
        }

        if !(self.data.is_null() || self.data.is_object()) {
            fail(&["data"], "data must be an object".to_owned());
        }

        match &self.summary {
            None | Some(Value::Null) => {}
            Some(Value::Object(patch)) => {
                for (key, value) in patch {
                    if let Some(expected) = summary_type_problem(key, value) {
                        fail(
                            &["summary", key],
                            format!("summary.{key} must be {expected}"),
                        );
                    }
                }
            }
            Some(_) => fail(&["summary"], "summary must be an object".to_owned()),
        }

        match &self.artifacts {
            None | Some(Value::Null) => {}
            Some(_) if !self.event_type.is_terminal() => fail(
                &["artifacts"],
                format!(
                    "artifacts are accepted only with optimization_end or optimization_error, not {}",
                    self.event_type
                ),
            ),
            Some(Value::Object(_)) => {}
            Some(_) => fail(&["artifacts"], "artifacts must be an object".to_owned()),
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn is_known_metric(name: &str) -> bool {
    METRIC_NAMES.contains(&name)
        || (name.len() > CUSTOM_METRIC_PREFIX.len()
            && name.len() <= 64
            && name.starts_with(CUSTOM_METRIC_PREFIX)
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// What is wrong with a reported candidate: the field (none for the whole value) and why.
fn candidate_problems(candidate: &Value) -> Vec<(Option<&'static str>, String)> {
    let Some(c) = candidate.as_object() else {
        return vec![(None, "candidate must be an object".to_owned())];
    };
    let count = |v: &Value| v.as_i64().is_some_and(|n| n >= 0);
    let mut problems = Vec::new();
    let mut check = |field: &'static str, required: bool, ok: bool, what: &str| match c.get(field) {
        None | Some(Value::Null) if required => {
            problems.push((
                Some(field),
                format!("candidate.{field} is required ({what})"),
            ));
        }
        None | Some(Value::Null) => {}
        Some(_) if ok => {}
        Some(_) => problems.push((Some(field), format!("candidate.{field} must be {what}"))),
    };
    check(
        "index",
        true,
        c.get("index").is_some_and(count),
        "a non-negative integer",
    );
    check(
        "instructions",
        true,
        c.get("instructions").is_some_and(Value::is_string),
        "a string",
    );
    check(
        "val_score",
        false,
        c.get("val_score").is_some_and(is_score),
        "a number from 0 to 1",
    );
    check(
        "val_subscores",
        false,
        c.get("val_subscores")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(is_score)),
        "an array of numbers from 0 to 1",
    );
    check(
        "parents",
        false,
        c.get("parents")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().all(count)),
        "an array of earlier candidates' indexes",
    );
    for field in ["iteration", "discovered_at_metric_calls"] {
        check(
            field,
            false,
            c.get(field).is_some_and(count),
            "a non-negative integer",
        );
    }
    if let Some(problem) = parents_problem(c) {
        problems.push((Some("parents"), problem));
    }
    problems
}

/// What is wrong with well-typed `parents` of a candidate. Candidates are numbered in the
/// order they were found, so a parent always has a lower index than its child: a check that
/// needs no other report (reports may arrive in any order), and catches a candidate named as
/// its own parent. A parent named twice would make a merge of one candidate with itself.
fn parents_problem(c: &Map<String, Value>) -> Option<String> {
    let index = c.get("index")?.as_i64()?;
    let parents: Vec<i64> = c
        .get("parents")?
        .as_array()?
        .iter()
        .map(Value::as_i64)
        .collect::<Option<_>>()?;
    if let Some(p) = parents.iter().find(|p| **p >= index) {
        return Some(format!(
            "candidate.parents names {p}, but a parent is found before its child and so has \
             a lower index than this candidate's {index}"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    parents
        .iter()
        .find(|p| !seen.insert(**p))
        .map(|p| format!("candidate.parents names {p} twice"))
}

/// For a summary patch entry, what its value should have been, or `None` when it is fine.
/// `null` is always fine (it means "no change"); unknown keys take anything (they go to
/// `metadata`).
fn summary_type_problem(key: &str, value: &Value) -> Option<&'static str> {
    if value.is_null() {
        return None;
    }
    let ok = match key {
        // Clients of the Dreadnode API read these as `{str: str}` and `{str: float}`. A
        // candidate is component → text, and `instructions` is the component gepard optimizes
        // and promotes: a best candidate without it could never be promoted.
        "best_candidate" => value.as_object().is_some_and(|m| {
            m.values().all(Value::is_string) && m.get("instructions").is_some_and(Value::is_string)
        }),
        "best_scores" => value.as_object().is_some_and(|m| m.values().all(is_score)),
        "metadata" => value.is_object(),
        "best_score" | "seed_score" => is_score(value),
        "objective" => value.is_string(),
        "train_size" | "val_size" | "frontier_size" => value.as_i64().is_some_and(|n| n >= 0),
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match key {
        "best_candidate" => "an object of strings with `instructions`",
        "best_scores" => "an object of numbers from 0 to 1",
        "metadata" => "an object",
        "best_score" | "seed_score" => "a number from 0 to 1",
        "objective" => "a string",
        _ => "a non-negative integer",
    })
}

/// The job's summary (`job.summary`): the best result so far and the run's sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct JobSummary {
    /// The best candidate, e.g. `{"instructions": "..."}`.
    #[schema(value_type = Option<Object>)]
    pub best_candidate: Option<Value>,
    /// Its aggregate validation score, from 0 to 1.
    pub best_score: Option<f64>,
    /// Its per-example (or per-objective) validation scores, each 0 to 1 (`{}` until known).
    #[schema(value_type = Object)]
    #[serde(serialize_with = "empty_object_if_none")]
    pub best_scores: Option<Value>,
    /// What the run optimizes for, in words.
    pub objective: Option<String>,
    /// Training rows.
    #[serde(serialize_with = "zero_if_none")]
    #[schema(value_type = i64, default = 0)]
    pub train_size: Option<i64>,
    /// Validation rows.
    #[serde(serialize_with = "zero_if_none")]
    #[schema(value_type = i64, default = 0)]
    pub val_size: Option<i64>,
    /// Candidates on the Pareto frontier.
    #[serde(serialize_with = "zero_if_none")]
    #[schema(value_type = i64, default = 0)]
    pub frontier_size: Option<i64>,
    /// Validation score of the seed (unoptimized) candidate, from 0 to 1: the baseline to beat.
    pub seed_score: Option<f64>,
    /// Anything else runtimes reported (an object).
    #[schema(value_type = Object)]
    pub metadata: Value,
}

/// Existing clients of the Dreadnode API read `best_scores` as an object and the sizes as
/// integers and fail on `null`, so unknown values are served as `{}` and `0`.
fn empty_object_if_none<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.serialize(s),
        None => Map::new().serialize(s),
    }
}

/// See [`empty_object_if_none`].
fn zero_if_none<S: serde::Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    v.unwrap_or(0).serialize(s)
}

impl Default for JobSummary {
    fn default() -> Self {
        Self {
            best_candidate: None,
            best_score: None,
            best_scores: None,
            objective: None,
            train_size: None,
            val_size: None,
            frontier_size: None,
            seed_score: None,
            metadata: Value::Object(Map::new()),
        }
    }
}

impl JobSummary {
    /// Applies a partial summary: non-null fields replace, `null` changes nothing, unknown keys
    /// go into `metadata`, and a `metadata` object is merged key by key (same null rule).
    ///
    /// A patch that is not an object changes nothing, and a known field of the wrong type is
    /// skipped: [`ProgressEvent::validate`] reports both, so this only has to be safe.
    pub fn apply_patch(&mut self, patch: &Value) {
        let Value::Object(patch) = patch else { return };
        for (key, value) in patch {
            if value.is_null() || summary_type_problem(key, value).is_some() {
                continue;
            }
            match key.as_str() {
                "best_candidate" => self.best_candidate = Some(value.clone()),
                "best_score" => self.best_score = value.as_f64(),
                "best_scores" => self.best_scores = Some(value.clone()),
                "objective" => self.objective = value.as_str().map(str::to_owned),
                "train_size" => self.train_size = value.as_i64(),
                "val_size" => self.val_size = value.as_i64(),
                "frontier_size" => self.frontier_size = value.as_i64(),
                "seed_score" => self.seed_score = value.as_f64(),
                "metadata" => {
                    if let Value::Object(entries) = value {
                        for (k, v) in entries.iter().filter(|(_, v)| !v.is_null()) {
                            self.metadata_mut().insert(k.clone(), v.clone());
                        }
                    }
                }
                _ => {
                    self.metadata_mut().insert(key.clone(), value.clone());
                }
            }
        }
    }

    /// `metadata` as a map, repairing a non-object value (from an old record) to `{}`.
    fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        if !self.metadata.is_object() {
            self.metadata = Value::Object(Map::new());
        }
        match &mut self.metadata {
            Value::Object(map) => map,
            _ => unreachable!("metadata was just made an object"),
        }
    }
}

/// One job log entry, as `GET …/logs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogEntry {
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
    /// Severity.
    pub level: LogLevel,
    /// The message.
    pub message: String,
    /// Structured detail (an object).
    #[schema(value_type = Object)]
    pub data: Value,
}

/// Everything a store writes for one accepted progress event.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressOutcome {
    /// The lifecycle transition (from [`job::decide`] with the event's [`ProgressKind`]).
    pub transition: Transition,
    /// The summary after the event's patch (unchanged when it had none).
    pub summary: JobSummary,
    /// The log entry to append.
    pub log: LogEntry,
    /// Metric points to append, in series-name then event order, timestamps filled in.
    pub metrics: Vec<(String, MetricPoint)>,
    /// The job's artifacts after the merge; `None` means "leave them as they are" (non-terminal
    /// event, or a terminal event without artifacts).
    pub artifacts: Option<Value>,
    /// The job's `error` to set; `None` means "leave it" (only `optimization_error` sets it).
    pub error: Option<String>,
}

/// Why a progress event was not applied. Either way nothing changes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProgressError {
    /// The event is malformed (422 with these field errors).
    #[error("the progress event is invalid: {}", .0.iter().map(|e| e.msg.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The job cannot take progress now, e.g. it is already finished (409).
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Error recorded when a run reports `optimization_error` without saying why.
pub const GENERIC_RUN_ERROR: &str = "the optimization failed without reporting an error";

/// Who reports a progress event, which decides the [`JobCommand`] it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// gepard's own runner, through the worker that holds the job.
    Runner,
    /// An outside runtime, through `POST …/progress` with a `runner` key.
    Runtime,
}

/// Applies one progress event to a job, purely: returns what to write, or why nothing may be.
///
/// Validation comes first (a malformed event is a 422 whatever the job's state), then the
/// lifecycle check (a job that is not running refuses every event with a 409).
pub fn apply(
    state: &JobState,
    current_summary: &JobSummary,
    current_artifacts: &Value,
    event: &ProgressEvent,
    reporter: Reporter,
    now: DateTime<Utc>,
) -> Result<ProgressOutcome, ProgressError> {
    event.validate().map_err(ProgressError::Invalid)?;
    let kind = event.event_type.kind();
    let command = match reporter {
        Reporter::Runner => JobCommand::Progress(kind),
        Reporter::Runtime => JobCommand::RuntimeProgress(kind),
    };
    let transition = job::decide(state, &command)?;

    let mut summary = current_summary.clone();
    if let Some(patch) = &event.summary {
        summary.apply_patch(patch);
    }

    let metrics = event
        .metrics
        .iter()
        .flat_map(|(name, points)| {
            points.iter().map(move |p| {
                (
                    name.clone(),
                    MetricPoint {
                        timestamp: Some(p.timestamp.unwrap_or(now)),
                        ..*p
                    },
                )
            })
        })
        .collect();

    // Shallow merge, same null rule as the summary: a terminal event adds or replaces top-level
    // keys and never silently drops what an earlier report stored.
    let artifacts = match &event.artifacts {
        Some(Value::Object(new)) if kind != ProgressKind::Update => {
            let mut merged = match current_artifacts {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            for (k, v) in new.iter().filter(|(_, v)| !v.is_null()) {
                merged.insert(k.clone(), v.clone());
            }
            Some(Value::Object(merged))
        }
        _ => None,
    };

    let error = (kind == ProgressKind::Error).then(|| {
        event
            .error
            .clone()
            .or_else(|| event.message.clone())
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| GENERIC_RUN_ERROR.to_owned())
    });

    // The log entry's data is nested rather than flattened so that runtime-defined keys in
    // `data` can never collide with (or spoof) the fields gepard adds.
    let mut data = Map::new();
    data.insert("event_type".into(), event.event_type.as_str().into());
    if let Some(iteration) = event.iteration {
        data.insert("iteration".into(), iteration.into());
    }
    if !event.data.is_null() {
        data.insert("data".into(), event.data.clone());
    }
    if let Some(e) = &event.error {
        data.insert("error".into(), e.clone().into());
    }
    let level = if kind == ProgressKind::Error {
        event.level.max(LogLevel::Error)
    } else {
        event.level
    };
    let log = LogEntry {
        timestamp: now,
        level,
        message: event
            .message
            .clone()
            .unwrap_or_else(|| event.event_type.words()),
        data: Value::Object(data),
    };

    Ok(ProgressOutcome {
        transition,
        summary,
        log,
        metrics,
        artifacts,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobStatus;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn running() -> JobState {
        JobState {
            status: JobStatus::Running,
            cancel_requested: false,
            attempt: 1,
        }
    }

    fn event(v: Value) -> ProgressEvent {
        serde_json::from_value(v).unwrap()
    }

    fn apply_ok(e: &ProgressEvent) -> ProgressOutcome {
        apply(
            &running(),
            &JobSummary::default(),
            &json!({}),
            e,
            Reporter::Runner,
            now(),
        )
        .unwrap()
    }

    fn invalid(e: &ProgressEvent) -> Vec<FieldError> {
        e.validate().unwrap_err()
    }

    #[test]
    fn event_types_round_trip_and_know_their_kind() {
        for t in ProgressEventType::ALL {
            assert_eq!(t.as_str().parse::<ProgressEventType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(ProgressEventType::OptimizationEnd.kind(), ProgressKind::End);
        assert_eq!(
            ProgressEventType::OptimizationError.kind(),
            ProgressKind::Error
        );
        assert_eq!(
            ProgressEventType::ParetoFrontUpdated.kind(),
            ProgressKind::Update
        );
        assert!("done"
            .parse::<ProgressEventType>()
            .unwrap_err()
            .to_string()
            .contains("optimization_end"));
    }

    #[test]
    fn a_bare_event_type_is_a_whole_event_and_nulls_mean_defaults() {
        let bare = event(json!({"event_type": "iteration_start"}));
        assert_eq!(bare, ProgressEvent::new(ProgressEventType::IterationStart));
        let nulls = event(json!({
            "event_type": "iteration_start", "message": null, "level": null, "iteration": null,
            "summary": null, "metrics": null, "data": null, "artifacts": null, "error": null
        }));
        assert_eq!(nulls, bare);
        assert_eq!(nulls.level, LogLevel::Info);
        assert!(bare.validate().is_ok());
    }

    #[test]
    fn log_levels_parse_including_pythons_warn() {
        let e = event(json!({"event_type": "budget_updated", "level": "warn"}));
        assert_eq!(e.level, LogLevel::Warning);
        assert!(LogLevel::Debug < LogLevel::Error);
    }

    #[test]
    fn an_update_keeps_the_job_running_and_logs_the_event_type_in_words() {
        let out = apply_ok(&event(
            json!({"event_type": "iteration_start", "iteration": 3}),
        ));
        assert_eq!(out.transition.to, running());
        assert_eq!(out.log.message, "iteration start");
        assert_eq!(out.log.level, LogLevel::Info);
        assert_eq!(out.log.timestamp, now());
        assert_eq!(
            out.log.data,
            json!({"event_type": "iteration_start", "iteration": 3})
        );
        assert_eq!(out.artifacts, None);
        assert_eq!(out.error, None);
        assert_eq!(out.summary, JobSummary::default());
    }

    #[test]
    fn the_log_entry_keeps_the_message_level_and_data_nested() {
        let out = apply_ok(&event(json!({
            "event_type": "candidate_rejected", "message": "worse on minibatch",
            "level": "debug", "data": {"event_type": "spoof", "score": 0.2}
        })));
        assert_eq!(out.log.message, "worse on minibatch");
        assert_eq!(out.log.level, LogLevel::Debug);
        assert_eq!(
            out.log.data,
            json!({"event_type": "candidate_rejected", "data": {"event_type": "spoof", "score": 0.2}})
        );
    }

    #[test]
    fn summary_patches_replace_non_null_fields_and_leave_the_rest() {
        let mut current = JobSummary {
            best_score: Some(0.5),
            objective: Some("accuracy".into()),
            train_size: Some(10),
            ..JobSummary::default()
        };
        current.apply_patch(&json!({
            "best_score": 0.75, "objective": null, "best_candidate": {"instructions": "Be terse."},
            "val_size": 4
        }));
        assert_eq!(current.best_score, Some(0.75));
        assert_eq!(
            current.objective.as_deref(),
            Some("accuracy"),
            "null does not replace"
        );
        assert_eq!(current.train_size, Some(10), "absent does not replace");
        assert_eq!(current.val_size, Some(4));
        assert_eq!(
            current.best_candidate,
            Some(json!({"instructions": "Be terse."}))
        );
    }

    #[test]
    fn unknown_summary_keys_go_into_metadata_and_metadata_merges() {
        let mut s = JobSummary::default();
        s.apply_patch(&json!({"iterations": 4, "metadata": {"seed": 1, "gone": null}}));
        s.apply_patch(&json!({"metadata": {"proposer": "rules"}, "iterations": null}));
        assert_eq!(
            s.metadata,
            json!({"iterations": 4, "seed": 1, "proposer": "rules"})
        );
    }

    #[test]
    fn a_summary_patch_that_is_not_an_object_or_is_ill_typed_changes_nothing() {
        let mut s = JobSummary::default();
        s.apply_patch(&json!([1, 2]));
        s.apply_patch(&json!({"best_score": "high", "train_size": -1}));
        assert_eq!(s, JobSummary::default());
    }

    #[test]
    fn the_event_summary_is_applied_to_the_current_summary() {
        let current = JobSummary {
            seed_score: Some(0.1),
            ..JobSummary::default()
        };
        let e = event(json!({"event_type": "valset_evaluated", "summary": {"best_score": 0.9}}));
        let out = apply(
            &running(),
            &current,
            &Value::Null,
            &e,
            Reporter::Runner,
            now(),
        )
        .unwrap();
        assert_eq!(out.summary.seed_score, Some(0.1));
        assert_eq!(out.summary.best_score, Some(0.9));
    }

    #[test]
    fn summaries_serialize_every_field_and_read_back_from_partial_json() {
        let s: JobSummary = serde_json::from_value(json!({"best_score": 1.0})).unwrap();
        assert_eq!(s.metadata, json!({}));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["best_candidate"], Value::Null);
        assert_eq!(v["best_score"], json!(1.0));
    }

    #[test]
    fn metric_points_are_appended_with_missing_timestamps_set_to_now() {
        let earlier = now() - chrono::Duration::seconds(5);
        let e = event(json!({"event_type": "valset_evaluated", "metrics": {
            "val_score": [{"value": 0.5, "step": 1}, {"value": 0.6, "step": 2, "timestamp": earlier}],
            "best_score": [{"value": 0.6, "step": 2}]
        }}));
        let out = apply_ok(&e);
        assert_eq!(
            out.metrics,
            vec![
                (
                    "best_score".to_owned(),
                    MetricPoint {
                        value: 0.6,
                        step: 2,
                        timestamp: Some(now())
                    }
                ),
                (
                    "val_score".to_owned(),
                    MetricPoint {
                        value: 0.5,
                        step: 1,
                        timestamp: Some(now())
                    }
                ),
                (
                    "val_score".to_owned(),
                    MetricPoint {
                        value: 0.6,
                        step: 2,
                        timestamp: Some(earlier)
                    }
                ),
            ]
        );
    }

    #[test]
    fn optimization_end_completes_the_job_and_merges_artifacts() {
        let e = event(json!({"event_type": "optimization_end",
            "artifacts": {"best_instructions": "Be terse.", "report": null}}));
        let current = json!({"report": "kept", "old": 1});
        let out = apply(
            &running(),
            &JobSummary::default(),
            &current,
            &e,
            Reporter::Runner,
            now(),
        )
        .unwrap();
        assert_eq!(out.transition.to.status, JobStatus::Completed);
        assert_eq!(
            out.artifacts,
            Some(json!({"report": "kept", "old": 1, "best_instructions": "Be terse."}))
        );
        assert_eq!(out.error, None);
        assert_eq!(out.log.message, "optimization end");
    }

    #[test]
    fn a_terminal_event_without_artifacts_leaves_them_alone() {
        let out = apply_ok(&event(json!({"event_type": "optimization_end"})));
        assert_eq!(out.artifacts, None);
    }

    #[test]
    fn artifacts_on_a_non_terminal_event_are_refused() {
        let e = event(json!({"event_type": "iteration_start", "artifacts": {"a": 1}}));
        let errs = invalid(&e);
        assert_eq!(errs[0].loc, ["body", "artifacts"]);
        assert!(errs[0].msg.contains("only with optimization_end"));
        assert!(matches!(
            apply(
                &running(),
                &JobSummary::default(),
                &json!({}),
                &e,
                Reporter::Runner,
                now()
            ),
            Err(ProgressError::Invalid(_))
        ));
    }

    #[test]
    fn optimization_error_fails_the_job_with_its_error() {
        let out = apply_ok(&event(json!({"event_type": "optimization_error",
            "error": "model returned 401", "message": "stopping"})));
        assert_eq!(out.transition.to.status, JobStatus::Failed);
        assert_eq!(out.error.as_deref(), Some("model returned 401"));
        assert_eq!(out.log.level, LogLevel::Error);
        assert_eq!(out.log.message, "stopping");
    }

    #[test]
    fn optimization_error_falls_back_to_its_message_then_a_generic_error() {
        let out = apply_ok(&event(
            json!({"event_type": "optimization_error", "message": "boom"}),
        ));
        assert_eq!(out.error.as_deref(), Some("boom"));
        let out = apply_ok(&event(
            json!({"event_type": "optimization_error", "error": " "}),
        ));
        assert_eq!(out.error.as_deref(), Some(GENERIC_RUN_ERROR));
    }

    #[test]
    fn an_error_on_a_non_error_event_is_logged_but_does_not_set_the_job_error() {
        let out = apply_ok(&event(
            json!({"event_type": "candidate_rejected", "error": "parse failed"}),
        ));
        assert_eq!(out.error, None);
        assert_eq!(out.log.data["error"], json!("parse failed"));
    }

    #[test]
    fn progress_for_a_finished_job_is_refused_and_changes_nothing() {
        for status in [
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelled,
            JobStatus::Queued,
        ] {
            let s = JobState {
                status,
                ..running()
            };
            let e = event(json!({"event_type": "iteration_start"}));
            match apply(
                &s,
                &JobSummary::default(),
                &json!({}),
                &e,
                Reporter::Runner,
                now(),
            ) {
                Err(ProgressError::Transition(t)) => {
                    assert_eq!(t.from, status);
                    let why = if status.is_terminal() {
                        "a finished job takes no more progress"
                    } else {
                        "progress is accepted only while it is running"
                    };
                    assert!(t.to_string().contains(why), "{t}");
                }
                other => panic!("expected a transition error, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_metric_names_are_refused_but_x_prefixed_ones_are_accepted() {
        let e = event(json!({"event_type": "budget_updated", "metrics": {
            "val_scor": [{"value": 1.0, "step": 0}],
            "x_tokens": [{"value": 10.0, "step": 0}],
            "x_": [{"value": 1.0, "step": 0}],
        }}));
        let errs = invalid(&e);
        let locs: Vec<_> = errs.iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(locs, ["body.metrics.val_scor", "body.metrics.x_"]);
        assert!(errs[0].msg.contains("val_score, accepted_score"));
        assert_eq!(errs[0].kind, "value_error");
    }

    #[test]
    fn a_report_with_more_metric_points_than_one_report_may_carry_is_refused() {
        let points = |n: usize| {
            (0..n)
                .map(|i| json!({"value": 1.0, "step": i}))
                .collect::<Vec<_>>()
        };
        let at_limit = event(json!({"event_type": "budget_updated", "metrics": {
            "val_score": points(MAX_METRIC_POINTS_PER_REPORT - 1), "x_other": points(1)}}));
        assert!(at_limit.validate().is_ok());
        let over = event(json!({"event_type": "budget_updated", "metrics": {
            "val_score": points(MAX_METRIC_POINTS_PER_REPORT), "x_other": points(1)}}));
        let errs = invalid(&over);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].loc.join("."), "body.metrics");
        assert!(errs[0].msg.contains("this one has 1001"), "{}", errs[0].msg);
    }

    #[test]
    fn metric_timestamps_outside_four_digit_years_are_refused() {
        for (at, ok) in [
            ("-0001-01-01T00:00:00Z", false),
            ("0000-06-01T00:00:00Z", false),
            ("+10000-01-01T00:00:00Z", false),
            ("0001-01-01T00:00:00Z", true),
            ("9999-12-31T23:59:59Z", true),
        ] {
            let e = event(json!({"event_type": "budget_updated", "metrics": {
                "x_t": [{"value": 1.0, "step": 1, "timestamp": at}],
            }}));
            match e.validate() {
                Ok(()) => assert!(ok, "{at} was accepted"),
                Err(errs) => {
                    assert!(!ok, "{at}: {errs:?}");
                    assert_eq!(errs[0].loc.join("."), "body.metrics.x_t.0.timestamp");
                }
            }
        }
    }

    #[test]
    fn non_finite_values_and_negative_steps_are_refused_with_their_location() {
        let mut e = ProgressEvent::new(ProgressEventType::ValsetEvaluated);
        e.metrics.insert(
            "val_score".into(),
            vec![
                MetricPoint {
                    value: 0.1,
                    step: 0,
                    timestamp: None,
                },
                MetricPoint {
                    value: f64::NAN,
                    step: -1,
                    timestamp: None,
                },
            ],
        );
        let locs: Vec<_> = invalid(&e).iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(
            locs,
            [
                "body.metrics.val_score.1.value",
                "body.metrics.val_score.1.step"
            ]
        );
    }

    #[test]
    fn a_summary_must_be_an_object_with_well_typed_known_fields() {
        let e = event(json!({"event_type": "valset_evaluated", "summary": [1]}));
        assert_eq!(invalid(&e)[0].loc, ["body", "summary"]);
        let e = event(json!({"event_type": "valset_evaluated",
            "summary": {"best_score": "high", "train_size": 1.5, "objective": null, "anything": [1]}}));
        let errs = invalid(&e);
        let locs: Vec<_> = errs.iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(locs, ["body.summary.best_score", "body.summary.train_size"]);
        assert_eq!(
            errs[0].msg,
            "summary.best_score must be a number from 0 to 1"
        );
        let e = event(json!({"event_type": "valset_evaluated",
            "summary": {"best_candidate": {"instructions": 1}, "best_scores": [0.5]}}));
        let locs: Vec<_> = invalid(&e).iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(
            locs,
            ["body.summary.best_candidate", "body.summary.best_scores"]
        );
        // Without the component gepard promotes, a best candidate is refused too.
        for candidate in [json!({}), json!({"prompt": "x"})] {
            let e = event(
                json!({"event_type": "valset_evaluated", "summary": {"best_candidate": candidate}}),
            );
            let errs = invalid(&e);
            assert_eq!(errs[0].loc.join("."), "body.summary.best_candidate");
            assert!(
                errs[0].msg.contains("with `instructions`"),
                "{}",
                errs[0].msg
            );
        }
    }

    #[test]
    fn scores_outside_0_to_1_are_refused_where_they_are_and_metric_values_only_need_be_finite() {
        let e = event(json!({"event_type": "valset_evaluated",
            "summary": {"best_score": 1e308, "seed_score": -5, "best_scores": {"a": 0.5, "b": 1.5}},
            "candidate": {"index": 1, "parents": [0], "instructions": "x", "val_score": 99,
                          "val_subscores": [1.0, -0.1]},
            "metrics": {"x_loss": [{"value": 42.0, "step": 0}], "val_score": [{"value": 7.0, "step": 0}]}}));
        let errs = invalid(&e);
        let locs: Vec<_> = errs.iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(
            locs,
            [
                "body.candidate.val_score",
                "body.candidate.val_subscores",
                "body.summary.best_score",
                "body.summary.best_scores",
                "body.summary.seed_score",
            ]
        );
        assert_eq!(
            errs[0].msg,
            "candidate.val_score must be a number from 0 to 1"
        );
        assert_eq!(
            errs[4].msg,
            "summary.seed_score must be a number from 0 to 1"
        );
        // The bounds themselves are scores, and a patch refused by validate is not applied.
        let e = event(json!({"event_type": "valset_evaluated",
            "summary": {"best_score": 1, "seed_score": 0, "best_scores": {"a": 0.0, "b": 1.0}},
            "candidate": {"index": 1, "instructions": "x", "val_score": 1.0, "val_subscores": [0, 1]}}));
        assert!(e.validate().is_ok(), "{:?}", e.validate());
        let mut summary = JobSummary::default();
        summary.apply_patch(&json!({"best_score": 2.0, "seed_score": 0.25}));
        assert_eq!((summary.best_score, summary.seed_score), (None, Some(0.25)));
    }

    #[test]
    fn a_reported_candidate_and_usage_are_checked_field_by_field() {
        let e = event(json!({"event_type": "valset_evaluated",
            "candidate": {"index": 1, "parents": [0], "instructions": "Be brief.", "val_score": 0.5,
                          "val_subscores": [1.0, 0.0], "iteration": 1, "discovered_at_metric_calls": 66},
            "usage": {"metric_calls": 66, "model_calls": 70, "input_tokens": 1000, "output_tokens": 50}}));
        assert!(e.validate().is_ok(), "{:?}", e.validate());
        let e = event(json!({"event_type": "valset_evaluated",
            "candidate": {"index": -1, "parents": ["a"], "val_score": "high", "val_subscores": [1.0, null]},
            "usage": {"metric_calls": -1, "model_calls": 0, "input_tokens": 0, "output_tokens": 0}}));
        let locs: Vec<_> = invalid(&e).iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(
            locs,
            [
                "body.usage.metric_calls",
                "body.candidate.index",
                "body.candidate.instructions",
                "body.candidate.val_score",
                "body.candidate.val_subscores",
                "body.candidate.parents",
            ]
        );
        let e = event(json!({"event_type": "valset_evaluated", "candidate": [1]}));
        assert_eq!(invalid(&e)[0].loc, ["body", "candidate"]);
        // A parent is found before its child, so it has a lower index; and a merge is of two
        // different candidates.
        for (parents, says) in [
            (
                json!([2]),
                "names 2, but a parent is found before its child",
            ),
            (json!([0, 3]), "names 3, but"),
            (json!([1, 1]), "names 1 twice"),
        ] {
            let e = event(json!({"event_type": "valset_evaluated",
                "candidate": {"index": 2, "parents": parents, "instructions": "x"}}));
            let errors = invalid(&e);
            assert_eq!(errors.len(), 1, "{parents}");
            assert_eq!(errors[0].loc, ["body", "candidate", "parents"], "{parents}");
            assert!(errors[0].msg.contains(says), "{}", errors[0].msg);
        }
    }

    #[test]
    fn oversized_messages_bad_data_and_negative_iterations_are_refused() {
        let mut e = ProgressEvent::new(ProgressEventType::IterationStart);
        e.message = Some("x".repeat(MAX_MESSAGE_BYTES + 1));
        e.iteration = Some(-1);
        e.data = json!("text");
        let locs: Vec<_> = invalid(&e).iter().map(|e| e.loc.join(".")).collect();
        assert_eq!(locs, ["body.message", "body.iteration", "body.data"]);
        e.message = Some("x".repeat(MAX_MESSAGE_BYTES));
        e.iteration = Some(0);
        e.data = json!({});
        assert!(e.validate().is_ok());
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z_]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("best_score".to_owned()),
                        Just("train_size".to_owned()),
                        Just("metadata".to_owned()),
                        Just("best_candidate".to_owned()),
                        "[a-z_]{1,8}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_point() -> impl Strategy<Value = MetricPoint> {
        (
            prop_oneof![1 => any::<f64>(), 8 => -1.0f64..1.0],
            prop_oneof![1 => -2i64..0, 8 => 0i64..100],
            proptest::option::of(0i64..2_000_000_000),
        )
            .prop_map(|(value, step, ts)| MetricPoint {
                value,
                step,
                timestamp: ts.and_then(|s| DateTime::from_timestamp(s, 0)),
            })
    }

    /// Mostly well-typed summary patches, so that many events are accepted.
    fn any_summary() -> impl Strategy<Value = Value> {
        (
            proptest::option::of(-1.0f64..1.0),
            proptest::option::of(0i64..100),
            proptest::option::of("[a-z ]{0,8}"),
            any_json(),
        )
            .prop_map(|(score, size, objective, extra)| {
                json!({"best_score": score, "train_size": size, "objective": objective, "x": extra})
            })
    }

    /// Events that are valid most of the time and invalid in every way some of the time.
    fn any_event() -> impl Strategy<Value = ProgressEvent> {
        (
            // Weight updates so sequences usually run for a while before ending.
            prop_oneof![
                8 => proptest::sample::select(ProgressEventType::ALL[..8].to_vec()),
                1 => proptest::sample::select(ProgressEventType::ALL[8..].to_vec()),
            ],
            proptest::option::of("[ -~]{0,12}"),
            prop_oneof![1 => Just(Some(-1i64)), 8 => proptest::option::of(0i64..50)],
            prop_oneof![
                2 => Just(None),
                2 => any_summary().prop_map(Some),
                1 => any_json().prop_map(Some),
            ],
            proptest::collection::btree_map(
                prop_oneof![
                    4 => Just("val_score".to_owned()),
                    4 => Just("x_a".to_owned()),
                    1 => Just("bad".to_owned()),
                ],
                proptest::collection::vec(any_point(), 0..3),
                0..3,
            ),
            prop_oneof![4 => Just(Value::Null), 1 => any_json()],
            prop_oneof![4 => Just(None), 1 => any_json().prop_map(Some)],
            proptest::option::of("[ -~]{0,12}"),
        )
            .prop_map(
                |(event_type, message, iteration, summary, metrics, data, artifacts, error)| {
                    ProgressEvent {
                        event_type,
                        message,
                        level: LogLevel::Info,
                        iteration,
                        summary,
                        metrics,
                        data,
                        artifacts,
                        error,
                        attempt: None,
                        candidate: None,
                        usage: None,
                    }
                },
            )
    }

    /// Guards the property below against a generator that only produces invalid events (which
    /// would make it pass without exercising `apply`'s success path).
    #[test]
    fn the_event_generator_mostly_produces_valid_events() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = any_event();
        let valid = (0..1000)
            .filter(|_| {
                let e = proptest::strategy::ValueTree::current(
                    &strategy.new_tree(&mut runner).unwrap(),
                );
                e.validate().is_ok()
            })
            .count();
        assert!(
            valid > 300,
            "only {valid} of 1000 generated events are valid"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Feeds arbitrary (often invalid) events to a running job, threading the outcome of
        /// each accepted one into the next: never a panic, refused events change nothing, and
        /// once the job is terminal every further event is refused.
        #[test]
        fn arbitrary_event_sequences_never_panic_or_move_a_finished_job(
            events in proptest::collection::vec(any_event(), 0..24)
        ) {
            let mut state = running();
            let mut summary = JobSummary::default();
            let mut artifacts = json!({});
            for e in &events {
                let result = apply(&state, &summary, &artifacts, e, Reporter::Runner, now());
                let was_terminal = state.status.is_terminal();
                match result {
                    Err(ProgressError::Invalid(errs)) => {
                        prop_assert!(!errs.is_empty());
                        prop_assert!(errs.iter().all(|f| f.loc[0] == "body"));
                    }
                    Err(ProgressError::Transition(t)) => {
                        prop_assert!(was_terminal);
                        prop_assert_eq!(t.from, state.status);
                    }
                    Ok(out) => {
                        prop_assert!(!was_terminal, "a finished job accepted {:?}", e.event_type);
                        prop_assert!(e.validate().is_ok());
                        prop_assert_eq!(out.transition.from, state);
                        prop_assert_eq!(out.transition.to.status.is_terminal(), e.event_type.is_terminal());
                        let points: usize = e.metrics.values().map(Vec::len).sum();
                        prop_assert_eq!(out.metrics.len(), points);
                        prop_assert!(out.metrics.iter().all(|(_, p)| p.timestamp.is_some() && p.value.is_finite()));
                        prop_assert!(out.summary.metadata.is_object());
                        prop_assert_eq!(out.error.is_some(), e.event_type == ProgressEventType::OptimizationError);
                        if out.artifacts.is_some() {
                            prop_assert!(e.event_type.is_terminal());
                        }
                        state = out.transition.to;
                        summary = out.summary;
                        if let Some(a) = out.artifacts {
                            artifacts = a;
                        }
                    }
                }
            }
        }
    }
}
