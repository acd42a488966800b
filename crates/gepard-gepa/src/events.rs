//! Progress events and the sink they go through.
//!
//! gepard turns them into its progress stream: `val_score` from [`Event::ValsetEvaluated`],
//! `accepted_score` / `rejected_score` from the child minibatch sums of
//! [`Event::CandidateAccepted`] / [`Event::CandidateRejected`], `best_score` from
//! [`Event::ValsetEvaluated`], `frontier_best_score` and `frontier_size` from
//! [`Event::FrontUpdated`], `metric_calls_used` / `metric_calls_remaining` from
//! [`Event::BudgetUpdated`].

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::engine::{Checkpoint, StopReason};

/// Why an iteration ended without evaluating a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The parent scored perfectly on every minibatch example: nothing to reflect on.
    PerfectScores,
    /// The evaluator returned no reflective record for any minibatch example.
    NoReflectiveData,
    /// The proposer gave nothing usable (unfenced, truncated, empty or unchanged text, or a
    /// failed reflection call). Never adopted.
    ProposalRejected {
        /// Why, for the logs.
        message: String,
    },
}

/// A sentence for logs and summaries (the rest of "iteration 4 skipped: …").
impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PerfectScores => f.write_str(
                "the parent already scored perfectly on every minibatch example, so there was \
                 nothing to improve",
            ),
            Self::NoReflectiveData => {
                f.write_str("no minibatch example gave feedback to reflect on")
            }
            Self::ProposalRejected { message } => {
                write!(f, "the reflection gave no usable instructions ({message})")
            }
        }
    }
}

/// Something the engine did that a watcher may want to know. Iterations are numbered from 1;
/// iteration 0 is the seed's validation pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An iteration picked its parent and minibatch.
    IterationStarted {
        /// The iteration number (from 1).
        iteration: u64,
        /// Index of the parent candidate.
        parent: usize,
        /// The parent's validation mean.
        parent_val_score: f64,
        /// Training example ids of the minibatch.
        minibatch: Vec<usize>,
    },
    /// The iteration ended without a child (see [`SkipReason`]).
    IterationSkipped {
        /// The iteration number.
        iteration: u64,
        /// Index of the parent candidate.
        parent: usize,
        /// The parent's minibatch scores.
        parent_scores: Vec<f64>,
        /// Why no child was evaluated.
        reason: SkipReason,
    },
    /// A child beat its parent on the minibatch and was added after its validation pass.
    CandidateAccepted {
        /// The iteration number.
        iteration: u64,
        /// Index of the parent candidate.
        parent: usize,
        /// The parent's minibatch scores.
        parent_scores: Vec<f64>,
        /// The child's scores on the same minibatch.
        child_scores: Vec<f64>,
        /// The index the child got.
        candidate: usize,
        /// The child's text.
        text: String,
    },
    /// A child did not beat its parent on the minibatch and was dropped.
    CandidateRejected {
        /// The iteration number.
        iteration: u64,
        /// Index of the parent candidate.
        parent: usize,
        /// The parent's minibatch scores.
        parent_scores: Vec<f64>,
        /// The child's scores on the same minibatch.
        child_scores: Vec<f64>,
        /// The child's text.
        text: String,
    },
    /// A candidate was scored on the whole validation set (the seed, or an accepted child).
    ValsetEvaluated {
        /// The iteration number (0 for the seed).
        iteration: u64,
        /// The candidate's index.
        candidate: usize,
        /// Its validation mean.
        val_score: f64,
        /// Its per-example validation scores.
        val_scores: Vec<f64>,
        /// The best candidate after this evaluation.
        best_candidate: usize,
        /// The best validation mean after this evaluation.
        best_score: f64,
        /// Whether this candidate became the new best.
        new_best: bool,
    },
    /// The per-example fronts were (re)computed after a validation pass.
    FrontUpdated {
        /// The iteration number (0 for the seed).
        iteration: u64,
        /// How many distinct candidates are on at least one front.
        frontier_size: usize,
        /// The mean over validation examples of the best score on each: what the frontier
        /// achieves together.
        frontier_best_score: f64,
        /// The candidates on the frontier, in increasing order.
        frontier: Vec<usize>,
    },
    /// Metric calls were spent.
    BudgetUpdated {
        /// Metric calls spent so far in the run (including resumed history).
        metric_calls_used: u64,
        /// Metric calls left under `max_metric_calls`, if it is set.
        metric_calls_remaining: Option<u64>,
    },
    /// An iteration (or the seed pass) completed; resuming from this reproduces the rest.
    Checkpoint {
        /// The number of completed iterations.
        iteration: u64,
        /// The complete state.
        checkpoint: Box<Checkpoint>,
    },
    /// The run ended normally.
    Finished {
        /// Why it ended.
        stop_reason: StopReason,
        /// The best candidate.
        best_candidate: usize,
        /// Its validation mean.
        best_score: f64,
        /// Metric calls spent in total.
        metric_calls_used: u64,
    },
    /// The run aborted on an unrecoverable error; the last checkpoint is still valid.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Where events go. Called synchronously from the engine's task: keep it quick (write a line,
/// push to a channel).
pub trait EventSink: Send + Sync {
    /// Receives one event.
    fn emit(&self, event: &Event);
}

/// A sink that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}

/// A sink that keeps every event in memory; handy in tests and small tools.
#[derive(Debug, Default)]
pub struct RecordingSink {
    events: Mutex<Vec<Event>>,
}

impl RecordingSink {
    /// A copy of the events so far, in emission order.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for RecordingSink {
    fn emit(&self, event: &Event) {
        // A std Mutex: it is never held across an await.
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
    }
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: &Event) {
        self(event);
    }
}

#[cfg(test)]
mod tests {
    use super::SkipReason;

    #[test]
    fn a_skip_reason_reads_as_a_sentence_not_a_rust_name() {
        let perfect = SkipReason::PerfectScores.to_string();
        assert!(perfect.contains("scored perfectly"), "{perfect}");
        assert!(!SkipReason::NoReflectiveData
            .to_string()
            .contains("NoReflectiveData"));
        let rejected = SkipReason::ProposalRejected {
            message: "the answer has no ``` block".into(),
        }
        .to_string();
        assert!(
            rejected.contains("no usable instructions") && rejected.contains("no ``` block"),
            "{rejected}"
        );
    }
}
