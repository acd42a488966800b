//! A small deterministic world for engine tests: examples need "skills", a candidate has a skill
//! when its text names it, and a scripted proposer adds the skills the feedback says are missing
//! (with occasional unusable answers and mistakes, decided by a hash of its input).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gepard_gepa::{
    Evaluation, Evaluator, FatalError, Proposal, ProposeError, Proposer, ReflectiveRecord, Split,
};

pub const SKILLS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "omega"];
pub const SEED_TEXT: &str = "Solve the task.";

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0x1e]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The skills example `i` of `split` needs: one or two, spread so that candidates with different
/// skills win different examples (which is what makes fronts interesting).
pub fn needs(split: Split, i: usize) -> Vec<usize> {
    let offset = match split {
        Split::Train => 0,
        Split::Val => 2,
    };
    let first = (i + offset) % SKILLS.len();
    if i % 3 == 0 {
        vec![first, (first + 1) % SKILLS.len()]
    } else {
        vec![first]
    }
}

pub fn has(text: &str, skill: usize) -> bool {
    text.contains(SKILLS[skill])
}

#[derive(Default)]
pub struct SkillEvaluator {
    /// Yield to the scheduler a content-dependent number of times, so that concurrent
    /// evaluations finish out of order (without sleeping).
    pub shuffle_completion: bool,
    pub calls: AtomicU64,
    /// Fail fatally on this call number (1-based), if set.
    pub fatal_on_call: Option<u64>,
}

#[async_trait]
impl Evaluator for SkillEvaluator {
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        split: Split,
        capture_traces: bool,
    ) -> Result<Evaluation, FatalError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fatal_on_call == Some(call) {
            return Err(FatalError("invalid API key".into()));
        }
        if self.shuffle_completion {
            let n = fnv(&[candidate, &example.to_string()]) % 17;
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        }
        let needed = needs(split, example);
        let missing: Vec<usize> = needed
            .iter()
            .copied()
            .filter(|&s| !has(candidate, s))
            .collect();
        let score = (needed.len() - missing.len()) as f64 / needed.len() as f64;
        let reflective = capture_traces.then(|| ReflectiveRecord {
            inputs: format!("{split:?} input #{example}"),
            generated_outputs: format!("answer to #{example}"),
            feedback: if missing.is_empty() {
                "Correct.".into()
            } else {
                let names: Vec<&str> = missing.iter().map(|&s| SKILLS[s]).collect();
                format!("Incorrect. Missing skills: {}.", names.join(", "))
            },
        });
        Ok(Evaluation { score, reflective })
    }
}

/// Adds a skill the feedback asks for. By a hash of (current text, example inputs): 1 in 7
/// answers is unusable, 1 in 7 returns the text unchanged, 1 in 5 of the rest rewrites an
/// existing skill sentence into the new one (losing a skill), like a real reflection mistake.
#[derive(Default)]
pub struct SkillProposer {
    pub seen: Mutex<Vec<(String, Vec<ReflectiveRecord>)>>,
}

#[async_trait]
impl Proposer for SkillProposer {
    async fn propose(
        &self,
        current: &str,
        examples: &[ReflectiveRecord],
    ) -> Result<Proposal, ProposeError> {
        self.seen
            .lock()
            .unwrap()
            .push((current.to_owned(), examples.to_vec()));
        let inputs: Vec<&str> = examples.iter().map(|e| e.inputs.as_str()).collect();
        let mut parts = vec![current];
        parts.extend(inputs);
        let h = fnv(&parts);
        match h % 7 {
            0 => return Err(ProposeError::Rejected("no ``` fence in the answer".into())),
            1 => {
                return Ok(Proposal {
                    text: current.to_owned(),
                })
            }
            _ => {}
        }
        let missing: BTreeSet<usize> = examples
            .iter()
            .flat_map(|e| {
                SKILLS
                    .iter()
                    .enumerate()
                    .filter(|(_, name)| e.feedback.contains(*name))
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            })
            .filter(|&s| !has(current, s))
            .collect();
        let missing: Vec<usize> = missing.into_iter().collect();
        if missing.is_empty() {
            return Ok(Proposal {
                text: format!("{current} Be careful."),
            });
        }
        let skill = missing[(h / 7) as usize % missing.len()];
        let sentence = format!("Use {}.", SKILLS[skill]);
        let present: Vec<usize> = (0..SKILLS.len()).filter(|&s| has(current, s)).collect();
        let text = if (h / 49) % 5 == 0 && !present.is_empty() {
            let victim = format!(
                "Use {}.",
                SKILLS[present[(h / 245) as usize % present.len()]]
            );
            current.replacen(&victim, &sentence, 1)
        } else {
            format!("{current} {sentence}")
        };
        Ok(Proposal { text })
    }
}

/// A proposer that never answers: for cancellation tests.
pub struct HangingProposer {
    pub started: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Proposer for HangingProposer {
    async fn propose(
        &self,
        _current: &str,
        _examples: &[ReflectiveRecord],
    ) -> Result<Proposal, ProposeError> {
        self.started.notify_one();
        std::future::pending().await
    }
}

/// An evaluator that answers like [`SkillEvaluator`] but hangs from call `hang_from` on.
pub struct HangingEvaluator {
    pub inner: SkillEvaluator,
    pub hang_from: u64,
    pub hung: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Evaluator for HangingEvaluator {
    async fn evaluate(
        &self,
        candidate: &str,
        example: usize,
        split: Split,
        capture_traces: bool,
    ) -> Result<Evaluation, FatalError> {
        if self.inner.calls.load(Ordering::SeqCst) + 1 >= self.hang_from {
            self.hung.notify_one();
            return std::future::pending().await;
        }
        self.inner
            .evaluate(candidate, example, split, capture_traces)
            .await
    }
}
