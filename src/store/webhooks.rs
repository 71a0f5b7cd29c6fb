//! Webhooks for EHRs: the URLs API tokens registered, and the queue of events the
//! worker in [`crate::webhooks`] posts to them.
//!
//! An event row names ids and a status, never content: what the receiver gets is
//! built from these columns alone (`crate::webhooks::event_json`).

use sqlx::{AnyConnection, Row as _};

use crate::db::Db;

/// Webhooks one token may register.
pub const PER_TOKEN: i64 = 5;

/// A registered webhook (its secret stays sealed).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: i64,
    pub token_id: i64,
    pub user_id: i64,
    pub url: String,
    pub sealed_secret: String,
    pub created_at: i64,
}

fn webhook(r: &sqlx::any::AnyRow) -> sqlx::Result<Webhook> {
    Ok(Webhook {
        id: r.try_get("id")?,
        token_id: r.try_get("token_id")?,
        user_id: r.try_get("user_id")?,
        url: r.try_get("url")?,
        sealed_secret: r.try_get("sealed_secret")?,
        created_at: r.try_get("created_at")?,
    })
}

const COLUMNS: &str = "id, token_id, user_id, url, sealed_secret, created_at";

/// Registers `url` for the token; `None` when the token already has [`PER_TOKEN`].
pub async fn create(
    conn: &mut AnyConnection,
    token_id: i64,
    user_id: i64,
    url: &str,
    sealed_secret: &str,
    now: i64,
) -> sqlx::Result<Option<i64>> {
    let count: i64 = sqlx::query_scalar("select count(*) from webhooks where token_id = $1")
        .bind(token_id)
        .fetch_one(&mut *conn)
        .await?;
    if count >= PER_TOKEN {
        return Ok(None);
    }
    sqlx::query_scalar(
        "insert into webhooks (token_id, user_id, url, sealed_secret, created_at)
         values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(token_id)
    .bind(user_id)
    .bind(url)
    .bind(sealed_secret)
    .bind(now)
    .fetch_one(conn)
    .await
    .map(Some)
}

/// The token's webhooks, oldest first.
pub async fn of_token(db: &Db, token_id: i64) -> sqlx::Result<Vec<Webhook>> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from webhooks where token_id = $1 order by id"
    ))
    .bind(token_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(webhook).collect()
}

pub async fn get(db: &Db, id: i64) -> sqlx::Result<Option<Webhook>> {
    let row = sqlx::query(&format!("select {COLUMNS} from webhooks where id = $1"))
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(webhook).transpose()
}

/// Deletes one of `user_id`'s webhooks and its deliveries, when `token_id` is given
/// only one that token registered; false when there is no such webhook.
pub async fn delete(
    conn: &mut AnyConnection,
    user_id: i64,
    token_id: Option<i64>,
    id: i64,
) -> sqlx::Result<bool> {
    let owned: Option<i64> =
        sqlx::query_scalar("select token_id from webhooks where id = $1 and user_id = $2")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let owned = owned.filter(|t| token_id.is_none_or(|wanted| wanted == *t));
    if owned.is_none() {
        return Ok(false);
    }
    sqlx::query("delete from webhook_deliveries where webhook_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("delete from webhooks where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(true)
}

/// The webhooks that get events of the mailbox `mailbox` (an SQL expression; its
/// id is `mm.mailbox_id`), with `$2` the time now: their owner is a member of it and
/// their token still works (not revoked, not expired, not ended with the owner's
/// sessions), the owner's account not disabled.
fn live_for(mailbox: &str) -> String {
    format!(
        "from webhooks w
         join api_tokens t on t.id = w.token_id
         join users u on u.id = w.user_id
         join mailbox_members mm on mm.user_id = w.user_id
         where mm.mailbox_id = {mailbox} and t.revoked_at is null
           and t.session_epoch = u.session_epoch and t.expires_at > $2 and u.disabled = 0"
    )
}

/// Queues a `message.received` event for the message just filed in `mailbox_id`'s
/// Inbox (from received message `inbound_id`), in the transaction that delivers it:
/// one cheap insert, no network. Returns how many were queued.
pub async fn message_received(
    conn: &mut AnyConnection,
    mailbox_id: i64,
    inbound_id: i64,
    now: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(&format!(
        "insert into webhook_deliveries (webhook_id, event_type, message_id, mailbox_id,
                                         occurred_at, next_attempt_at, updated_at)
         select w.id, 'message.received',
                (select id from messages where mailbox_id = $1 and inbound_id = $3), $1, $2, $2, $2
         {}",
        live_for("$1")
    ))
    .bind(mailbox_id)
    .bind(now)
    .bind(inbound_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queues a `message.status` event for a recipient of outbound message
/// `outbound_id` whose status moved to `status`, in the transaction that moves it.
/// Only messages written from a mailbox (not notifications) have events. One
/// statement, as it runs for every status change.
pub async fn status_changed(
    conn: &mut AnyConnection,
    outbound_id: i64,
    status: &str,
    now: i64,
) -> sqlx::Result<u64> {
    let done = sqlx::query(&format!(
        "insert into webhook_deliveries (webhook_id, event_type, message_id, outbound_id, mailbox_id,
                                         status, occurred_at, next_attempt_at, updated_at)
         select w.id, 'message.status',
                (select min(id) from messages where outbound_id = $1), $1, mm.mailbox_id, $3, $2, $2, $2
         {}",
        live_for("(select mailbox_id from outbound_messages where id = $1 and kind = 'message')")
    ))
    .bind(outbound_id)
    .bind(now)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery as the worker sends it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_type: String,
    pub message_id: Option<i64>,
    pub outbound_id: Option<i64>,
    pub mailbox: String,
    pub status: String,
    pub occurred_at: i64,
    pub attempts: i64,
}

/// Claims the next due delivery until `lease_until` (see [`super::claim_due`]).
pub async fn claim_next(db: &Db, now: i64, lease_until: i64) -> sqlx::Result<Option<Delivery>> {
    let Some(id) = super::claim_due(db, "webhook_deliveries", now, lease_until).await? else {
        return Ok(None);
    };
    let r = sqlx::query(
        "select d.id, d.webhook_id, d.event_type, d.message_id, d.outbound_id, m.address,
                d.status, d.occurred_at, d.attempts
         from webhook_deliveries d join mailboxes m on m.id = d.mailbox_id
         where d.id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await?;
    Ok(Some(Delivery {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_type: r.try_get("event_type")?,
        message_id: r.try_get("message_id")?,
        outbound_id: r.try_get("outbound_id")?,
        mailbox: r.try_get("address")?,
        status: r.try_get("status")?,
        occurred_at: r.try_get("occurred_at")?,
        attempts: r.try_get("attempts")?,
    }))
}

/// The receiver took it (a 2xx answer).
pub async fn mark_delivered(db: &Db, id: i64, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "update webhook_deliveries set state = 'delivered', attempts = attempts + 1,
                last_error = '', delivered_at = $1, updated_at = $1
         where id = $2 and state = 'sending'",
    )
    .bind(now)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// A failed attempt to be tried again at `at`.
pub async fn retry_later(db: &Db, id: i64, why: &str, at: i64, now: i64) -> sqlx::Result<()> {
    super::retry_due(db, "webhook_deliveries", id, why, at, now).await
}

/// Given up; `attempted` says whether a request was made (counted as an attempt).
pub async fn mark_failed(
    db: &Db,
    id: i64,
    why: &str,
    attempted: bool,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update webhook_deliveries set state = 'failed', attempts = attempts + $1,
                last_error = $2, updated_at = $3
         where id = $4 and state = 'sending'",
    )
    .bind(i64::from(attempted))
    .bind(why)
    .bind(now)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Sends a delivered or given-up delivery of one of `user_id`'s webhooks again, with
/// a fresh set of attempts; false when the user has no such delivery, or it is still
/// in the queue.
pub async fn replay(
    conn: &mut AnyConnection,
    user_id: i64,
    id: i64,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update webhook_deliveries set state = 'pending', attempts = 0, last_error = '',
                next_attempt_at = $1, delivered_at = null, updated_at = $1
         where id = $2 and state in ('delivered', 'failed')
           and webhook_id in (select id from webhooks where user_id = $3)",
    )
    .bind(now)
    .bind(id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whose delivery this is (for refusing another user's), if it exists.
pub async fn owner_of_delivery(db: &Db, id: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "select w.user_id from webhook_deliveries d join webhooks w on w.id = d.webhook_id
         where d.id = $1",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await
}

/// Forgets finished deliveries last touched before `before`.
pub async fn forget_finished(db: &Db, before: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "delete from webhook_deliveries where state in ('delivered', 'failed') and updated_at < $1",
    )
    .bind(before)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// A webhook as its owner's account page lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: i64,
    pub url: String,
    pub token_name: String,
    pub created_at: i64,
}

pub async fn of_user(db: &Db, user_id: i64) -> sqlx::Result<Vec<Listed>> {
    let rows = sqlx::query(
        "select w.id, w.url, t.name, w.created_at from webhooks w
         join api_tokens t on t.id = w.token_id where w.user_id = $1 order by w.id",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Listed {
                id: r.try_get("id")?,
                url: r.try_get("url")?,
                token_name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// A delivery as its owner's account page lists it.
#[derive(Debug, Clone)]
pub struct Recent {
    pub id: i64,
    pub webhook_id: i64,
    pub event_type: String,
    pub message_id: Option<i64>,
    pub status: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
    pub occurred_at: i64,
    pub next_attempt_at: i64,
}

/// The user's deliveries, newest first: at most `limit`, those with an id below
/// `before` when it is given (keyset paging).
pub async fn recent(
    db: &Db,
    user_id: i64,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Recent>> {
    let rows = sqlx::query(
        "select d.id, d.webhook_id, d.event_type, d.message_id, d.status, d.state, d.attempts,
                d.last_error, d.occurred_at, d.next_attempt_at
         from webhook_deliveries d join webhooks w on w.id = d.webhook_id
         where w.user_id = $1 and ($2 is null or d.id < $2) order by d.id desc limit $3",
    )
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Recent {
                id: r.try_get("id")?,
                webhook_id: r.try_get("webhook_id")?,
                event_type: r.try_get("event_type")?,
                message_id: r.try_get("message_id")?,
                status: r.try_get("status")?,
                state: r.try_get("state")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                occurred_at: r.try_get("occurred_at")?,
                next_attempt_at: r.try_get("next_attempt_at")?,
            })
        })
        .collect()
}
