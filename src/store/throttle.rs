//! Failed sign-ins per source address, to slow password guessing across accounts.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// Until when the address is blocked, if it is.
pub async fn blocked_until(db: &Db, ip: &str, now: i64) -> sqlx::Result<Option<i64>> {
    let until: Option<i64> =
        sqlx::query_scalar("select blocked_until from login_throttle where ip = $1")
            .bind(ip)
            .fetch_optional(&db.pool)
            .await?;
    Ok(until.filter(|t| *t > now))
}

/// Counts a failure in the current window; blocks the address for `block_seconds`
/// once `threshold` failures fall within `window_seconds`. Returns whether this
/// failure started a block. One statement, so concurrent failures all count.
pub async fn record_failure(
    conn: &mut AnyConnection,
    ip: &str,
    now: i64,
    window_seconds: i64,
    threshold: i64,
    block_seconds: i64,
) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "insert into login_throttle (ip, failures, window_start) values ($1, 1, $2)
         on conflict (ip) do update set
           failures = case when $2 - login_throttle.window_start > $3 then 1 else login_throttle.failures + 1 end,
           window_start = case when $2 - login_throttle.window_start > $3 then $2 else login_throttle.window_start end
         returning failures",
    )
    .bind(ip)
    .bind(now)
    .bind(window_seconds)
    .fetch_one(&mut *conn)
    .await?;
    let failures: i64 = row.try_get("failures")?;
    if failures >= threshold {
        sqlx::query("update login_throttle set blocked_until = $1, failures = 0, window_start = $2 where ip = $3")
            .bind(now + block_seconds)
            .bind(now)
            .bind(ip)
            .execute(conn)
            .await?;
        return Ok(true);
    }
    Ok(false)
}
