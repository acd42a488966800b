//! Job execution.
//!
//! - [`supervise`]: the [`Worker`]: claims the oldest queued job under a lease, runs the
//!   attempt as a sandboxed child process (`gepard run-job`: own process group, resource
//!   limits, a clean environment with model credentials only, its own working directory),
//!   applies the child's JSON lines through the same function as `POST …/progress`, renews
//!   the lease, stops the child on cancel or deadline, and fails the job (not itself) when
//!   the child misbehaves.
//! - [`spec`]: the [`spec::RunSpec`] a worker resolves from the store for the child.
//! - [`runner`]: the child's side (`run-job`): GEPA through `gepard_agent::optimize`,
//!   engine events mapped to progress lines, checkpoints after every iteration.
//!
//! Depends on the store, the agent adapter and the engine; never on the server or HTTP.

pub mod runner;
pub mod spec;
pub mod supervise;

pub use supervise::{RunEnd, Worker, WorkerConfig, PASSTHROUGH_ENV};
