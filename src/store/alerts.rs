//! Alerts to ordinary e-mail: each user's alert address and its verification links,
//! and the queue of alert e-mails the worker in [`crate::alerts`] sends.
//!
//! Nothing stored here says anything about a message: a new-mail job names only the
//! mailbox; the worker counts its unread messages when it sends.

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// How long a verification link stays valid.
pub const VERIFY_SECONDS: i64 = 24 * 3600;

/// A user's alert address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertAddress {
    pub user_id: i64,
    pub email: String,
    pub verified_at: Option<i64>,
    pub enabled: bool,
}

impl AlertAddress {
    /// Whether alerts go to this address: turned on, and the address verified.
    pub fn active(&self) -> bool {
        self.enabled && self.verified_at.is_some()
    }
}

pub async fn address(db: &Db, user_id: i64) -> sqlx::Result<Option<AlertAddress>> {
    let row = sqlx::query(
        "select user_id, email, verified_at, enabled from alert_addresses where user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|r| {
        Ok(AlertAddress {
            user_id: r.try_get("user_id")?,
            email: r.try_get("email")?,
            verified_at: r.try_get("verified_at")?,
            enabled: super::flag(r.try_get("enabled")?),
        })
    })
    .transpose()
}

/// Sets the user's alert address, unverified (a change always needs a new check), and
/// forgets the links for any earlier address. Alerts stay on or off as they were; a
/// first address turns them on.
pub async fn set_address(
    conn: &mut AnyConnection,
    user_id: i64,
    email: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into alert_addresses (user_id, email, verified_at, enabled, updated_at)
         values ($1, $2, null, 1, $3)
         on conflict (user_id) do update set email = $2, verified_at = null, updated_at = $3",
    )
    .bind(user_id)
    .bind(email)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("delete from alert_verifications where user_id = $1 and used_at is null")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    // a link to the earlier address that has not gone out yet is not sent
    sqlx::query(
        "update alert_jobs set state = 'dropped', sealed_link = '', updated_at = $2
         where user_id = $1 and kind = 'verify' and state = 'pending'",
    )
    .bind(user_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Turns alerts on or off; false when the user has no alert address.
pub async fn set_enabled(
    conn: &mut AnyConnection,
    user_id: i64,
    enabled: bool,
    now: i64,
) -> sqlx::Result<bool> {
    let done =
        sqlx::query("update alert_addresses set enabled = $1, updated_at = $2 where user_id = $3")
            .bind(i64::from(enabled))
            .bind(now)
            .bind(user_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a verification link for `email`.
pub async fn create_verification(
    conn: &mut AnyConnection,
    user_id: i64,
    email: &str,
    token_hash: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into alert_verifications (token_hash, user_id, email, expires_at, created_at)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(user_id)
    .bind(email)
    .bind(now + VERIFY_SECONDS)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a verification link's token resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Valid {
        user_id: i64,
        email: String,
    },
    Expired,
    Used,
    /// Unknown, or for an address the user has since replaced.
    Unknown,
}

pub async fn lookup_verification(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> sqlx::Result<Verification> {
    let row = sqlx::query(
        "select v.user_id, v.email, v.expires_at, v.used_at, a.email as current
         from alert_verifications v left join alert_addresses a on a.user_id = v.user_id
         where v.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Ok(Verification::Unknown);
    };
    let email: String = row.try_get("email")?;
    let current: Option<String> = row.try_get("current")?;
    let used_at: Option<i64> = row.try_get("used_at")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    Ok(if used_at.is_some() {
        Verification::Used
    } else if current.as_deref() != Some(email.as_str()) {
        Verification::Unknown
    } else if expires_at <= now {
        Verification::Expired
    } else {
        Verification::Valid {
            user_id: row.try_get("user_id")?,
            email,
        }
    })
}

/// Uses the link and marks its address verified; false when the link was used, has
/// expired or no longer matches the address in the meantime.
pub async fn verify(conn: &mut AnyConnection, token_hash: &str, now: i64) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "update alert_verifications set used_at = $1
         where token_hash = $2 and used_at is null and expires_at > $1
         returning user_id, email",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let user_id: i64 = row.try_get("user_id")?;
    let email: String = row.try_get("email")?;
    let done = sqlx::query(
        "update alert_addresses set verified_at = $1, updated_at = $1
         where user_id = $2 and email = $3",
    )
    .bind(now)
    .bind(user_id)
    .bind(&email)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a new-mail alert may name the sender's organization (an organization's
/// setting, off by default).
pub async fn names_sender(db: &Db, org_id: i64) -> sqlx::Result<bool> {
    let v: Option<i64> =
        sqlx::query_scalar("select alerts_name_sender from organizations where id = $1")
            .bind(org_id)
            .fetch_optional(&db.pool)
            .await?;
    Ok(v.is_some_and(super::flag))
}

pub async fn set_names_sender(
    conn: &mut AnyConnection,
    org_id: i64,
    allowed: bool,
) -> sqlx::Result<()> {
    sqlx::query("update organizations set alerts_name_sender = $1 where id = $2")
        .bind(i64::from(allowed))
        .bind(org_id)
        .execute(conn)
        .await?;
    Ok(())
}

// ---------- the queue ----------

/// Queues a new-mail alert for every user of `mailbox_id` whose alerts are on, unless
/// one is already waiting (the waiting one will count this message too). Called in the
/// transaction that delivers the message: a few cheap rows, no network.
pub async fn new_mail(conn: &mut AnyConnection, mailbox_id: i64, now: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "insert into alert_jobs (kind, user_id, mailbox_id, next_attempt_at, created_at, updated_at)
         select 'new-mail', a.user_id, m.mailbox_id, $2, $2, $2
         from mailbox_members m join alert_addresses a on a.user_id = m.user_id
         where m.mailbox_id = $1 and a.enabled = 1 and a.verified_at is not null
         on conflict do nothing",
    )
    .bind(mailbox_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queues an e-mail carrying a link (sealed by the caller) to `to_addr`.
pub async fn queue_link(
    conn: &mut AnyConnection,
    kind: &str,
    user_id: i64,
    to_addr: &str,
    sealed_link: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into alert_jobs (kind, user_id, to_addr, sealed_link, next_attempt_at, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $5, $5)",
    )
    .bind(kind)
    .bind(user_id)
    .bind(to_addr)
    .bind(sealed_link)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A claimed alert job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub user_id: i64,
    pub mailbox_id: Option<i64>,
    pub to_addr: String,
    pub sealed_link: String,
    pub attempts: i64,
    pub created_at: i64,
}

/// Claims the next due job until `lease_until` (another instance skips it meanwhile;
/// a worker that dies leaves it to be claimed again when the lease ends). A claimed
/// job is `sending`, so that mail arriving meanwhile queues a new alert rather than
/// joining one whose count may already be taken.
pub async fn claim_next(db: &Db, now: i64, lease_until: i64) -> sqlx::Result<Option<Job>> {
    let Some(id) = super::claim_due(db, "alert_jobs", now, lease_until).await? else {
        return Ok(None);
    };
    let r = sqlx::query(
        "select id, kind, user_id, mailbox_id, to_addr, sealed_link, attempts, created_at
         from alert_jobs where id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await?;
    Ok(Some(Job {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        user_id: r.try_get("user_id")?,
        mailbox_id: r.try_get("mailbox_id")?,
        to_addr: r.try_get("to_addr")?,
        sealed_link: r.try_get("sealed_link")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
    }))
}

/// When `user_id` was last alerted about `mailbox_id`.
pub async fn last_alerted(db: &Db, user_id: i64, mailbox_id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select max(updated_at) from alert_jobs
         where user_id = $1 and mailbox_id = $2 and kind = 'new-mail' and state = 'sent'",
    )
    .bind(user_id)
    .bind(mailbox_id)
    .fetch_one(&db.pool)
    .await
}

/// Unread messages in the mailbox's inbox: the N of "N new secure messages".
pub async fn unread(db: &Db, mailbox_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select coalesce(max(n), 0) from unread_counts where mailbox_id = $1 and folder = 'inbox'",
    )
    .bind(mailbox_id)
    .fetch_one(&db.pool)
    .await
}

/// The sending addresses and signer subjects of the unread messages in the inbox, for
/// an organization that lets alerts name the sender's organization. The caller keeps
/// only organization names from them.
pub async fn unread_senders(
    db: &Db,
    mailbox_id: i64,
) -> sqlx::Result<Vec<(String, Option<String>)>> {
    let rows = sqlx::query(
        "select distinct from_addr, signer_subject from messages
         where mailbox_id = $1 and folder = 'inbox' and is_read = 0 limit 20",
    )
    .bind(mailbox_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("from_addr")?, r.try_get("signer_subject")?)))
        .collect()
}

/// The job is done.
pub async fn mark_sent(db: &Db, id: i64, now: i64) -> sqlx::Result<()> {
    finish(db, id, "sent", "", now).await
}

/// Nothing to send any more (see `alert_jobs.state`).
pub async fn mark_dropped(db: &Db, id: i64, why: &str, now: i64) -> sqlx::Result<()> {
    finish(db, id, "dropped", why, now).await
}

/// Given up: the operator sees why.
pub async fn mark_failed(db: &Db, id: i64, reason: &str, now: i64) -> sqlx::Result<()> {
    finish(db, id, "failed", reason, now).await
}

async fn finish(db: &Db, id: i64, state: &str, reason: &str, now: i64) -> sqlx::Result<()> {
    let _turn = db.write_turn().await;
    sqlx::query(
        "update alert_jobs set state = $1, last_error = $2, sealed_link = '', updated_at = $3,
                attempts = attempts + $4
         where id = $5",
    )
    .bind(state)
    .bind(reason)
    .bind(now)
    .bind(i64::from(state != "dropped"))
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A failed attempt to be tried again at `at`.
pub async fn retry_later(db: &Db, id: i64, reason: &str, at: i64, now: i64) -> sqlx::Result<()> {
    let _turn = db.write_turn().await;
    super::retry_due(db, "alert_jobs", id, reason, at, now).await
}

/// Waits until `at` without counting an attempt (the interval since the last alert).
/// Back to `pending`: if another alert for the same mailbox was queued meanwhile, this
/// one is dropped in favour of it.
pub async fn postpone(db: &Db, id: i64, at: i64, now: i64) -> sqlx::Result<()> {
    let _turn = db.write_turn().await;
    let waiting = sqlx::query(
        "update alert_jobs set state = 'dropped', updated_at = $2
         where id = $1 and exists (select 1 from alert_jobs o
                                   where o.user_id = alert_jobs.user_id
                                     and o.mailbox_id = alert_jobs.mailbox_id
                                     and o.kind = 'new-mail' and o.state = 'pending')",
    )
    .bind(id)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if waiting.rows_affected() == 1 {
        return Ok(());
    }
    sqlx::query(
        "update alert_jobs set state = 'pending', next_attempt_at = $1, updated_at = $2
         where id = $3 and state = 'sending'",
    )
    .bind(at)
    .bind(now)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Forgets finished jobs older than `before` (the interval only looks back minutes).
pub async fn forget_finished(db: &Db, before: i64) -> sqlx::Result<u64> {
    let _turn = db.write_turn().await;
    let done = sqlx::query(
        "delete from alert_jobs where state in ('sent', 'failed', 'dropped') and updated_at < $1",
    )
    .bind(before)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// An alert job as the operator sees it: no address, no link.
#[derive(Debug, Clone)]
pub struct TroubleRow {
    pub id: i64,
    pub kind: String,
    pub user_email: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: String,
    pub updated_at: i64,
}

/// Alert e-mails that failed at least once: still being retried, or given up.
pub async fn troubles(db: &Db, limit: i64) -> sqlx::Result<Vec<TroubleRow>> {
    let rows = sqlx::query(
        "select j.id, j.kind, u.email, j.state, j.attempts, j.next_attempt_at, j.last_error, j.updated_at
         from alert_jobs j join users u on u.id = j.user_id
         where (j.state in ('pending', 'sending') and j.attempts > 0) or j.state = 'failed'
         order by j.id desc limit $1",
    )
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TroubleRow {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                user_email: r.try_get("email")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
                last_error: r.try_get("last_error")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

/// (waiting, failing or given up) for the operator's home page.
pub async fn counts(db: &Db) -> sqlx::Result<(i64, i64)> {
    let row = sqlx::query(
        "select coalesce(sum(case when state in ('pending', 'sending') then 1 else 0 end), 0) as waiting,
                coalesce(sum(case when (state in ('pending', 'sending') and attempts > 0) or state = 'failed'
                                  then 1 else 0 end), 0) as troubled
         from alert_jobs",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok((row.try_get("waiting")?, row.try_get("troubled")?))
}
