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

/// Until when sign-in to an address that has no account is locked, if it is.
/// Failures against unknown addresses are counted like an account's, so a lock does
/// not tell whether the account exists.
pub async fn unknown_locked_until(db: &Db, email: &str, now: i64) -> sqlx::Result<Option<i64>> {
    let until: Option<i64> = sqlx::query_scalar(
        "select locked_until from unknown_signin_failures where email_hash = $1",
    )
    .bind(crate::auth::token_hash(email))
    .fetch_optional(&db.pool)
    .await?;
    Ok(until.filter(|t| *t > now))
}

/// Counts a failed sign-in to an address without an account; locks it until
/// `now + block_seconds` at `threshold` failures in a row, like
/// `users::record_failure` and `users::lock_until` do for an account. Returns whether
/// this failure locked it.
pub async fn record_unknown_failure(
    conn: &mut AnyConnection,
    email: &str,
    now: i64,
    threshold: i64,
    block_seconds: i64,
) -> sqlx::Result<bool> {
    let hash = crate::auth::token_hash(email);
    let failures: i64 = sqlx::query_scalar(
        "insert into unknown_signin_failures (email_hash, failures, last_at) values ($1, 1, $2)
         on conflict (email_hash) do update set
           failures = unknown_signin_failures.failures + 1, last_at = $2
         returning failures",
    )
    .bind(&hash)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if failures >= threshold {
        sqlx::query(
            "update unknown_signin_failures set locked_until = $1, failures = 0 where email_hash = $2",
        )
        .bind(now + block_seconds)
        .bind(&hash)
        .execute(conn)
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// Forgets unknown addresses that are not locked and saw no failure for a day.
pub async fn forget_unknown_failures(db: &Db, now: i64) -> sqlx::Result<u64> {
    let done =
        sqlx::query("delete from unknown_signin_failures where locked_until < $1 and last_at < $2")
            .bind(now)
            .bind(now - 86_400)
            .execute(&db.pool)
            .await?;
    Ok(done.rows_affected())
}

/// A window of refused sign-ins from one address that has closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedWindow {
    pub ip: String,
    pub window_start: i64,
    /// Refusals after the first, which were counted instead of audited.
    pub suppressed: i64,
}

/// Takes the closed refusal windows (of `ip`, or of every address when `None`):
/// they are removed, and returned for their summary entries. Taking is one
/// statement, so two callers never summarise the same window.
pub async fn take_closed_refusal_windows(
    conn: &mut AnyConnection,
    ip: Option<&str>,
    now: i64,
    window_seconds: i64,
) -> sqlx::Result<Vec<ClosedWindow>> {
    let rows = sqlx::query(
        "delete from signin_refusals where window_start <= $1 and ($2 = '' or ip = $2)
         returning ip, window_start, suppressed",
    )
    .bind(now - window_seconds)
    .bind(ip.unwrap_or(""))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ClosedWindow {
                ip: r.try_get("ip")?,
                window_start: r.try_get("window_start")?,
                suppressed: r.try_get("suppressed")?,
            })
        })
        .collect()
}

/// Counts a refused sign-in from `ip` in its open window (opening one at `now` if
/// there is none). Returns true for the first refusal of the window: the one the
/// caller audits in full.
pub async fn count_refusal(conn: &mut AnyConnection, ip: &str, now: i64) -> sqlx::Result<bool> {
    let suppressed: i64 = sqlx::query_scalar(
        "insert into signin_refusals (ip, window_start, suppressed) values ($1, $2, 0)
         on conflict (ip) do update set suppressed = signin_refusals.suppressed + 1
         returning suppressed",
    )
    .bind(ip)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(suppressed == 0)
}
