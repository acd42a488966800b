//! `gepard worker` (workers alone, against the same database as a server) and the embedded
//! workers of `gepard serve --workers N`; `gepard run-job` (the sandboxed child of a run).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use gepard_store::{Notifier, Store};
use gepard_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::serve::{self, LogFormat};
use crate::settings;

/// Flags of `gepard worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Data directory (database, run directories, model cache).
    #[arg(long, env = "GEPARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://PATH` or `postgres://…`); default: the SQLite file in the data directory.
    #[arg(long, env = "GEPARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Workers in this process.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Log format.
    #[arg(long, env = "GEPARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Starts `n` workers on `store`; they stop when `shutdown` fires.
pub fn spawn_workers(
    store: &Store,
    notifier: &Arc<dyn Notifier>,
    data_dir: &Path,
    n: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let program = std::env::current_exe().context("locating the gepard binary for run-job")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    (0..n)
        .map(|i| {
            let mut config = WorkerConfig::new(
                format!("{host}-{}-{i}", std::process::id()),
                program.clone(),
                data_dir.join("runs"),
            );
            config.data_dir = Some(data_dir.to_path_buf());
            let worker = Worker::new(store.clone(), Arc::clone(notifier), config);
            let shutdown = shutdown.clone();
            Ok(tokio::spawn(async move { worker.run(shutdown).await }))
        })
        .collect()
}

/// Runs `gepard worker` until a signal.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    serve::init_tracing(args.log_format, "info");
    let data_dir = settings::data_dir(args.data_dir.as_deref());
    std::fs::create_dir_all(&data_dir)?;
    // Runners read the same provider configuration; a broken one fails here, at start, not
    // in every job.
    crate::models::providers_config()?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| settings::sqlite_url(&data_dir));
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("opening the database at {}", gepard_store::redact_url(&url)))?;
    // Watchers live in server processes; across processes they learn of changes by re-reading.
    // On PostgreSQL this tells the servers' watchers what these workers write.
    let notifier: Arc<dyn Notifier> = gepard_store::notify::for_store(&store, &url)
        .await
        .context("announcing job changes")?;
    let shutdown = CancellationToken::new();
    let tasks = spawn_workers(&store, &notifier, &data_dir, args.workers.max(1), &shutdown)?;
    serve::shutdown_signal().await;
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    store.close().await;
    Ok(())
}

/// `gepard run-job`: one attempt, spec on stdin, JSON lines on stdout.
pub async fn run_job() -> std::process::ExitCode {
    let data_dir = settings::data_dir(
        std::env::var_os("GEPARD_DATA_DIR")
            .map(PathBuf::from)
            .as_deref(),
    );
    let registry = match crate::models::registry(&data_dir) {
        Ok(r) => r,
        Err(e) => {
            // The worker reports the runner's last stderr lines when it exits early.
            eprintln!("run-job: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    std::process::ExitCode::from(gepard_worker::runner::main_from_stdin(&registry).await)
}
