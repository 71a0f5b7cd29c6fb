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
/// failure started a block.
pub async fn record_failure(
    conn: &mut AnyConnection,
    ip: &str,
    now: i64,
    window_seconds: i64,
    threshold: i64,
    block_seconds: i64,
) -> sqlx::Result<bool> {
    let row = sqlx::query("select failures, window_start from login_throttle where ip = $1")
        .bind(ip)
        .fetch_optional(&mut *conn)
        .await?;
    let failures = match row {
        Some(row) => {
            let start: i64 = row.try_get("window_start")?;
            let failures: i64 = row.try_get("failures")?;
            let (failures, start) = if now - start > window_seconds {
                (1, now)
            } else {
                (failures + 1, start)
            };
            sqlx::query("update login_throttle set failures = $1, window_start = $2 where ip = $3")
                .bind(failures)
                .bind(start)
                .bind(ip)
                .execute(&mut *conn)
                .await?;
            failures
        }
        None => {
            sqlx::query("insert into login_throttle (ip, failures, window_start) values ($1, 1, $2) on conflict (ip) do nothing")
                .bind(ip)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            1
        }
    };
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
