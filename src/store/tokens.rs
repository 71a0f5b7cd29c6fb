//! API tokens: stored as SHA-256 hashes, listed with their last use, revocable. Each
//! token has an expiry and belongs to its owner's session epoch: whatever ends all of
//! the user's sessions (password change or reset, disabling, "sign out everywhere")
//! ends their tokens too.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// The longest life a token may be given, in days.
pub const MAX_DAYS: i64 = 365;
/// The life a token gets when none is chosen, in days.
pub const DEFAULT_DAYS: i64 = 90;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// The owner's session epoch when the token was made.
    pub session_epoch: i64,
}

/// Where a token stands, for the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Revoked,
    Expired,
    /// Ended with all of the owner's sessions (password, sign out everywhere, …).
    Ended,
}

impl Token {
    pub fn state(&self, user_epoch: i64, now: i64) -> TokenState {
        if self.revoked {
            TokenState::Revoked
        } else if self.session_epoch != user_epoch {
            TokenState::Ended
        } else if self.expires_at.is_none_or(|e| e <= now) {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// A new token for `user_id`, living until `expires_at`, bound to the user's current
/// session epoch (read in the same statement, so a concurrent sign-out-everywhere
/// either ends it or comes after it).
pub async fn create(
    conn: &mut AnyConnection,
    user_id: i64,
    name: &str,
    token_hash: &str,
    now: i64,
    expires_at: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into api_tokens (user_id, name, token_hash, created_at, expires_at, session_epoch)
         select $1, $2, $3, $4, $5, session_epoch from users where id = $1
         returning id",
    )
    .bind(user_id)
    .bind(name)
    .bind(token_hash)
    .bind(now)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

pub async fn of_user(db: &Db, user_id: i64) -> sqlx::Result<Vec<Token>> {
    let rows = sqlx::query(
        "select id, name, created_at, last_used_at, expires_at, revoked_at, session_epoch
         from api_tokens where user_id = $1 order by id desc",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Token {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                last_used_at: r.try_get("last_used_at")?,
                expires_at: r.try_get("expires_at")?,
                revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                session_epoch: r.try_get("session_epoch")?,
            })
        })
        .collect()
}

/// Revokes one of the user's tokens; false when there is no such live token.
pub async fn revoke(
    conn: &mut AnyConnection,
    user_id: i64,
    id: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update api_tokens set revoked_at = $1 where id = $2 and user_id = $3 and revoked_at is null",
    )
    .bind(now)
    .bind(id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What a presented token is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A live token (`token_id`) of this user; its use is recorded.
    Valid { user_id: i64, token_id: i64 },
    /// A real token past its expiry.
    Expired,
    /// Unknown, revoked, or ended with its owner's sessions.
    Refused,
}

/// Checks a token by its hash at `now`; records the use of a valid one.
pub async fn authenticate(db: &Db, token_hash: &str, now: i64) -> sqlx::Result<Check> {
    let row = sqlx::query(
        "select t.id, t.user_id, t.expires_at, t.session_epoch, u.session_epoch as user_epoch
         from api_tokens t join users u on u.id = t.user_id
         where t.token_hash = $1 and t.revoked_at is null",
    )
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Check::Refused);
    };
    let epoch: i64 = row.try_get("session_epoch")?;
    let user_epoch: i64 = row.try_get("user_epoch")?;
    if epoch != user_epoch {
        return Ok(Check::Refused);
    }
    let expires_at: Option<i64> = row.try_get("expires_at")?;
    if expires_at.is_none_or(|e| e <= now) {
        return Ok(Check::Expired);
    }
    let id: i64 = row.try_get("id")?;
    sqlx::query("update api_tokens set last_used_at = $1 where id = $2")
        .bind(now)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(Check::Valid {
        user_id: row.try_get("user_id")?,
        token_id: id,
    })
}
