//! The GEPA engine: reflective prompt evolution with a per-example Pareto frontier, optimizing
//! one text component (an agent's instructions).
//!
//! It follows the reference implementation (`gepa` 0.1.x): the seed is scored on the whole
//! validation set; each iteration picks a parent from the Pareto fronts, evaluates it with traces
//! on an epoch-shuffled training minibatch, asks a reflection model for a better text, keeps the
//! child only if it strictly beats the parent on that minibatch, and then scores it on the whole
//! validation set. The best candidate is the one with the highest validation mean.
//!
//! What it must not depend on: HTTP, a database, or any other gepard crate. The outside world
//! comes in through two traits, [`Evaluator`] (score a text on one example, by index) and
//! [`Proposer`] (a new text from reflective examples; [`LlmReflector`] does it with any
//! [`TextModel`]), and goes out through an [`EventSink`].
//!
//! Guarantees the rest of gepard builds on:
//! - **Determinism**: one seeded RNG drives every random choice; evaluations run concurrently
//!   but results are kept in input order, so `concurrency` never changes the outcome.
//! - **Resumability**: a [`Checkpoint`] after the seed pass and after every iteration holds the
//!   whole state, RNG included; resuming from it reproduces the uninterrupted run exactly.
//! - **Budget**: one metric call = one (candidate, example) evaluation; an iteration is only
//!   started if the remaining budget covers its worst case, so `max_metric_calls` is never
//!   exceeded, and the [`RunResult`] says why the run stopped ([`StopReason`]).
//!
//! Layout: `config` (limits and strategy), `traits` (the seams), `reflect` (prompt and fence
//! extraction), `pareto` (fronts and parent selection), `sampler` (minibatches), `events`,
//! `engine` (the loop, checkpoint and result).

mod config;
mod engine;
mod events;
mod pareto;
mod reflect;
mod sampler;
mod traits;

pub use config::{CandidateSelection, Config, ConfigError, FrontierType};
pub use engine::{
    CancelToken, Candidate, CandidateSummary, Checkpoint, Counts, Engine, EngineError, RunResult,
    StopReason,
};
pub use events::{Event, EventSink, NullSink, RecordingSink, SkipReason};
pub use pareto::{best_index, Front, Fronts};
pub use reflect::{
    extract_fenced, reflection_prompt, trim_examples, FenceError, LlmReflector, ModelError,
    TextModel,
};
pub use sampler::EpochSampler;
pub use traits::{
    Evaluation, Evaluator, FatalError, Proposal, ProposeError, Proposer, ReflectiveRecord, Split,
};
