//! The storage facade: one pool over SQLite or PostgreSQL, chosen by the URL scheme.
//!
//! Queries go through sqlx's `Any` driver with `$1`-style parameters, integer
//! timestamps and integer flags, which both backends read the same way. Where the
//! dialects really differ, `Db::backend` tells which statement to run.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AnyPool, ConnectOptions as _};

use crate::config::DatabaseUrl;

pub mod group;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Set on each [`Db::redoable`] connection (SQLite refuses to change it inside a
/// transaction, so it is the connection's, not the transaction's).
const REDOABLE_SQLITE: &str = "pragma synchronous = normal";
const REDOABLE_POSTGRES: &str = "set synchronous_commit = off";

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
    /// The same database, for work that is redone when lost: see [`Db::redoable`].
    redo: AnyPool,
    /// The same database through the concrete driver, for the session store.
    pub sessions: SessionPool,
    /// SQLite has one writer at a time, and its busy handler waits by sleeping: under
    /// concurrent writers (SMTP sessions storing messages while the processor
    /// delivers) throughput collapses. The hot write paths queue here instead.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Received messages waiting to be stored together (SQLite's group commit).
    pub(crate) inbound_waiting: std::sync::Arc<crate::store::inbound::Waiting>,
    /// Received messages' bytes stored by this process, until claimed here.
    pub(crate) stored_raw: std::sync::Arc<crate::store::inbound::Stored>,
    /// Processed messages waiting to be recorded together (group commit too).
    pub(crate) outcomes_waiting: std::sync::Arc<crate::inbound::Waiting>,
    /// Audit entries of [`crate::audit::record`] waiting to be appended together, and
    /// the turn at appending them (one batch at a time in this process, on both
    /// databases: the chain's head row takes one writer at a time anyway).
    pub(crate) audit_waiting: std::sync::Arc<group::Waiting<crate::audit::Entry, i64>>,
    pub(crate) audit_turn: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// On SQLite, a shared lock on the file beside the database ([`lock_path`]) for as
    /// long as any clone of this handle lives, so that `admin restore` can tell the
    /// database is in use (SQLite's own locks are not held by idle connections).
    _in_use: Option<std::sync::Arc<std::fs::File>>,
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

/// Queries run on the pool through `&Db`, so a store function can take any executor:
/// `&db` for one statement on a pooled connection, or `&mut *conn` to run several of
/// a page's statements on one connection (each pooled statement costs a connection's
/// return to the pool, which sqlx follows with a round trip of its own).
impl<'c> sqlx::Executor<'c> for &'c Db {
    type Database = sqlx::Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<sqlx::Either<sqlx::any::AnyQueryResult, sqlx::any::AnyRow>>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, sqlx::Any>,
    {
        self.pool.fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, sqlx::Result<Option<sqlx::any::AnyRow>>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, sqlx::Any>,
    {
        self.pool.fetch_optional(query)
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::any::AnyTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<sqlx::any::AnyStatement<'q>>>
    where
        'c: 'e,
    {
        self.pool.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, sqlx::Result<sqlx::Describe<sqlx::Any>>>
    where
        'c: 'e,
    {
        self.pool.describe(sql)
    }
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
            let pool = pool_options(AnyPoolOptions::new())
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
                .await
                .with_context(|| {
                    format!("cannot connect to the PostgreSQL database at {url}; check that it is running and that DIRECTMAIL_DATABASE_URL is right")
                })?;
            let redo = pool_options(AnyPoolOptions::new())
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute(REDOABLE_POSTGRES).await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(options);
            let sessions = pool_options(sqlx::postgres::PgPoolOptions::new())
                .max_connections(8)
                .connect(url.as_str())
                .await
                .with_context(|| format!("cannot connect to the PostgreSQL database at {url}"))?;
            Ok(Db {
                pool,
                backend: Backend::Postgres,
                redo,
                sessions: SessionPool::Postgres(sessions),
                writes: Default::default(),
                inbound_waiting: Default::default(),
                stored_raw: Default::default(),
                outcomes_waiting: Default::default(),
                audit_waiting: Default::default(),
                audit_turn: Default::default(),
                _in_use: None,
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
            let Some(in_use) = lock_in_use(options.get_filename(), false)? else {
                anyhow::bail!(
                    "a restore is replacing the database {}; start again when `directmail admin restore` has finished",
                    options.get_filename().display()
                );
            };
            // Opening through the concrete driver applies WAL mode and creates the file;
            // the `Any` pool then opens the same file with the same pragmas.
            let sessions = pool_options(SqlitePoolOptions::new())
                .max_connections(4)
                .connect_with(options.clone())
                .await
                .with_context(|| format!("cannot open the SQLite database at {url}"))?;
            let any_options = AnyConnectOptions::from_str(&format!(
                "sqlite://{}",
                options.get_filename().display()
            ))?
            .disable_statement_logging();
            // the log is copied back into the database by the task below, not by
            // whichever write happens to cross 1000 pages while it holds the one
            // write turn
            let pragmas = "pragma foreign_keys = on; pragma busy_timeout = 10000;
                           pragma wal_autocheckpoint = 0;";
            let pool = pool_options(AnyPoolOptions::new())
                .max_connections(8)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute(pragmas).await?;
                        Ok(())
                    })
                })
                .connect_with(any_options.clone())
                .await
                .with_context(|| format!("cannot open the SQLite database at {url}"))?;
            // writes hold the one write turn, so few connections
            let redo = pool_options(AnyPoolOptions::new())
                .max_connections(4)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute(pragmas).await?;
                        conn.execute(REDOABLE_SQLITE).await?;
                        Ok(())
                    })
                })
                .connect_lazy_with(any_options);
            let db = Db {
                pool,
                backend: Backend::Sqlite,
                redo,
                sessions: SessionPool::Sqlite(sessions),
                writes: Default::default(),
                inbound_waiting: Default::default(),
                stored_raw: Default::default(),
                outcomes_waiting: Default::default(),
                audit_waiting: Default::default(),
                audit_turn: Default::default(),
                _in_use: Some(std::sync::Arc::new(in_use)),
            };
            spawn_checkpoints(&db);
            Ok(db)
        }
    }

    /// A SQLite file that no portal serves: a backup's copy being made or checked.
    /// One connection in the rollback-journal mode, so that once closed the file is
    /// complete in itself (no `-wal` beside it), and no in-use lock.
    pub async fn open_copy(path: &Path) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Delete)
            .foreign_keys(true)
            .disable_statement_logging();
        let any_options = AnyConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    conn.execute("pragma foreign_keys = on; pragma journal_mode = delete;")
                        .await?;
                    Ok(())
                })
            })
            .connect_with(any_options)
            .await
            .with_context(|| format!("cannot open the SQLite file {}", path.display()))?;
        Ok(Db {
            redo: pool.clone(),
            pool,
            backend: Backend::Sqlite,
            // never used on a copy, so never opened
            sessions: SessionPool::Sqlite(SqlitePoolOptions::new().connect_lazy_with(options)),
            writes: Default::default(),
            inbound_waiting: Default::default(),
            stored_raw: Default::default(),
            outcomes_waiting: Default::default(),
            audit_waiting: Default::default(),
            audit_turn: Default::default(),
            _in_use: None,
        })
    }

    /// Closes every connection and waits until they are closed.
    pub async fn close(&self) {
        self.pool.close().await;
        self.redo.close().await;
        match &self.sessions {
            SessionPool::Sqlite(pool) => pool.close().await,
            SessionPool::Postgres(pool) => pool.close().await,
        }
    }

    /// The newest migration applied to this database (0 when none is).
    pub async fn schema_version(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("select coalesce(max(version), 0) from _sqlx_migrations where success")
            .fetch_one(&self.pool)
            .await
    }

    /// A transaction that writes. On SQLite it takes the write lock as it begins
    /// (`BEGIN IMMEDIATE`, waiting up to the busy timeout like any write): a deferred
    /// transaction that reads and then writes fails at once with SQLITE_BUSY
    /// ("database is locked", no waiting) when any other connection wrote in between,
    /// be it the session store, another task, or `directmail admin` run beside the
    /// server. Every transaction of the product begins here or in
    /// [`Db::begin_redoable`].
    pub async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.begin_on(&self.pool).await
    }

    async fn begin_on(
        &self,
        pool: &AnyPool,
    ) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => pool.begin_with("begin immediate").await,
            Backend::Postgres => pool.begin().await,
        }
    }

    /// Connections for the workers' writes whose effects are redone when they are
    /// lost, which commit without waiting for the disk: SQLite's `synchronous =
    /// NORMAL` (in WAL mode), PostgreSQL's `synchronous_commit = off`. This is the one
    /// place that decides which writes may be lost on a power failure.
    ///
    /// What such a commit guarantees: it survives the portal's crash (SIGKILL) like
    /// any other, since the database, or the operating system, has it; a power
    /// failure (or a crash of the PostgreSQL server) can lose the last ones
    /// committed before the next sync of the log, never part of one, and never one
    /// older than a commit that waited for the disk: the log is written in commit
    /// order, so any ordinary commit (SQLite's `synchronous = FULL`, PostgreSQL's
    /// default), or SQLite's checkpoint every second, makes every commit before it
    /// durable.
    ///
    /// Who may use it: a worker recording work it claimed under a lease
    /// ([`crate::leases`]) — processing and delivering a received message with its
    /// notifications, claims, renewals, a queue entry's outcome — because losing that
    /// write only puts the work back where the lease left it: it is claimed again
    /// when the lease lapses and redone. What can repeat then is what left the
    /// building before the loss: a queue entry already handed to the next HISP (a
    /// message or notification sent twice, at least once as after a crash), or a
    /// received message a user already saw, filed again. Anything acknowledged to the
    /// outside must not use it: the store behind an SMTP 250, an API 202, a form's
    /// success page, an admin command, the audit log; they use [`Db::pool`] and
    /// [`Db::begin`], whose commits wait for the disk (and so also secure every
    /// redoable commit before them). Workers whose own claim is an ordinary commit
    /// (alerts, webhooks) never act on a delivery that could still be lost.
    pub fn redoable(&self) -> &AnyPool {
        &self.redo
    }

    /// [`Db::begin`] on a [`Db::redoable`] connection.
    pub async fn begin_redoable(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Any>> {
        self.begin_on(&self.redo).await
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
        self.migrator()
            .run(&self.pool)
            .await
            .context("the database schema could not be brought up to date")?;
        Ok(())
    }

    fn migrator(&self) -> &'static Migrator {
        migrator(self.backend)
    }

    /// True when the database answers and every migration this build knows is applied.
    pub async fn is_ready(&self) -> bool {
        let want = self
            .migrator()
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

/// How every pool hands out connections: one that waited idle for a while is checked
/// first (a PostgreSQL server restarted meanwhile is found there, not by the
/// request), one in steady use is not. sqlx's default checks every connection at
/// every acquire, a round trip per query (a third of the round trips of a mailbox
/// page) that only finds a broken connection a moment before the query would.
fn pool_options<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
) -> sqlx::pool::PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= Duration::from_secs(30) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    }
}

/// The newest migration this build knows for `backend`.
pub fn known_schema_version(backend: Backend) -> i64 {
    migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The file whose lock says a SQLite database is in use: `<database>-lock`.
fn lock_path(database: &Path) -> std::path::PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-lock");
    std::path::PathBuf::from(name)
}

/// Locks the in-use file of a SQLite database: shared for a portal or admin command
/// on it, exclusive for `admin restore`. `None` when a conflicting lock is held.
pub fn lock_in_use(database: &Path, exclusive: bool) -> anyhow::Result<Option<std::fs::File>> {
    let path = lock_path(database);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Copies SQLite's write-ahead log back into the database every second, beside the
/// writers (a passive checkpoint waits for no one and makes no one wait), for as long
/// as a handle on the database lives.
fn spawn_checkpoints(db: &Db) {
    let alive = std::sync::Arc::downgrade(&db.writes);
    let pool = db.pool.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 {
                break;
            }
            if let Err(e) = sqlx::query("pragma wal_checkpoint(passive)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "copying the write-ahead log into the database failed");
            }
        }
    });
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data directory {}; choose a writable one with DIRECTMAIL_DATA_DIR",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_redoable_connections_commit_without_waiting_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::connect(&DatabaseUrl(format!("sqlite://{}", path.display())))
            .await
            .unwrap();
        let synchronous = async |pool: &AnyPool| -> i64 {
            sqlx::query_scalar("pragma synchronous")
                .fetch_one(pool)
                .await
                .unwrap()
        };
        // FULL is 2, NORMAL 1 (WAL mode keeps NORMAL consistent after a power failure)
        assert_eq!(synchronous(&db.pool).await, 2);
        assert_eq!(synchronous(db.redoable()).await, 1);
        let mode: String = sqlx::query_scalar("pragma journal_mode")
            .fetch_one(db.redoable())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let mut tx = db.begin_redoable().await.unwrap();
        sqlx::query("create table t (x integer)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let n: i64 = sqlx::query_scalar("select count(*) from t")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn what_is_written_is_copied_from_the_log_into_the_database_file_by_the_checkpoint_task()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::connect(&DatabaseUrl(format!("sqlite://{}", path.display())))
            .await
            .unwrap();
        sqlx::query("create table blobs (b blob)")
            .execute(&db.pool)
            .await
            .unwrap();
        // 8 MB in the log: more than the 1000 pages at which a write would copy it
        for _ in 0..16 {
            sqlx::query("insert into blobs (b) values ($1)")
                .bind(vec![7u8; 512 * 1024])
                .execute(&db.pool)
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&path).unwrap().len() < 8 * 1024 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the log was not copied into the database"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
