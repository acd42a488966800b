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
    /// Workers in this process (at least 1: a worker process with none would do nothing).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// Log format.
    #[arg(long, env = "GEPARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The global client flags, hidden: a worker talks to the database, not to a server.
    #[command(flatten)]
    pub client_flags: crate::args::HiddenClientAndJsonFlags,
}

/// Starts `n` workers on `store`; they stop when `shutdown` fires. `providers` is the
/// configuration read from `GEPARD_PROVIDERS` at start (its key variables go to runners).
pub fn spawn_workers(
    store: &Store,
    notifier: &Arc<dyn Notifier>,
    data_dir: &Path,
    providers: &gepard_llm::ProvidersConfig,
    n: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let program = std::env::current_exe().context("locating the gepard binary for run-job")?;
    // Worker names tell an operator which machine holds a job (logs, lease owner, the 409 to
    // a foreign progress report). `HOSTNAME` is rarely exported to programs; Linux has it
    // under /proc.
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    // Runners start in their own run directory, so every path handed to them must be
    // absolute: the data directory, and a provider file named relative to where the server
    // was started.
    let data_dir = std::path::absolute(data_dir).context("resolving the data directory")?;
    let providers_file = std::env::var(crate::models::PROVIDERS_ENV)
        .ok()
        .and_then(|v| absolute_providers_path(&v));
    // Runners get a cleared environment with only model credentials: those of named
    // providers live in variables the provider config names (`api_key_env`).
    let key_vars = provider_key_vars(providers, &|name| std::env::var(name).ok());
    (0..n)
        .map(|i| {
            let mut config = WorkerConfig::new(
                format!("{host}-{}-{i}", std::process::id()),
                program.clone(),
                data_dir.join("runs"),
            );
            config.data_dir = Some(data_dir.clone());
            if let Some(path) = &providers_file {
                config
                    .extra_env
                    .push((crate::models::PROVIDERS_ENV.to_owned(), path.clone()));
            }
            config.extra_env.extend(key_vars.iter().cloned());
            let worker = Worker::new(store.clone(), Arc::clone(notifier), config);
            let shutdown = shutdown.clone();
            Ok(tokio::spawn(async move { worker.run(shutdown).await }))
        })
        .collect()
}

/// `GEPARD_PROVIDERS` made absolute when it names a file by a relative path; `None` when it
/// is inline JSON, already absolute, empty, or the path cannot be resolved.
fn absolute_providers_path(value: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.starts_with('{') || Path::new(value).is_absolute() {
        return None;
    }
    std::path::absolute(value)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The `api_key_env` variables of the named providers that are set here, with their values.
fn provider_key_vars(
    config: &gepard_llm::ProvidersConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    config
        .providers
        .values()
        .filter_map(|p| p.api_key_env.as_deref())
        .filter_map(|var| env(var).map(|value| (var.to_owned(), value)))
        .collect()
}

/// Runs `gepard worker` until a signal.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    serve::init_tracing(args.log_format, "info");
    let data_dir = settings::data_dir(args.data_dir.as_deref());
    settings::create_data_dir(&data_dir)?;
    // Runners read the same provider configuration; a broken one fails here, at start, not
    // in every job.
    let providers = crate::models::providers_config()?;
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
    // Which database, said once: a worker pointed at the wrong data directory otherwise polls
    // a fresh, empty database in silence.
    tracing::info!(
        database = %gepard_store::redact_url(&url),
        workers = args.workers,
        "worker connected"
    );
    let shutdown = CancellationToken::new();
    let tasks = spawn_workers(
        &store,
        &notifier,
        &data_dir,
        &providers,
        args.workers,
        &shutdown,
    )?;
    serve::wait_for_signal().await;
    tracing::info!(
        "shutdown requested; running jobs are stopped and queued again, to resume from their \
         checkpoints on the next worker"
    );
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

#[cfg(test)]
mod tests {
    use super::{absolute_providers_path, provider_key_vars};

    #[test]
    fn runners_get_the_key_variables_their_named_providers_read() {
        let config: gepard_llm::ProvidersConfig = serde_json::from_value(serde_json::json!({
            "corp": {"kind": "openai", "base_url": "http://gw/v1", "api_key_env": "CORP_KEY"},
            "other": {"kind": "anthropic", "base_url": "http://gw2", "api_key_env": "UNSET_KEY"},
            "plain": {"kind": "openai", "base_url": "http://gw3/v1"}
        }))
        .unwrap();
        let env = |name: &str| (name == "CORP_KEY").then(|| "sk-corp".to_owned());
        assert_eq!(
            provider_key_vars(&config, &env),
            [("CORP_KEY".to_owned(), "sk-corp".to_owned())]
        );
    }

    #[test]
    fn a_relative_provider_file_is_made_absolute_for_runners_and_inline_json_is_left_alone() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_providers_path("conf/providers.yaml").as_deref(),
            Some(cwd.join("conf/providers.yaml").to_str().unwrap())
        );
        assert_eq!(absolute_providers_path("/etc/gepard/providers.yaml"), None);
        assert_eq!(
            absolute_providers_path(r#"{"vllm": {"kind": "openai"}}"#),
            None
        );
        assert_eq!(absolute_providers_path("  "), None);
    }
}
