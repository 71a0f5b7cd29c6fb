//! API tokens: stored as SHA-256 hashes, listed with their last use, revocable.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked: bool,
}

pub async fn create(
    conn: &mut AnyConnection,
    user_id: i64,
    name: &str,
    token_hash: &str,
    now: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into api_tokens (user_id, name, token_hash, created_at) values ($1, $2, $3, $4) returning id",
    )
    .bind(user_id)
    .bind(name)
    .bind(token_hash)
    .bind(now)
    .fetch_one(conn)
    .await
}

pub async fn of_user(db: &Db, user_id: i64) -> sqlx::Result<Vec<Token>> {
    let rows = sqlx::query(
        "select id, name, created_at, last_used_at, revoked_at from api_tokens where user_id = $1 order by id desc",
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
                revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
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

/// The user a live token belongs to; records the use.
pub async fn authenticate(db: &Db, token_hash: &str, now: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "update api_tokens set last_used_at = $1 where token_hash = $2 and revoked_at is null returning user_id",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await
}
