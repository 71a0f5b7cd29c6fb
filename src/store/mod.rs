//! Reading and writing the portal's records: organizations, domains, users,
//! mailboxes, single-use links, sessions and sign-in throttling.
//!
//! Functions that change something take a connection (usually a transaction), so the
//! caller commits the change together with its audit entry.

pub mod alerts;
pub mod bundles;
pub mod directory;
pub mod disclosures;
pub mod documents;
pub mod drafts;
pub mod figures;
pub mod inbound;
pub mod invites;
pub mod mailboxes;
pub mod messages;
pub mod opt_outs;
pub mod orgs;
pub mod outbound;
pub mod pki;
pub mod records;
pub mod reporting;
pub mod requests;
pub mod sessions;
pub mod sso;
pub mod throttle;
pub mod tokens;
pub mod users;
pub mod webhooks;

/// Claims the next due row of a job table (`alert_jobs`, `webhook_deliveries`: rows
/// `pending`, or `sending` under a claim that lapsed, whose `next_attempt_at` has come)
/// for one worker until `lease_until`: its id. Another worker or instance skips it
/// meanwhile; a worker that dies leaves it to be claimed again when the lease ends.
pub(crate) async fn claim_due(
    db: &crate::db::Db,
    table: &'static str,
    now: i64,
    lease_until: i64,
) -> sqlx::Result<Option<i64>> {
    use sqlx::Row as _;
    loop {
        let candidate = sqlx::query(&format!(
            "select id, next_attempt_at from {table}
             where state in ('pending', 'sending') and next_attempt_at <= $1
             order by next_attempt_at, id limit 1"
        ))
        .bind(now)
        .fetch_optional(&db.pool)
        .await?;
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let id: i64 = candidate.try_get("id")?;
        let due: i64 = candidate.try_get("next_attempt_at")?;
        let _turn = db.write_turn().await;
        let claimed = sqlx::query(&format!(
            "update {table} set state = 'sending', next_attempt_at = $1, updated_at = $2
             where id = $3 and state in ('pending', 'sending') and next_attempt_at = $4"
        ))
        .bind(lease_until)
        .bind(now)
        .bind(id)
        .bind(due)
        .execute(&db.pool)
        .await?;
        // another worker took it first: look again
        if claimed.rows_affected() == 1 {
            return Ok(Some(id));
        }
    }
}

/// Puts a claimed row of a job table (`alert_jobs`, `webhook_deliveries`) back to
/// `pending` after a failed attempt, to be tried again at `at`; `why` is kept as its
/// `last_error`. Only a row still `sending` (under this worker's claim) changes.
pub(crate) async fn retry_due(
    db: &crate::db::Db,
    table: &'static str,
    id: i64,
    why: &str,
    at: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "update {table} set state = 'pending', attempts = attempts + 1,
                last_error = $1, next_attempt_at = $2, updated_at = $3
         where id = $4 and state = 'sending'"
    ))
    .bind(why)
    .bind(at)
    .bind(now)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A `1`/`0` column as a bool.
pub(crate) fn flag(v: i64) -> bool {
    v != 0
}

/// Whether an error is a uniqueness violation (a name or address already taken).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                // the Any driver does not always carry the kind through
                || db.message().contains("UNIQUE constraint failed")
                || db.message().contains("duplicate key value")
        }
        _ => false,
    }
}
