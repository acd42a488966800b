//! gepard's persistence: one [`Store`] over SQL, on SQLite or PostgreSQL.
//!
//! SQLite (`sqlite://PATH`) is the embedded default: one WAL file, nothing to install, one
//! machine. PostgreSQL (`postgres://…`) is for teams and scale-out: many API servers and
//! workers share one database, and workers claim jobs with `FOR UPDATE SKIP LOCKED`.
//!
//! Both run the very same statements wherever they can: ids and timestamps are `TEXT`, flags
//! and counts `BIGINT`, placeholders `$N`, searches compare lowercased text (SQLite's `LIKE`
//! ignores ASCII case, PostgreSQL's does not), and everything goes through sqlx's `Any`
//! driver. What differs (the migrations under `migrations/sqlite` and `migrations/postgres`,
//! how a write transaction starts, the row locks a read-then-write transaction takes on
//! PostgreSQL) is decided here from the URL and never leaks to callers. The conformance suite
//! (`tests/`, with [`testing`]) runs every store test on both databases.
//!
//! Only this crate names `sqlx`. It must not depend on the server, HTTP or the GEPA engine.

mod execution;
mod jobs;
mod lifecycle;
pub mod notify;
mod promotion;
mod registry;
mod rows;
mod series;
mod tenancy;
pub mod testing;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use execution::{Claimed, StoredCheckpoint};
pub use jobs::{Created, IdempotencyKey, JobFilter, JobWrite, NewJob};
pub use lifecycle::{runtime_owner, LifecycleError};
pub use notify::{JobNotice, LocalNotifier, Notifier, PgNotifier};
pub use promotion::{Promoter, PromotionRequest};
pub use registry::Published;
pub use tenancy::{AuthenticatedKey, Bootstrap};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// Appended to a `SELECT` whose rows the same transaction is about to change.
    ///
    /// The one place the two databases need different SQL for correctness: SQLite write
    /// transactions (`BEGIN IMMEDIATE`) already exclude each other and it has no row locks,
    /// while PostgreSQL at READ COMMITTED lets two transactions read the same row and both
    /// write; `FOR UPDATE` makes the second wait for the first and then read its result.
    fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// [`Backend::for_update`] for a select of jobs joined with their projects: locks the
    /// job's row only (`j`), where a plain `FOR UPDATE` would lock the project's row too and
    /// make every writer of the project's jobs wait for each other.
    fn for_update_of_job(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF j",
        }
    }

    /// Like [`Backend::for_update`], for queues: rows another transaction holds are passed
    /// over instead of waited for, so concurrent workers claim different jobs at once.
    fn for_update_skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// What can go wrong in the store. Messages are safe for logs; the server decides what a
/// client sees (never the database text of a [`StoreError::Database`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no database we speak.
    #[error("unsupported database URL `{0}`: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// A lookup found nothing.
    #[error("{0} not found")]
    NotFound(String),
    /// A write collided with existing data (duplicate key, version with other content).
    #[error("{0}")]
    Conflict(String),
    /// Stored data could not be read back (a bug or a hand-edited database).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database failed. Transparent: the driver's message once, not once per layer of
    /// an error chain.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A write waited longer than the busy timeout for the database.
    #[error("the database stayed busy for {0:?}; try again")]
    Busy(Duration),
    /// Migrations failed at start.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store: a pool over one database, shared by every request and worker of a process.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// This process's turn to write on SQLite (see [`Store::write_tx`]).
    write_turn: Arc<tokio::sync::Mutex<()>>,
    /// Metric series read recently, extended instead of re-read (see `series`).
    series: Arc<series::SeriesCache>,
    /// Most metric points one attempt of a job may hold (see
    /// [`Store::with_max_metric_points_per_attempt`]).
    max_metric_points: usize,
}

/// How long a writer waits for its turn before giving up, like SQLite's `busy_timeout`. Only
/// reached if a transaction is held that long (or a bug nests two write transactions).
const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(10);

/// A write transaction; on SQLite it also holds the process's write turn until it ends.
///
/// It dereferences to the connection, so statements run with `.execute(&mut *tx)` as on a
/// plain transaction. Dropping it without [`WriteTx::commit`] rolls back, then frees the turn
/// (fields drop in declaration order).
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits, and only then lets the next writer of this process begin.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _turn } = self;
        tx.commit().await
    }

    /// Rolls back explicitly (a drop would too, but later).
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _turn } = self;
        tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per process. On PostgreSQL every server and worker process holds its own pool,
/// so this stays modest: ten processes are 80 connections, under the default server limit.
const MAX_CONNECTIONS: u32 = 8;

impl Store {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`), creating a SQLite file if needed,
    /// and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let pool = match backend {
            Backend::Sqlite => Self::sqlite_pool(url).await?,
            Backend::Postgres => Self::postgres_pool(url).await?,
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            // Several servers starting at once against one database is normal here; sqlx's
            // PostgreSQL migrator takes an advisory lock, so exactly one of them migrates.
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            write_turn: Arc::default(),
            series: Arc::default(),
            max_metric_points: gepard_core::progress::MAX_METRIC_POINTS_PER_ATTEMPT,
        })
    }

    /// The same store, refusing a progress report that would take an attempt of a job beyond
    /// `max` metric points (default [`gepard_core::progress::MAX_METRIC_POINTS_PER_ATTEMPT`]).
    #[must_use]
    pub fn with_max_metric_points_per_attempt(mut self, max: usize) -> Self {
        self.max_metric_points = max;
        self
    }

    async fn sqlite_pool(url: &str) -> Result<AnyPool> {
        let url = if url.contains('?') {
            url.to_owned()
        } else {
            format!("{url}?mode=rwc")
        };
        create_private_sqlite_file(&url)?;
        let options = AnyConnectOptions::from_str(&url)?;
        Ok(AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; busy_timeout makes a second
                    // writer (another process) wait instead of failing at once.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?)
    }

    async fn postgres_pool(url: &str) -> Result<AnyPool> {
        let options = AnyConnectOptions::from_str(url)?;
        // One plain connection first: the pool retries a refused or failed connection until
        // its acquire timeout and then reports only "pool timed out", hiding why (connection
        // refused, unknown database, bad password) for 30 s.
        {
            use sqlx::Connection;
            sqlx::AnyConnection::connect_with(&options)
                .await?
                .close()
                .await?;
        }
        Ok(AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?)
    }

    /// The database behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction.
    ///
    /// On SQLite this is `BEGIN IMMEDIATE`: it takes the write lock up front, so two writers
    /// queue instead of one failing when it upgrades a read lock. Writers of this process
    /// first wait for their turn on an async FIFO lock: SQLite's own busy handler makes a
    /// waiting writer sleep in growing steps (1, 2, 5, 10… ms) and retry, so with several
    /// embedded workers and requests writing at once, the queue was long sleeps and a herd of
    /// retries; the lock hands the database over the moment the previous writer commits.
    /// Other processes on the same file still meet at SQLite's lock and `busy_timeout`.
    /// PostgreSQL has row locks and needs neither.
    ///
    /// The `BEGIN` runs in a task of its own. A caller can be dropped at any await (a client
    /// that goes away mid-request, an aborted worker task); dropped while its `BEGIN IMMEDIATE`
    /// was acknowledged but not yet received, it lost the transaction after SQLite had taken
    /// the write lock, nothing ever rolled it back, and every other writer waited out
    /// `busy_timeout` and failed. The task always finishes the begin, and a transaction nobody
    /// takes from it is dropped there, which rolls it back.
    async fn write_tx(&self) -> Result<WriteTx> {
        let turn = match self.backend {
            Backend::Sqlite => Some(
                tokio::time::timeout(WRITE_TURN_TIMEOUT, self.write_turn.clone().lock_owned())
                    .await
                    .map_err(|_| StoreError::Busy(WRITE_TURN_TIMEOUT))?,
            ),
            Backend::Postgres => None,
        };
        let (pool, backend) = (self.pool.clone(), self.backend);
        let begun = tokio::spawn(async move {
            match backend {
                Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
                Backend::Postgres => pool.begin().await,
            }
        })
        .await
        // Only a panic in the driver or a runtime shutting down ends the task otherwise.
        .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?;
        Ok(WriteTx {
            tx: begun?,
            _turn: turn,
        })
    }
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

impl StoreError {
    /// Whether the failure is momentary (the database is busy, locked, or not reachable right
    /// now), so the same request may succeed if the client tries again shortly.
    ///
    /// The API answers these with 503 and `Retry-After` instead of a 500, and workers retry
    /// them: nothing is wrong with the request or with the stored data. Codes: SQLite BUSY
    /// (5, with its extended forms 261, 517) and LOCKED (6); on PostgreSQL every connection
    /// exception (class 08), serialization failure (40001), deadlock (40P01), too many
    /// connections (53300), lock not available (55P03), a database not accepting connections
    /// (55000, e.g. `ALLOW_CONNECTIONS false`) and the server shutting down, crashing or
    /// starting (57P01, 57P02, 57P03: a restart or failover).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Busy(_) => true,
            StoreError::Database(e) => match e {
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
                sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(
                            code.as_ref(),
                            "5" | "6"
                                | "261"
                                | "517"
                                | "40001"
                                | "40P01"
                                | "53300"
                                | "55000"
                                | "55P03"
                                | "57P01"
                                | "57P02"
                                | "57P03"
                        )
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Creates the (empty) database file of a SQLite `url` readable and writable by its owner
/// only, before SQLite creates it with the process umask (0644 under the usual 022): the
/// database holds key hashes, prompts and rows. SQLite gives its `-wal` and `-shm` files the
/// database file's mode, so they stay private too. An existing file is left as it is (its
/// mode may be the operator's choice); in-memory databases and URLs whose `mode` does not
/// allow creating the file are skipped, as SQLite would not create one either.
#[cfg(unix)]
fn create_private_sqlite_file(url: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let creates = params.split('&').any(|p| p == "mode=rwc");
    if database.is_empty() || database == ":memory:" || !creates {
        return Ok(());
    }
    // sqlx's own reading of the URL, so a percent-encoded path means the same file here.
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    // An empty file is a valid empty SQLite database. When this fails (the file exists, or
    // its directory is missing or read-only) SQLite's own open goes ahead as before: it uses
    // an existing file as it is, and otherwise fails with an error naming the database.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(options.get_filename());
    Ok(())
}

#[cfg(not(unix))]
fn create_private_sqlite_file(_url: &str) -> Result<()> {
    Ok(())
}

/// Whether a database error is a unique-constraint violation (a lost insert race).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_pool_timeouts_are_transient_but_bad_data_is_not() {
        assert!(StoreError::Busy(WRITE_TURN_TIMEOUT).is_transient());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Conflict("version exists".into()).is_transient());
        assert!(!StoreError::Corrupt("bad json".into()).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_new_sqlite_database_and_its_wal_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let store = Store::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        // A write, so the WAL and shared-memory files exist.
        store.write_tx().await.unwrap().commit().await.unwrap();
        sqlx::query("CREATE TABLE probe (x BIGINT NOT NULL)")
            .execute(&store.pool)
            .await
            .unwrap();
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            seen.push((entry.file_name().to_string_lossy().into_owned(), mode));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("g.db".to_owned(), 0o600),
                ("g.db-shm".to_owned(), 0o600),
                ("g.db-wal".to_owned(), 0o600)
            ]
        );
        store.close().await;
    }

    /// A real SQLite lock: a second connection that cannot wait for the first writer gets
    /// SQLITE_BUSY, and that must be classified as transient (503), not as a server bug (500).
    #[tokio::test]
    async fn a_locked_sqlite_database_is_a_transient_failure() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::connect(&url).await.unwrap();
        let mut holder = store.write_tx().await.unwrap();
        sqlx::query("CREATE TABLE probe (x BIGINT NOT NULL)")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut other = sqlx::SqliteConnection::connect(&format!("{url}?mode=rw"))
            .await
            .unwrap();
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut other)
            .await
            .unwrap();
        let err = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .expect_err("the database is write-locked by the holder");
        let err = StoreError::Database(err);
        assert!(err.is_transient(), "{err:?}");
        holder.rollback().await.unwrap();
    }

    /// A writer task that dies mid-transaction (aborted, as a dropped request or a killed
    /// worker task is) must neither block the next writer nor leave its half-written rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_aborted_mid_transaction_frees_the_database_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE probe (x BIGINT NOT NULL)")
            .execute(&store.pool)
            .await
            .unwrap();
        let (held, mut holding) = tokio::sync::mpsc::channel(1);
        let dying = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.write_tx().await.unwrap();
                sqlx::query("INSERT INTO probe (x) VALUES (1)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                held.send(()).await.unwrap();
                std::future::pending::<()>().await;
                tx.commit().await.unwrap();
            })
        };
        holding.recv().await.unwrap();
        dying.abort();
        assert!(dying.await.unwrap_err().is_cancelled());

        let mut tx = tokio::time::timeout(Duration::from_secs(5), store.write_tx())
            .await
            .expect("the next writer gets its turn")
            .unwrap();
        sqlx::query("INSERT INTO probe (x) VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows: Vec<i64> = sqlx::query_scalar("SELECT x FROM probe ORDER BY x")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows, vec![2], "the aborted writer's row was rolled back");
    }

    #[test]
    fn a_database_password_never_reaches_a_message() {
        assert_eq!(
            redact_url("postgres://gepard:s3cret@db:5432/gepard"),
            "postgres://gepard:***@db:5432/gepard"
        );
        assert_eq!(
            redact_url("postgres://gepard@db/gepard"),
            "postgres://gepard@db/gepard"
        );
        assert_eq!(
            redact_url("sqlite:///tmp/a@b/g.db"),
            "sqlite:///tmp/a@b/g.db"
        );
    }
}
