//! The two seams between the engine and the outside world: scoring a candidate on one example,
//! and proposing a new candidate text from reflective examples.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Which data set an example index refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The training set: minibatches for reflection.
    Train,
    /// The validation set: scores that build the Pareto fronts and pick the best candidate.
    Val,
}

/// What a reflection model needs to know about one evaluated example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReflectiveRecord {
    /// The task input as the agent saw it (for the benchmark: the row's `goal`, verbatim).
    pub inputs: String,
    /// What the agent produced.
    pub generated_outputs: String,
    /// The reward recipe's feedback on that output.
    pub feedback: String,
}

/// The outcome of evaluating one candidate on one example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The score; must be finite. Higher is better.
    pub score: f64,
    /// Inputs, outputs and feedback; expected when traces were asked for, ignored otherwise.
    pub reflective: Option<ReflectiveRecord>,
}

/// An evaluator failure that makes the whole run pointless (bad API key, missing model…).
/// Ordinary per-example failures are the adapter's business: it scores them 0 with feedback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FatalError(pub String);

/// Scores candidate texts on examples the engine knows only by index.
///
/// Implementations must be deterministic enough for the caller's purposes: the engine itself
/// never depends on timing, so two runs with the same answers give the same result.
#[async_trait]
pub trait Evaluator: Send + Sync {
    /// Evaluates `candidate` on example `example` of `split`. With `capture_traces` the result
    /// should carry a [`ReflectiveRecord`] for the reflection prompt.
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        split: Split,
        capture_traces: bool,
    ) -> Result<Evaluation, FatalError>;
}

/// A proposed replacement for the current text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The new candidate text.
    pub text: String,
}

/// Why a proposer did not produce a usable text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// The answer was unusable (unfenced, truncated, empty…): the iteration ends without a child.
    #[error("proposal rejected: {0}")]
    Rejected(String),
    /// The proposer failed this time (e.g. a model call error after retries): the iteration ends
    /// without a child and the run goes on, as in the reference implementation.
    #[error("proposer failed: {0}")]
    Failed(String),
    /// The proposer can never succeed (bad credentials…): the run aborts.
    #[error("proposer failed fatally: {0}")]
    Fatal(String),
}

/// Turns the current text and reflective examples into a new text.
#[async_trait]
pub trait Proposer: Send + Sync {
    /// Proposes a new text for `current`, learning from `examples` (already trimmed to the
    /// configured limits, in minibatch order).
    async fn propose(
        &self,
        current: &str,
        examples: &[ReflectiveRecord],
    ) -> Result<Proposal, ProposeError>;
}
