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
use crate::db::{Db, SessionPool};

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

/// The tables and columns of tower-sessions-sqlx-store 0.15 (pinned in Cargo.toml),
/// whose `load` this replaces; a test signs in and out through it on both databases.
const UNENDED: &str = "where id = $1 and expiry_date > $2
      and not exists (select 1 from ended_sessions e where e.id = $3)";

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
        // The inner store's own `load`, with the ended check in the same statement:
        // every page loads the session, and one round trip is cheaper than two.
        let now = time::OffsetDateTime::now_utc();
        let (id, ended) = (id.to_string(), key(id));
        let data: Option<Vec<u8>> = match &self.db.sessions {
            SessionPool::Sqlite(pool) => {
                sqlx::query_scalar(&format!("select data from tower_sessions {UNENDED}"))
                    .bind(id)
                    .bind(now)
                    .bind(ended)
                    .fetch_optional(pool)
                    .await
            }
            SessionPool::Postgres(pool) => {
                sqlx::query_scalar(&format!(
                    r#"select data from "tower_sessions"."session" {UNENDED}"#
                ))
                .bind(id)
                .bind(now)
                .bind(ended)
                .fetch_optional(pool)
                .await
            }
        }
        .map_err(backend)?;
        data.map(|d| {
            rmp_serde::from_slice(&d).map_err(|e| session_store::Error::Decode(e.to_string()))
        })
        .transpose()
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
