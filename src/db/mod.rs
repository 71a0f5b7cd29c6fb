//! The storage facade: one pool over SQLite or PostgreSQL, chosen by the URL scheme.
//!
//! Queries go through sqlx's `Any` driver with `$1`-style parameters, integer
//! timestamps and integer flags, which both backends read the same way. Where the
//! dialects really differ, `Db::backend` tells which statement to run.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AnyPool, ConnectOptions as _};

use crate::config::DatabaseUrl;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The application's database handle, cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The same database through the concrete driver, for the session store.
    pub sessions: SessionPool,
    /// SQLite has one writer at a time, and its busy handler waits by sleeping: under
    /// concurrent writers (SMTP sessions storing messages while the processor
    /// delivers) throughput collapses. The hot write paths queue here instead.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Received messages waiting to be stored together (SQLite's group commit).
    pub(crate) inbound_waiting: std::sync::Arc<crate::store::inbound::Waiting>,
}

/// SQLite's one writer at a time: held until dropped; how long it was held counts
/// as [`crate::stages::Stage::WriteTurn`].
pub struct WriteTurn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    since: std::time::Instant,
    /// Where the turn was taken, for the breakdown by writer.
    at: &'static std::panic::Location<'static>,
}

impl Drop for WriteTurn {
    fn drop(&mut self) {
        crate::stages::record_write(self.at, self.since.elapsed());
    }
}

/// A concrete pool for the tower-sessions store, which has no `Any` variant.
#[derive(Clone, Debug)]
pub enum SessionPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Db {
    /// Connects, creating the SQLite file (and its directory) when needed.
    /// Errors are one sentence saying what to fix.
    pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        if url.is_postgres() {
            let options = AnyConnectOptions::from_str(url.as_str())
                .with_context(|| format!("the database URL {url} is not valid"))?
                .disable_statement_logging();
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| {
                    format!("cannot connect to the PostgreSQL database at {url}; check that it is running and that DIRECTMAIL_DATABASE_URL is right")
                })?;
            let sessions = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect(url.as_str())
                .await
                .with_context(|| format!("cannot connect to the PostgreSQL database at {url}"))?;
            Ok(Db {
                pool,
                backend: Backend::Postgres,
                sessions: SessionPool::Postgres(sessions),
                writes: Default::default(),
                inbound_waiting: Default::default(),
            })
        } else {
            let options = SqliteConnectOptions::from_str(url.as_str())
                .with_context(|| format!("the database URL {url} is not valid"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .disable_statement_logging();
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                create_dir(dir)?;
            }
            // Opening through the concrete driver applies WAL mode and creates the file;
            // the `Any` pool then opens the same file with the same pragmas.
            let sessions = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.clone())
                .await
                .with_context(|| format!("cannot open the SQLite database at {url}"))?;
            let any_options = AnyConnectOptions::from_str(&format!(
                "sqlite://{}",
                options.get_filename().display()
            ))?
            .disable_statement_logging();
            let pool = AnyPoolOptions::new()
                .max_connections(8)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute("pragma foreign_keys = on; pragma busy_timeout = 10000;")
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(any_options)
                .await
                .with_context(|| format!("cannot open the SQLite database at {url}"))?;
            Ok(Db {
                pool,
                backend: Backend::Sqlite,
                sessions: SessionPool::Sqlite(sessions),
                writes: Default::default(),
                inbound_waiting: Default::default(),
            })
        }
    }

    /// A transaction that writes. On SQLite it takes the write lock as it begins
    /// (`BEGIN IMMEDIATE`, waiting up to the busy timeout like any write): a deferred
    /// transaction that reads and then writes fails at once with SQLITE_BUSY
    /// ("database is locked", no waiting) when any other connection wrote in between,
    /// be it the session store, another task, or `directmail admin` run beside the
    /// server. Every transaction of the product begins here.
    pub async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("begin immediate").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// A turn at writing, on SQLite; PostgreSQL needs none.
    #[track_caller]
    pub fn write_turn(&self) -> impl Future<Output = Option<WriteTurn>> + Send + 'static {
        let at = std::panic::Location::caller();
        let writes = (self.backend == Backend::Sqlite).then(|| self.writes.clone());
        async move {
            Some(WriteTurn {
                _guard: writes?.lock_owned().await,
                since: std::time::Instant::now(),
                at,
            })
        }
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .context("the database schema could not be brought up to date")?;
        Ok(())
    }

    /// True when the database answers and every migration this build knows is applied.
    pub async fn is_ready(&self) -> bool {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let want = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .count() as i64;
        // `where success` reads a boolean on Postgres and 0/1 on SQLite alike
        let applied: Result<i64, _> =
            sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
                .fetch_one(&self.pool)
                .await;
        matches!(applied, Ok(n) if n >= want)
    }
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data directory {}; choose a writable one with DIRECTMAIL_DATA_DIR",
            dir.display()
        )
    })
}
