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
    pub(crate) inbound_waiting: std::sync::Arc<Group<crate::store::inbound::Owned>>,
    /// Audit entries of [`crate::audit::record`] waiting to be appended together.
    pub(crate) audit_waiting: std::sync::Arc<Group<crate::audit::Entry>>,
    /// On SQLite, a shared lock on the file beside the database ([`lock_path`]) for as
    /// long as any clone of this handle lives, so that `admin restore` can tell the
    /// database is in use (SQLite's own locks are not held by idle connections).
    _in_use: Option<std::sync::Arc<std::fs::File>>,
}

/// Writes that wait together are committed together (group commit): whichever of the
/// waiting tasks gets the turn first writes every item waiting by then, in one
/// transaction, so that they pay one commit (on SQLite, one sync of the log) where
/// each alone paid one; each task learns its own item's id. The turn is SQLite's
/// write turn and, for PostgreSQL, this group's own: one batch at a time per process.
pub struct Group<T> {
    waiting: std::sync::Mutex<Vec<(T, Written)>>,
    leader: tokio::sync::Mutex<()>,
}

type Written = tokio::sync::oneshot::Sender<Result<i64, String>>;

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            waiting: Default::default(),
            leader: Default::default(),
        }
    }
}

impl<T> std::fmt::Debug for Group<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").finish_non_exhaustive()
    }
}

impl<T> Group<T> {
    /// Writes `item` with whatever else waits: `write` gets the batch, in the order it
    /// came, and returns one id per item, in the same order.
    #[track_caller]
    pub fn commit<'a>(
        &'a self,
        db: &'a Db,
        item: T,
        write: impl AsyncFnOnce(Vec<T>) -> sqlx::Result<Vec<i64>> + 'a,
    ) -> impl Future<Output = sqlx::Result<i64>> + 'a {
        let at = std::panic::Location::caller();
        let (done, written) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((item, done));
        async move {
            {
                let _turn = db.write_turn_at(at).await;
                let _leader = self.leader.lock().await;
                let batch =
                    std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
                if !batch.is_empty() {
                    let (items, done): (Vec<T>, Vec<Written>) = batch.into_iter().unzip();
                    let ids = write(items).await;
                    for (i, done) in done.into_iter().enumerate() {
                        let _ = done.send(match &ids {
                            Ok(ids) => ids
                                .get(i)
                                .copied()
                                .ok_or_else(|| "a batch was written without this item".into()),
                            Err(e) => Err(e.to_string()),
                        });
                    }
                }
            }
            match written.await {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => Err(sqlx::Error::Protocol(e)),
                Err(_) => Err(sqlx::Error::Protocol(
                    "the task writing this batch stopped before it finished".into(),
                )),
            }
        }
    }
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
            let pool = pool_options(AnyPoolOptions::new())
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| {
                    format!("cannot connect to the PostgreSQL database at {url}; check that it is running and that DIRECTMAIL_DATABASE_URL is right")
                })?;
            let sessions = pool_options(sqlx::postgres::PgPoolOptions::new())
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
                audit_waiting: Default::default(),
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
            let pool = pool_options(AnyPoolOptions::new())
                .max_connections(8)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        // the log is copied back into the database by the task below,
                        // not by whichever write happens to cross 1000 pages while it
                        // holds the one write turn
                        conn.execute(
                            "pragma foreign_keys = on; pragma busy_timeout = 10000;
                             pragma wal_autocheckpoint = 0;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect_with(any_options)
                .await
                .with_context(|| format!("cannot open the SQLite database at {url}"))?;
            let db = Db {
                pool,
                backend: Backend::Sqlite,
                sessions: SessionPool::Sqlite(sessions),
                writes: Default::default(),
                inbound_waiting: Default::default(),
                audit_waiting: Default::default(),
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
            pool,
            backend: Backend::Sqlite,
            // never used on a copy, so never opened
            sessions: SessionPool::Sqlite(SqlitePoolOptions::new().connect_lazy_with(options)),
            writes: Default::default(),
            inbound_waiting: Default::default(),
            audit_waiting: Default::default(),
            _in_use: None,
        })
    }

    /// Closes every connection and waits until they are closed.
    pub async fn close(&self) {
        self.pool.close().await;
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
        self.write_turn_at(std::panic::Location::caller())
    }

    fn write_turn_at(
        &self,
        at: &'static std::panic::Location<'static>,
    ) -> impl Future<Output = Option<WriteTurn>> + Send + 'static {
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
