//! The `gepard` command: server, workers and every client command.
//!
//! This binary composes the library crates; nothing depends on it. Exit codes: 0 success,
//! 1 the operation failed (including a waited-for job that did not complete), 2 usage error.

mod local;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gepard: improve LLM agents with GEPA.
#[derive(Debug, Parser)]
#[command(name = "gepard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Optimization jobs and local runs.
    #[command(subcommand)]
    Optimize(OptimizeCommand),
}

#[derive(Debug, Subcommand)]
enum OptimizeCommand {
    /// Run GEPA in-process on a capability directory and JSONL files, without a server.
    Local(local::LocalArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Optimize(OptimizeCommand::Local(args)) => local::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
