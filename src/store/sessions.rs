//! The session store: tower-sessions' SQLite or PostgreSQL store, wrapped so that a
//! session once ended stays ended.
//!
//! tower-sessions saves a changed session at the end of each request with an upsert.
//! A request that loaded the session before sign-out and finishes after it (a slow
//! page, a poll) would write the record back and sign the user in again. So deleting
//! a session (sign-out, the id replaced at sign-in) lists its id as ended, and the
//! store neither loads nor saves an ended id. Ids are kept as SHA-256 hashes.

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::auth;
use crate::clock::Clock;
use crate::db::Db;

/// A session store that remembers which ids were ended.
#[derive(Debug, Clone)]
pub struct EndingStore<S> {
    inner: S,
    db: Db,
    clock: Clock,
    /// How long an ended id is remembered: the longest a session record can live.
    remember_seconds: i64,
}

impl<S> EndingStore<S> {
    pub fn new(inner: S, db: Db, clock: Clock, remember_seconds: i64) -> Self {
        EndingStore {
            inner,
            db,
            clock,
            remember_seconds,
        }
    }

    async fn is_ended(&self, id: &Id) -> session_store::Result<bool> {
        is_ended(&self.db, id).await.map_err(backend)
    }
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn key(id: &Id) -> String {
    auth::token_hash(&id.to_string())
}

/// Whether the session with this id was ended.
pub async fn is_ended(db: &Db, id: &Id) -> sqlx::Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("select 1 from ended_sessions where id = $1")
        .bind(key(id))
        .fetch_optional(&db.pool)
        .await?;
    Ok(found.is_some())
}

/// Forgets ended ids whose sessions would have expired by now anyway.
pub async fn forget_ended(db: &Db, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query("delete from ended_sessions where expires_at < $1")
        .bind(now)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected())
}

#[async_trait]
impl<S: SessionStore + Clone> SessionStore for EndingStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.inner.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // A late save of an ended session is dropped. (Should it slip in between this
        // check and the sign-out, `load` still refuses it.)
        if self.is_ended(&record.id).await? {
            return Ok(());
        }
        self.inner.save(record).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        if self.is_ended(id).await? {
            return Ok(None);
        }
        self.inner.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        // listed first, so a save racing with this delete cannot bring it back
        sqlx::query(
            "insert into ended_sessions (id, expires_at) values ($1, $2) on conflict (id) do nothing",
        )
        .bind(key(id))
        .bind(self.clock.now() + self.remember_seconds)
        .execute(&self.db.pool)
        .await
        .map_err(backend)?;
        self.inner.delete(id).await
    }
}
