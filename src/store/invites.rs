//! Single-use links for completing an invitation or resetting a password.
//!
//! Only the SHA-256 of a link's token is stored; the token is shown once.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// How long an invite or reset link stays valid.
pub const VALID_SECONDS: i64 = 72 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Invite,
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Invite => "invite",
            Purpose::Reset => "reset",
        }
    }
}

/// Creates a link for `user_id`, replacing any unused one of the same purpose.
pub async fn create(
    conn: &mut AnyConnection,
    user_id: i64,
    purpose: Purpose,
    token_hash: &str,
    created_by: Option<i64>,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query("delete from invites where user_id = $1 and used_at is null")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into invites (user_id, purpose, token_hash, expires_at, created_by, created_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user_id)
    .bind(purpose.as_str())
    .bind(token_hash)
    .bind(now + VALID_SECONDS)
    .bind(created_by)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a link's token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Valid { user_id: i64, purpose: Purpose },
    Expired,
    Used,
    Unknown,
}

pub async fn lookup(db: &Db, token_hash: &str, now: i64) -> sqlx::Result<Lookup> {
    let row = sqlx::query(
        "select user_id, purpose, expires_at, used_at from invites where token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Lookup::Unknown);
    };
    let used_at: Option<i64> = row.try_get("used_at")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let purpose: String = row.try_get("purpose")?;
    Ok(if used_at.is_some() {
        Lookup::Used
    } else if expires_at <= now {
        Lookup::Expired
    } else {
        Lookup::Valid {
            user_id: row.try_get("user_id")?,
            purpose: if purpose == "reset" {
                Purpose::Reset
            } else {
                Purpose::Invite
            },
        }
    })
}

/// Marks the link used; false if it was used (or expired) in the meantime.
pub async fn consume(conn: &mut AnyConnection, token_hash: &str, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update invites set used_at = $1 where token_hash = $2 and used_at is null and expires_at > $1",
    )
    .bind(now)
    .bind(token_hash)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What the user's open link is for, if one is open.
pub async fn open_purpose(db: &Db, user_id: i64, now: i64) -> sqlx::Result<Option<Purpose>> {
    let purpose: Option<String> = sqlx::query_scalar(
        "select purpose from invites where user_id = $1 and used_at is null and expires_at > $2
         order by id desc limit 1",
    )
    .bind(user_id)
    .bind(now)
    .fetch_optional(&db.pool)
    .await?;
    Ok(purpose.map(|p| {
        if p == "reset" {
            Purpose::Reset
        } else {
            Purpose::Invite
        }
    }))
}

/// When the user's open invite or reset link expires, if one is open.
pub async fn pending_for(db: &Db, user_id: i64, now: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select max(expires_at) from invites where user_id = $1 and used_at is null and expires_at > $2",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(&db.pool)
    .await
}
