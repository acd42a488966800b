//! A shared, lock-free tally of model calls and tokens.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::types::Usage;

/// Counts model calls and tokens across any number of tasks. Share it with `Arc`.
#[derive(Debug, Default)]
pub struct UsageCounter {
    model_calls: AtomicU64,
    failed_calls: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

/// A point-in-time copy of a [`UsageCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSnapshot {
    /// Calls that returned an answer.
    pub model_calls: u64,
    /// Calls that ended in an error (after retries).
    pub failed_calls: u64,
    /// Prompt tokens of successful calls.
    pub input_tokens: u64,
    /// Completion tokens of successful calls.
    pub output_tokens: u64,
}

impl UsageCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one successful call and its tokens.
    pub fn record(&self, usage: Usage) {
        self.model_calls.fetch_add(1, Ordering::Relaxed);
        self.input_tokens
            .fetch_add(usage.input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(usage.output_tokens, Ordering::Relaxed);
    }

    /// Records one failed call.
    pub fn record_failure(&self) {
        self.failed_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The current totals.
    pub fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            model_calls: self.model_calls.load(Ordering::Relaxed),
            failed_calls: self.failed_calls.load(Ordering::Relaxed),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
        }
    }
}
