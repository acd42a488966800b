//! `gepard serve`: the API server on SQLite (default) or PostgreSQL, with first-start bootstrap.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gepard_core::auth::ApiKeySecret;
use gepard_server::{router, AppState};
use gepard_store::{Bootstrap, Notifier, Store};
use tokio_util::sync::CancellationToken;

use crate::settings::{self, Credentials};

/// Flags of `gepard serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GEPARD_LISTEN", default_value = "127.0.0.1:8321")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database (the default) and the credentials file.
    #[arg(long, env = "GEPARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://PATH` or `postgres://…`); default: a SQLite file in the data directory.
    #[arg(long, env = "GEPARD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Embedded workers running jobs beside the API.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Seconds an outside runtime (`POST …/progress` with a runner key) keeps a job it claimed
    /// without reporting again; then the job is queued again (or, after a cancel request,
    /// ends cancelled).
    #[arg(long, env = "GEPARD_RUNTIME_LEASE_SECS", default_value_t = gepard_server::DEFAULT_RUNTIME_LEASE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub runtime_lease_secs: u64,
    /// Log format.
    #[arg(long, env = "GEPARD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The global client flags, hidden: a server talks to no server.
    #[command(flatten)]
    pub client_flags: crate::args::HiddenClientAndJsonFlags,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` (level from `GEPARD_LOG`, else `RUST_LOG`, else `default_level`),
/// logging to stderr, in colour only when stderr is a terminal.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    // A typo in the level must not silently leave the operator without the log they asked
    // for: a bare word that is not a level (`debg`) is valid filter syntax (a target name),
    // and turns every other log line off.
    if let Ok(value) = std::env::var("GEPARD_LOG") {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        let problem = match tracing_subscriber::EnvFilter::try_new(&value) {
            Err(e) => Some(e.to_string()),
            Ok(_) => value
                .split(',')
                .map(str::trim)
                .find(|d| {
                    !d.is_empty()
                        && !d.contains(['=', ':', '['])
                        && !LEVELS.contains(&d.to_ascii_lowercase().as_str())
                })
                .map(|d| {
                    format!(
                        "`{d}` is not a level ({}); as written it names a log target, and turns \
                         every other log line off",
                        LEVELS.join(", ")
                    )
                }),
        };
        if let Some(problem) = problem {
            let _ = writeln!(
                std::io::stderr(),
                "warning: GEPARD_LOG={value:?}: {problem} (e.g. GEPARD_LOG=debug or \
                 GEPARD_LOG=info,sqlx=warn)"
            );
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEPARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        // PostgreSQL's NOTICEs (`relation "_sqlx_migrations" already exists, skipping` at
        // every start) are the database talking to itself, not news for an operator.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{default_level},sqlx::postgres::notice=warn"
            ))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (whoever read stderr went away: a log shipper
        // restarting, `| head`) is lost, and that is all: by default the layer reports its
        // own write error with eprintln!, which panics on the broken pipe, inside whatever
        // task was logging (a database connection's, which then never answers again).
        .log_internal_errors(false)
        // The fmt layer colours by default; a log redirected to a file would keep the codes.
        .with_ansi(settings::use_color(std::io::stderr().is_terminal()));
    // A second init (tests, quickstart) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A running server: its address, the admin key it bootstrapped (if any), and its task.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The task serving requests until shutdown.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The store, closed after the server stops.
    pub store: Store,
}

/// Opens the store, bootstraps an empty database, binds, and starts serving until `shutdown`.
pub async fn start(
    args: &ServeArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    // Read the provider configuration first: a mistake in it must stop the start before an
    // empty database is set up and its admin key printed.
    let providers = crate::models::providers_config()?;
    let data_dir = settings::data_dir(args.data_dir.as_deref());
    settings::create_data_dir(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| settings::sqlite_url(&data_dir));
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("opening the database at {}", gepard_store::redact_url(&url)))?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    bootstrap(&store, &data_dir, addr).await?;
    follow_credentials(&store, &data_dir, addr).await;
    // On PostgreSQL, changes written by other servers and worker processes reach this
    // server's watchers too.
    let notifier: Arc<dyn Notifier> = gepard_store::notify::for_store(&store, &url)
        .await
        .context("listening for job changes")?;
    let mut state = AppState::with_notifier(store.clone(), Arc::clone(&notifier));
    state.models = Some(Arc::new(crate::models::registry_with(
        &providers, &data_dir,
    )));
    let runtime_lease = Duration::from_secs(args.runtime_lease_secs);
    state.runtime_lease = runtime_lease;
    let streams_end = state.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        streams_end.cancel();
    };
    let app = router(state);
    // Embedded workers share the server's notifier, so watchers see their progress live.
    let stop_workers = CancellationToken::new();
    let workers = crate::worker_cmd::spawn_workers(
        &store,
        &notifier,
        &data_dir,
        &providers,
        args.workers,
        &stop_workers,
    )?;
    // Workers reap expired leases between claims; with none (outside runtimes run the jobs)
    // the server must do it, or a dead runtime's job would stay `running` for ever.
    let reaper = tokio::spawn(reap_leases(
        store.clone(),
        Arc::clone(&notifier),
        reap_interval(runtime_lease),
        stop_workers.clone(),
    ));
    let task = tokio::spawn(async move {
        let served = gepard_server::serve(listener, app, shutdown).await;
        stop_workers.cancel();
        for w in workers {
            let _ = w.await;
        }
        let _ = reaper.await;
        served
    });
    tracing::info!(%addr, database = %redact(&url), "gepard is listening");
    Ok(Running {
        addr,
        data_dir,
        task,
        store,
    })
}

/// How often the server looks for expired leases: a fraction of the runtime lease, so a
/// silent runtime's job is taken back soon after its lease ends, but at most every 5 s.
fn reap_interval(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
}

/// Returns jobs whose holder stopped renewing its lease to the queue until `stop`.
async fn reap_leases(
    store: Store,
    notifier: Arc<dyn Notifier>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = store.reap_expired_leases(notifier.as_ref()).await {
            tracing::warn!(error = %e, "reaping expired leases failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Hides a password in a database URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// First start of an empty database: org `local`, workspace and project `default`, and an
/// admin key, from `GEPARD_ADMIN_KEY` or freshly generated (then printed once and written to
/// the credentials file the CLI reads).
async fn bootstrap(
    store: &Store,
    data_dir: &std::path::Path,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let supplied = std::env::var("GEPARD_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let key = match &supplied {
        Some(k) => ApiKeySecret::from_supplied(k).context("GEPARD_ADMIN_KEY")?,
        None => ApiKeySecret::generate(),
    };
    let created = store
        .bootstrap(&Bootstrap::first_start(key.clone()))
        .await?;
    if !created {
        return Ok(());
    }
    if supplied.is_some() {
        tracing::info!("bootstrapped org `local` with the admin key from GEPARD_ADMIN_KEY");
        return Ok(());
    }
    let server = local_url(addr);
    let path = settings::write_credentials(
        data_dir,
        &Credentials {
            server,
            org: "local".into(),
            api_key: key.expose().to_owned(),
        },
    )?;
    // Printed once, on purpose: the database keeps only the hash. The page link carries the
    // key in the URL fragment, which browsers never send to a server, and the page removes
    // it from the address bar once read.
    // Not eprintln!: with nobody reading stderr any more it would panic; the key is in the
    // credentials file either way.
    let _ = writeln!(
        std::io::stderr(),
        "gepard: created org `local`, workspace `default`, project `default`.\n\
         gepard: admin API key (shown once, saved to {}):\n\n    {}\n\n\
         gepard: the Optimization page, signed in with that key:\n\n    {}\n",
        path.display(),
        key.expose(),
        page_url(addr, key.expose())
    );
    Ok(())
}

/// A later start of a server on this data directory, on another address (the quickstart's
/// random port, another `--listen`), points the credentials file at itself, so that the CLI's
/// default keeps reaching the server of this data directory. Only when the file's key is a
/// key of this server's database (the file pairs a key with the server that knows it), and
/// the server it names does not answer: a server still running there (another server on the
/// same data directory, or a hand-edited address that works) keeps the file.
async fn follow_credentials(store: &Store, data_dir: &std::path::Path, addr: SocketAddr) {
    let Some(mut creds) = settings::read_credentials(data_dir) else {
        return;
    };
    let here = local_url(addr);
    if creds.server == here || !matches!(store.authenticate(&creds.api_key).await, Ok(Some(_))) {
        return;
    }
    let named = gepard_client::Client::new(&creds.server, None);
    let answers = tokio::time::timeout(Duration::from_secs(2), named.healthz()).await;
    if matches!(answers, Ok(Ok(_))) {
        return;
    }
    let before = std::mem::replace(&mut creds.server, here);
    match settings::write_credentials(data_dir, &creds) {
        Ok(path) => tracing::info!(
            file = %path.display(), from = %before, to = %creds.server,
            "the credentials file now names this server"
        ),
        Err(e) => tracing::warn!(error = %e, "could not update the credentials file"),
    }
}

/// The URL a client on this machine reaches a server listening on `addr` at (what the
/// credentials file names): one listening on every interface (`0.0.0.0`, `::`) is reached
/// through loopback.
fn local_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(host, addr.port()))
}

/// The page's address with `key` in its fragment, reachable from this machine so that the
/// link works when clicked.
fn page_url(addr: SocketAddr, key: &str) -> String {
    format!("{}/#key={key}", local_url(addr))
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown requested; finishing in-flight requests");
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs `gepard serve` until a signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format, "info");
    let running = start(&args, shutdown_signal()).await?;
    running.task.await.context("server task")??;
    running.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_printed_page_link_carries_the_key_in_its_fragment_and_a_clickable_host() {
        let key = "gpd_abc";
        assert_eq!(
            page_url("127.0.0.1:8321".parse().unwrap(), key),
            "http://127.0.0.1:8321/#key=gpd_abc"
        );
        assert_eq!(
            page_url("0.0.0.0:9000".parse().unwrap(), key),
            "http://127.0.0.1:9000/#key=gpd_abc"
        );
        assert_eq!(
            page_url("[::]:9000".parse().unwrap(), key),
            "http://[::1]:9000/#key=gpd_abc"
        );
    }
}
