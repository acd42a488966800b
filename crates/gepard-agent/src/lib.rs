//! The adapter between the GEPA engine and a capability agent.
//!
//! - [`bundle`]: the on-disk and over-the-wire formats of capabilities (`capability.yaml` +
//!   `agents/*.md`) and datasets (`dataset.yaml` + `jsonl` / `csv` rows), packed as gzip'd tar.
//! - [`diff`]: the unified diff of two instruction texts (promotion previews).
//! - [`optimize`]: the GEPA engine's evaluator and reflection model over rollouts and recipes,
//!   and a whole optimization run.
//!
//! This crate knows files and formats; it must not depend on the store, the server or any
//! HTTP framework.

pub mod bundle;
pub mod diff;
pub mod optimize;
pub mod recipe;
pub mod rollout;
