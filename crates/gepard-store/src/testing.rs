//! Throwaway databases for tests, so one test body runs on both backends: the store's
//! conformance suite uses [`conformance_tests!`](crate::conformance_tests), and other crates'
//! tests pick a backend with [`TestDatabase`].
//!
//! SQLite tests get a fresh file in a temporary directory. PostgreSQL tests get a fresh
//! database `gepard_t_<random>` created through the admin URL in `GEPARD_TEST_POSTGRES_URL`
//! (e.g. `postgres://postgres@127.0.0.1:5432/test`) and dropped when the [`TestDatabase`] is;
//! a fresh database per test keeps tests that run in parallel apart. A test process that is
//! killed never drops its databases; the first PostgreSQL test of a later process drops the
//! ones older than an hour (their names carry their creation time). With the variable unset
//! a PostgreSQL test prints `SKIPPED (GEPARD_TEST_POSTGRES_URL unset)` and passes, unless
//! `GEPARD_REQUIRE_POSTGRES=1`, which makes it fail (CI sets it, so nothing skips silently).
//!
//! This module is compiled into the library (it needs nothing beyond the store's own
//! dependencies) because integration tests of this and other crates cannot see a
//! `#[cfg(test)]` item.

use std::io::Write;
use std::path::PathBuf;

use sqlx::{Connection, Executor};

use crate::{Backend, Store};

/// The admin connection URL for PostgreSQL tests.
pub const POSTGRES_URL_VAR: &str = "GEPARD_TEST_POSTGRES_URL";
/// Set to `1` to make PostgreSQL tests fail, not skip, when no server is configured.
pub const REQUIRE_POSTGRES_VAR: &str = "GEPARD_REQUIRE_POSTGRES";

/// A database that exists for one test and is removed when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: Backend,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    /// The temporary directory holding the SQLite file.
    Directory(PathBuf),
    /// The database to drop, and the admin URL to drop it through.
    Postgres { admin_url: String, name: String },
}

impl TestDatabase {
    /// A fresh database on `backend`; `None` when PostgreSQL is not configured and not
    /// required (the skip is printed, naming `test`).
    ///
    /// # Panics
    /// When the database cannot be created, or PostgreSQL is required but not configured.
    pub async fn new(backend: Backend, test: &str) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::sqlite()),
            Backend::Postgres => Self::postgres(test).await,
        }
    }

    /// A fresh SQLite file in a new temporary directory.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(format!("gepard-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create the test database directory");
        Self {
            url: format!("sqlite://{}", dir.join("gepard.db").display()),
            backend: Backend::Sqlite,
            cleanup: Cleanup::Directory(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (printed) when `GEPARD_TEST_POSTGRES_URL` is
    /// unset and PostgreSQL is not required.
    ///
    /// # Panics
    /// When the database cannot be created, or PostgreSQL is required but not configured.
    pub async fn postgres(test: &str) -> Option<Self> {
        let admin_url = admin_url(test)?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("{PREFIX}{created}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot connect to {POSTGRES_URL_VAR}: {e}"));
        if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
            sweep_abandoned(&mut admin, created).await;
        }
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot create database {name}: {e}"));
        let _ = admin.close().await;
        Some(Self {
            url: with_database(&admin_url, &name),
            backend: Backend::Postgres,
            cleanup: Cleanup::Postgres { admin_url, name },
        })
    }

    /// The URL [`Store::connect`] takes.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A store on this database (migrated); call again for a second, independent pool (a
    /// second server process, a reopen).
    ///
    /// # Panics
    /// When the store cannot connect.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                // Drop is synchronous and may run inside the test's runtime, where blocking on
                // another future panics: a short-lived thread with its own runtime does it.
                // FORCE ends the connections the test's pools may still hold.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                        admin
                            .execute(
                                format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str(),
                            )
                            .await?;
                        admin.close().await
                    })
                    .map_err(|e: sqlx::Error| e.to_string())
                })
                .join();
                if let Ok(Err(e)) = dropped {
                    let _ = writeln!(std::io::stderr(), "could not drop test database: {e}");
                }
            }
        }
    }
}

/// The admin URL from `GEPARD_TEST_POSTGRES_URL`, or `None` with the skip printed (a panic
/// instead when `GEPARD_REQUIRE_POSTGRES=1`).
fn admin_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var(REQUIRE_POSTGRES_VAR).as_deref() != Ok("1"),
                "{test}: {REQUIRE_POSTGRES_VAR}=1 but {POSTGRES_URL_VAR} is unset"
            );
            // Straight to stderr, past the test harness's capture, so the skip shows even
            // though the test passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED ({POSTGRES_URL_VAR} unset): {test}"
            );
            None
        }
    }
}

/// Test databases are named `gepard_t_<unix seconds at creation>_<random>`.
const PREFIX: &str = "gepard_t_";

/// A test database older than this belongs to a test process that was killed before its
/// drop ran (no test runs for an hour), so it is safe to remove.
const ABANDONED_AFTER_SECS: u64 = 3600;

/// Whether this process has already swept abandoned test databases.
static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drops the test databases that killed test processes left behind (once per process).
/// Failures are printed, never fatal: a sweep is housekeeping, not part of the test.
async fn sweep_abandoned(admin: &mut sqlx::PgConnection, now: u64) {
    let names: Vec<String> =
        match sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(PREFIX)
            .fetch_all(&mut *admin)
            .await
        {
            Ok(names) => names,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "could not list test databases: {e}");
                return;
            }
        };
    for name in names.iter().filter(|n| is_abandoned(n, now)) {
        if let Err(e) = admin
            .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
            .await
        {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test database {name}: {e}"
            );
        }
    }
}

/// Whether `name` is a test database created more than [`ABANDONED_AFTER_SECS`] before `now`.
fn is_abandoned(name: &str, now: u64) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(secs, _)| secs.parse::<u64>().ok())
        .is_some_and(|created| now.saturating_sub(created) > ABANDONED_AFTER_SECS)
}

/// `admin_url` with its database name replaced by `name` (user, host, port and query kept).
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Stamps each test body out twice, as `sqlite::NAME` and `postgres::NAME`, each on a fresh
/// [`TestDatabase`] bound to the name in parentheses (a `&TestDatabase`). Invoke once per
/// test file, at its root (the modules `use super::*`). Tests run on a two-thread runtime, so
/// concurrency in a body is real.
///
/// ```ignore
/// gepard_store::conformance_tests! {
///     async fn a_reopened_database_keeps_its_data(db) {
///         let store = db.store().await;
///         // …
///     }
/// }
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($db:ident) $body:block )*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let database = $crate::testing::TestDatabase::sqlite();
                    let $db = &database;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(database) = $crate::testing::TestDatabase::postgres(
                        concat!(module_path!(), "::", stringify!($name)),
                    )
                    .await
                    else {
                        return;
                    };
                    let $db = &database;
                    $body
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_test_databases_older_than_an_hour_count_as_abandoned() {
        let now = 1_800_000_000;
        assert!(is_abandoned("gepard_t_1799990000_abc", now));
        assert!(
            !is_abandoned("gepard_t_1799999000_abc", now),
            "a running test's"
        );
        assert!(
            !is_abandoned("gepard_t_abc", now),
            "no timestamp: not ours to judge"
        );
        assert!(
            !is_abandoned("gepard_prod_1_abc", now),
            "not a test database"
        );
        assert!(!is_abandoned("test", now));
    }

    /// A database left by a killed test process (old timestamp) is dropped by the sweep; a
    /// current one is kept.
    #[tokio::test]
    async fn the_sweep_drops_abandoned_test_databases_and_keeps_live_ones() {
        let Some(admin_url) = admin_url("testing::sweep") else {
            return;
        };
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tag = uuid::Uuid::new_v4().simple();
        let old = format!("{PREFIX}{}_{tag}", now - 2 * ABANDONED_AFTER_SECS);
        let live = format!("{PREFIX}{now}_{tag}");
        for name in [&old, &live] {
            admin
                .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .unwrap();
        }
        sweep_abandoned(&mut admin, now).await;
        let left: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname IN ($1, $2)")
                .bind(&old)
                .bind(&live)
                .fetch_all(&mut admin)
                .await
                .unwrap();
        admin
            .execute(format!("DROP DATABASE IF EXISTS \"{live}\"").as_str())
            .await
            .unwrap();
        assert_eq!(left, [live]);
    }

    #[test]
    fn the_test_database_url_keeps_everything_but_the_database_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/test?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
