//! The `gepard` command: server, client commands and local runs.
//!
//! This binary composes the library crates; nothing depends on it. Exit codes: 0 success,
//! 1 the operation failed (including a waited-for job that did not complete), 2 usage error.

mod args;
mod commands;
mod jobs_cli;
mod local;
mod models;
mod quickstart;
mod serve;
mod settings;
mod worker_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use gepard_core::model::ArtifactKind;

use crate::commands::{GlobalOpts, KeysCommand, RegistryCommand};

/// gepard: improve LLM agents with GEPA.
#[derive(Debug, Parser)]
#[command(name = "gepard", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server (SQLite in the data directory unless --database-url says otherwise).
    Serve(serve::ServeArgs),
    /// Run workers alone against the same database as a server.
    Worker(worker_cmd::WorkerArgs),
    /// Run one job attempt (the sandboxed child a worker starts; spec on stdin).
    #[command(hide = true)]
    RunJob,
    /// Fetch and list local models.
    #[command(subcommand)]
    Model(models::ModelCommand),
    /// Start a server on a fresh SQLite directory, publish the examples and run a real
    /// optimization job on them (org `local`, workspace `default`).
    Quickstart(quickstart::QuickstartArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Publish and inspect capabilities.
    #[command(subcommand)]
    Capability(RegistryCommand),
    /// Publish and inspect datasets.
    #[command(subcommand)]
    Dataset(RegistryCommand),
    /// Optimization jobs and local runs.
    #[command(subcommand)]
    Optimize(OptimizeCommand),
}

#[derive(Debug, Subcommand)]
enum OptimizeCommand {
    /// Run GEPA in-process on a capability directory and JSONL files, without a server.
    Local(local::LocalArgs),
    #[command(flatten)]
    Job(jobs_cli::JobCommand),
}

/// Keeps the default panic report for bugs, but not for a decoder's panic on a client's
/// malformed file: that one is caught and answered as an invalid file (a 422, or exit 2), and
/// a crash report for it on the server's stderr, outside the structured log, misleads.
fn quiet_expected_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if gepard_agent::bundle::panic_is_expected_here() {
            tracing::debug!(%info, "a decoder panicked on a malformed file; it is reported as unreadable");
        } else {
            report(info);
        }
    }));
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_expected_panics();
    let cli = Cli::parse();
    let g = &cli.global;
    // Client commands are filters a user pipes into `head` or `grep -q`: when the reader goes
    // away they should end quietly, like any Unix tool, not panic in println!. Only they get
    // the default SIGPIPE back: the server and workers (also inside quickstart) write to their
    // runners' pipes, and must see EPIPE as an error instead of being killed by it.
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Worker(_) | Command::Quickstart(_)
    ) {
        sigpipe::reset();
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => worker_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::RunJob => Ok(worker_cmd::run_job().await),
        Command::Model(cmd) => models::run(cmd, g.json).await.map(|()| ExitCode::SUCCESS),
        Command::Quickstart(args) => {
            // The client flags are global, so clap accepts them here too; the quickstart's own
            // server has only org `local` and workspace `default`, so say they are not used
            // rather than silently ignoring them.
            if g.org != "local" || g.workspace != "default" || g.project.is_some() {
                eprintln!(
                    "note: quickstart runs its own server with org `local` and workspace \
                     `default`; --org, --workspace and --project (or GEPARD_ORG, \
                     GEPARD_WORKSPACE, GEPARD_PROJECT) are not used"
                );
            }
            quickstart::run(args).await
        }
        Command::Keys(cmd) => commands::keys(g, cmd).await.map(|()| ExitCode::SUCCESS),
        Command::Capability(RegistryCommand::Show { rows: Some(_), .. }) => {
            // One subcommand set serves both registries; only a dataset has rows.
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    "--rows applies to datasets only (`gepard dataset show NAME@VERSION --rows N`)",
                )
                .exit()
        }
        Command::Capability(cmd) => commands::registry(g, ArtifactKind::Capability, cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Dataset(cmd) => commands::registry(g, ArtifactKind::Dataset, cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Optimize(OptimizeCommand::Local(args)) => local::run(args).await,
        Command::Optimize(OptimizeCommand::Job(cmd)) => jobs_cli::run(g, cmd).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            let unauthorized = e.chain().any(|c| {
                c.downcast_ref::<gepard_client::ClientError>()
                    .and_then(gepard_client::ClientError::status)
                    .is_some_and(|s| s.as_u16() == 401)
            });
            if unauthorized {
                eprintln!(
                    "hint: pass --api-key or set GEPARD_API_KEY, or set GEPARD_DATA_DIR to the \
                     server's data directory so the CLI reads the key from its credentials.json \
                     (whose key is sent only to the server that file names)"
                );
            }
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined with ": ", like anyhow's `{:#}`, but without repeating a
/// cause that its parent's message already ends with: driver errors such as sqlx's include
/// their source in their own text ("error communicating with database: Connection refused"),
/// and printing the source again would say everything twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_its_parents_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug)]
        struct Driver(std::io::Error);
        impl std::fmt::Display for Driver {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error communicating with database: {}", self.0)
            }
        }
        impl std::error::Error for Driver {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Driver(io)).context("opening the database at postgres://h/x");
        assert_eq!(
            error_chain(&e),
            "opening the database at postgres://h/x: error communicating with database: \
             Connection refused"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
