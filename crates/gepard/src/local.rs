//! `gepard optimize local` (being written).

use std::process::ExitCode;

/// Arguments of `gepard optimize local`.
#[derive(Debug, clap::Args)]
pub struct LocalArgs {}

/// Runs `gepard optimize local`.
pub async fn run(_args: LocalArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("gepard optimize local is not available yet")
}
